"""MultiViewDataModule under a real 2-process CPU DDP run (gloo) through the `lightning` console script: rank and
world size come from the trainer, training streams are disjoint with equal step counts, validation is exact."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from g2vlm.datamodules.multiview.batch import MultiViewBatch
from g2vlm.datamodules.synthetic.shards import write_synthetic_shards

pytestmark = pytest.mark.slow


class RecordBatches(L.LightningModule):
    """Trains one scalar and writes the keys each rank saw (train and validation) to out_dir/rank{R}.json."""

    def __init__(self, out_dir: str):
        super().__init__()
        self.out_dir = Path(out_dir)
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.train_keys: list[list[str]] = []
        self.val_keys: list[str] = []

    def _loss(self, batch: MultiViewBatch) -> torch.Tensor:
        return ((self.scale * batch.images.mean(dim=2) - batch.depth_m).abs() * batch.valid).mean()

    def training_step(self, batch: MultiViewBatch, batch_idx: int) -> torch.Tensor:
        self.train_keys.append(batch.keys)
        return self._loss(batch)

    def validation_step(self, batch: MultiViewBatch, batch_idx: int) -> None:
        self.val_keys += batch.keys

    def on_fit_end(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {"train": self.train_keys, "val": self.val_keys, "world_size": self.trainer.world_size}
        (self.out_dir / f"rank{self.global_rank}.json").write_text(json.dumps(record))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_ddp_two_ranks_get_disjoint_streams_equal_steps_and_exact_validation(console_script, tmp_path):
    data = tmp_path / "data"
    write_synthetic_shards(data, scenes=16, views=3, height=32, width=32, seed=0, clips_per_shard=2)  # 8 shards
    out = tmp_path / "record"
    config = tmp_path / "ddp_data.yaml"
    config.write_text(f"""
trainer:
  default_root_dir: {tmp_path / "run"}
  accelerator: cpu
  devices: 2
  strategy: ddp
  max_epochs: 1
  num_sanity_val_steps: 0
model:
  class_path: tests.integration.test_data_ddp.RecordBatches
  init_args: {{out_dir: {out}}}
data:
  class_path: g2vlm.datamodules.multiview.datamodule.MultiViewDataModule
  init_args:
    train_shards: ["{data}/synthetic-train-{{000000..000007}}.tar"]
    val_shards: ["{data}/synthetic-train-*.tar"]
    image_size: [32, 32]
    size_multiple: 8
    views_min: 2
    views_max: 3
    image_budget: 6
    train_batches_per_epoch: 5
    num_workers: 2
""")
    result = console_script("lightning", "fit", "--config", str(config), cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    records = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [record["world_size"] for record in records] == [2, 2]
    assert len(records[0]["train"]) == len(records[1]["train"]) == 6  # ceil(5 / 2) per worker x 2 workers
    seen = [{key for keys in record["train"] for key in keys} for record in records]
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    validation = records[0]["val"] + records[1]["val"]
    assert len(validation) == len(set(validation)) == 16
