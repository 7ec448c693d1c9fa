"""`MultiViewDataModule`: multi-view clip shards -> `MultiViewBatch`es for geometry training.

YAML (LightningCLI):

    data:
      class_path: g2vlm.datamodules.multiview.datamodule.MultiViewDataModule
      init_args:
        train_shards: [data/synthetic/synthetic-train-{000000..000099}.tar]
        val_shards: [data/synthetic/synthetic-val-000000.tar]
        image_size: [64, 64]
        size_multiple: 8
        views_min: 2
        views_max: 4
        image_budget: 32

Rank and world size are captured from the trainer in `setup` (never from environment variables); worker ids come
from the DataLoader. Training epochs are `train_batches_per_epoch` batches on every rank (resampled shards,
`with_epoch` semantics); validation visits each clip once. A resumed run draws fresh training streams (the
restart count is saved in the checkpoint and mixed into the seed): statistically equivalent, not a replay.
Images travel as uint8 and become float32 in [0, 1] on the device (`on_after_batch_transfer`), where the
per-clip colour jitter runs too; a LightningModule that overrides `on_after_batch_transfer` itself must call
`batch.with_float_images()` (Lightning then uses the module's hook instead of this one). Depth travels as its
stored uint16 units; `batch.depth_m` and `batch.valid` compute metres and validity wherever the batch is. The
loaders pin their batches only when the trainer runs on a CUDA device.
Samples skipped for bad data are counted per reason in `skipped_counts` (this rank's totals, summed from the
batches in `on_before_batch_transfer`, kept in checkpoints) and logged to the trainer's logger as
`data/skipped/<reason>` whenever they grew, at most once per `log_every_n_steps` steps, and at the end.
"""

from __future__ import annotations

import collections

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from g2vlm.datamodules.augmentation import ClipColorJitter
from g2vlm.datamodules.multiview.batch import MultiViewBatch
from g2vlm.datamodules.multiview.streams import BatchRecipe, TrainClipBatches, ValClipBatches
from g2vlm.datamodules.shards.streams import check_validation_shards, expand_shard_pattern


