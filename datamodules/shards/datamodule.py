"""`ShardDataModule`: what the shard-reading DataModules share (multi-view clips, QA samples).

- rank and world size from the trainer in `setup` (never from environment variables), and the check that every
  validation (rank, worker) slot has a shard;
- loaders of ready batches (`batch_size=None`), persistent workers, batches pinned only when the trainer runs on a
  CUDA device;
- the restart count (a resumed run draws fresh training streams: the count is saved in the checkpoint and mixed
  into the stream seeds) and this rank's skip totals, both kept in checkpoints;
- skipped samples: each batch carries the skips counted since the previous one (`batch.skipped`, reason -> n);
  they are summed into `skipped_counts` and logged to the trainer's logger as `data/skipped/<reason>` whenever they
  grew, at most once per `log_every_n_steps` steps, and at the end.

A subclass builds its datasets: `train_dataset()` and `val_dataset()`.
"""

from __future__ import annotations

import collections

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from g2vlm.datamodules.shards.streams import check_validation_shards, expand_shard_pattern


class ShardDataModule(L.LightningDataModule):
    """Base of the shard DataModules (module docstring). `val_shards`: validation shard patterns or None;
    `num_workers`: DataLoader workers per rank."""

    def __init__(self, val_shards: list[str] | None, num_workers: int) -> None:
        super().__init__()
        self.val_shards = val_shards
        self.num_workers = num_workers
        self.rank, self.world_size = 0, 1
        self.restart = 0  # how many times this run was resumed from a checkpoint (see load_state_dict)
        self.skipped_counts: collections.Counter[str] = collections.Counter()
        self._skips_logged_at: int | None = None  # global step of the last `data/skipped/*` log
        self._skips_unlogged = False

    def train_dataset(self) -> IterableDataset:
        raise NotImplementedError

    def val_dataset(self) -> IterableDataset:
        raise NotImplementedError

    def val_urls(self) -> list[str]:
        """Every validation shard that `val_shards` names, patterns expanded, in order."""
        return [url for pattern in self.val_shards or [] for url in expand_shard_pattern(pattern)]

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size
        if stage in (None, "fit", "validate"):
            check_validation_shards(self.val_shards, self.trainer, self.num_workers, f"{type(self).__name__} val_shards")

    def _loader(self, dataset) -> DataLoader:
        return DataLoader(
            dataset, batch_size=None, num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
            prefetch_factor=2 if self.num_workers > 0 else None, pin_memory=self._on_cuda(),
        )

    def _on_cuda(self) -> bool:
        """Whether the trainer runs on a CUDA device (page-locked batches then copy to it faster)."""
        strategy = getattr(self.trainer, "strategy", None)
        return strategy is not None and strategy.root_device.type == "cuda"

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset())

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_dataset()) if self.val_shards else []

    def state_dict(self) -> dict:
        """Saved in checkpoints: the restart count and this rank's skip totals."""
        return {"restart": self.restart, "skipped_counts": dict(self.skipped_counts)}

    def load_state_dict(self, state_dict: dict) -> None:
        """On resume, draw new training streams (restart + 1) instead of replaying the first epoch's."""
        self.restart = int(state_dict.get("restart", 0)) + 1
        self.skipped_counts = collections.Counter(state_dict.get("skipped_counts", {}))

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        if batch.skipped:
            self.skipped_counts.update(batch.skipped)
            self._skips_unlogged = True
        self.log_skips()
        return batch

    def log_skips(self, final: bool = False) -> None:
        """This rank's skip totals as `data/skipped/<reason>` when they grew since the last log, at most once per
        `log_every_n_steps` global steps (always when `final`)."""
        trainer = self.trainer
        if not self._skips_unlogged or trainer is None or trainer.logger is None:
            return
        step = trainer.global_step
        if not final and self._skips_logged_at is not None and step - self._skips_logged_at < trainer.log_every_n_steps:
            return
        trainer.logger.log_metrics({f"data/skipped/{reason}": float(count)
                                    for reason, count in sorted(self.skipped_counts.items())}, step=step)
        self._skips_logged_at, self._skips_unlogged = step, False

    def teardown(self, stage: str) -> None:
        self.log_skips(final=True)