class MultiViewDataModule(L.LightningDataModule):
    """Multi-view clips from WebDataset shards with budget batching and exact-intrinsics augmentation.

    Args:
        train_shards: one shard pattern per training set (brace '{000..009}' or glob), mixed by train_weights.
        val_shards: validation shard patterns (all concatenated), or None for no validation.
        train_weights: mixing weights of the training sets (default: equal).
        image_size: (H, W) of validation batches; with aspect_ratio_range, the training pixel count.
        aspect_ratio_range: (min, max) W / H drawn log-uniformly per training batch; None keeps image_size.
        size_multiple: training sizes are multiples of this (the encoder's patch size).
        views_min, views_max: views per training clip, drawn per batch.
        view_window: training views lie within +-view_window stored frames of a reference frame (None: anywhere).
        val_views: views per validation clip (default views_max).
        image_budget: images per batch; batch size = image_budget // views.
        train_batches_per_epoch: batches per epoch on every rank.
        num_workers: DataLoader workers per rank (persistent when > 0, so resampling differs across epochs).
        shuffle_buffer: clips held in the training shuffle buffer per worker.
        crop_scale_range: focal-crop factor range (1 = largest crop of the target aspect).
        random_crop: place training crops at random (else centred on the principal point).
        color_jitter: per-clip colour jitter of training batches (brightness/contrast/saturation 0.5, hue 0.1,
            p 0.9), applied on the device in `on_after_batch_transfer`.
        grayscale_probability: per-clip greyscale probability (with color_jitter).
        seed: seed of view sampling, crops and shard resampling (combined with rank, worker and epoch).
    """

    def __init__(
        self,
        train_shards: list[str] | None = None,
        val_shards: list[str] | None = None,
        train_weights: list[float] | None = None,
        image_size: tuple[int, int] = (224, 224),
        aspect_ratio_range: tuple[float, float] | None = None,
        size_multiple: int = 14,
        views_min: int = 2,
        views_max: int = 8,
        view_window: int | None = None,
        val_views: int | None = None,
        image_budget: int = 32,
        train_batches_per_epoch: int = 1000,
        num_workers: int = 2,
        shuffle_buffer: int = 32,
        crop_scale_range: tuple[float, float] = (0.8, 1.0),
        random_crop: bool = True,
        color_jitter: bool = True,
        grayscale_probability: float = 0.05,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.train_shards = train_shards
        self.val_shards = val_shards
        self.train_weights = train_weights
        self.recipe = BatchRecipe(
            image_size=tuple(image_size), aspect_ratio_range=None if aspect_ratio_range is None else tuple(aspect_ratio_range),
            size_multiple=size_multiple, views_min=views_min, views_max=views_max, view_window=view_window,
            val_views=views_max if val_views is None else val_views, image_budget=image_budget,
            crop_scale_range=tuple(crop_scale_range), random_crop=random_crop,
        )
        self.jitter = ClipColorJitter(grayscale_probability=grayscale_probability) if color_jitter else None
        self.train_batches_per_epoch = train_batches_per_epoch
        self.num_workers = num_workers
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.rank, self.world_size = 0, 1
        self.restart = 0  # how many times this run was resumed from a checkpoint (see load_state_dict)
        self._jittered_batches = 0
        self.skipped_counts: collections.Counter[str] = collections.Counter()
        self._skips_logged_at: int | None = None  # global step of the last `data/skipped/*` log
        self._skips_unlogged = False

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size
        if stage in (None, "fit", "validate"):
            check_validation_shards(self.val_shards, self.trainer, self.num_workers, "MultiViewDataModule val_shards")

    def _loader(self, dataset) -> DataLoader:
        return DataLoader(
            dataset, batch_size=None, num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
            prefetch_factor=2 if self.num_workers > 0 else None, pin_memory=self._on_cuda(),
        )

    def _on_cuda(self) -> bool:
        """Whether the trainer runs on a CUDA device (page-locked batches then copy to it faster)."""
        strategy = getattr(self.trainer, "strategy", None)
        return strategy is not None and strategy.root_device.type == "cuda"

    def train_dataset(self) -> TrainClipBatches:
        if not self.train_shards:
            raise ValueError("MultiViewDataModule: train_shards is empty; it needs at least one shard pattern to train")
        return TrainClipBatches(
            [expand_shard_pattern(pattern) for pattern in self.train_shards], self.train_weights, self.recipe,
            self.train_batches_per_epoch, self.rank, self.world_size, self.seed, self.shuffle_buffer, self.restart,
        )

    def val_dataset(self) -> ValClipBatches:
        urls = [url for pattern in self.val_shards or [] for url in expand_shard_pattern(pattern)]
        return ValClipBatches(urls, self.recipe, self.rank, self.world_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset())

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_shards:
            return []
        return self._loader(self.val_dataset())

    def state_dict(self) -> dict:
        """Saved in checkpoints: the restart count and this rank's skip totals."""
        return {"restart": self.restart, "skipped_counts": dict(self.skipped_counts)}

    def load_state_dict(self, state_dict: dict) -> None:
        """On resume, draw new training streams (restart + 1) instead of replaying the first epoch's."""
        self.restart = int(state_dict.get("restart", 0)) + 1
        self.skipped_counts = collections.Counter(state_dict.get("skipped_counts", {}))

    def on_before_batch_transfer(self, batch: MultiViewBatch, dataloader_idx: int) -> MultiViewBatch:
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

    def on_after_batch_transfer(self, batch: MultiViewBatch, dataloader_idx: int) -> MultiViewBatch:
        """On the device: uint8 images -> float32 in [0, 1], then per-clip colour jitter on training batches
        (kornia, one draw per clip). kornia draws its parameters from torch's CPU generator; it is forked and
        seeded by (seed, restart, rank, batch), so the jitter is reproducible, differs across ranks (seeding
        every rank alike would give all ranks the same draws) and leaves the training RNG untouched."""
        batch = batch.with_float_images()
        if self.jitter is not None and self.trainer is not None and self.trainer.training:
            with torch.random.fork_rng(devices=[]):
                seed = np.random.SeedSequence([self.seed, self.restart, self.rank, self._jittered_batches])
                torch.random.default_generator.manual_seed(int(seed.generate_state(1)[0]))
                batch.images = self.jitter.apply_per_clip(batch.images)
            self._jittered_batches += 1
        return batch
