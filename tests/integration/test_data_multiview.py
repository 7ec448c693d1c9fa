"""MultiViewDataModule end to end on CPU: simulated 2 ranks x 2 DataLoader workers, a Lightning fit over the
typed batches, and the `g2vlm shard synthetic` command."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from g2vlm.datamodules.multiview.batch import MultiViewBatch
from g2vlm.datamodules.multiview.datamodule import MultiViewDataModule
from g2vlm.datamodules.synthetic.shards import render_clip, write_synthetic_shards

pytestmark = pytest.mark.integration

SCENES, CLIPS_PER_SHARD = 18, 2  # 9 shards: an uneven split over 2 ranks x 2 workers


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic_shards(out, scenes=SCENES, views=3, height=32, width=32, seed=0, clips_per_shard=CLIPS_PER_SHARD)
    return out


def datamodule(shards: Path, rank: int, **overrides) -> MultiViewDataModule:
    args = {
        "train_shards": [str(shards / "synthetic-train-{000000..000008}.tar")],
        "val_shards": [str(shards / "synthetic-train-*.tar")],
        "image_size": (32, 32), "size_multiple": 8, "views_min": 2, "views_max": 3, "image_budget": 6,
        "train_batches_per_epoch": 5, "num_workers": 2, "color_jitter": False, "seed": 3,
    }
    args.update(overrides)
    dm = MultiViewDataModule(**args)
    dm.trainer = SimpleNamespace(global_rank=rank, world_size=2, limit_val_batches=1.0)  # what a DDP trainer on that rank reports
    dm.setup("fit")
    return dm


def scene_index(key: str) -> int:
    return int(key.split("__")[1].rsplit("scene", 1)[1])


def test_two_ranks_two_workers_disjoint_streams_equal_steps_exact_validation(shards):
    urls = sorted(str(path) for path in shards.glob("synthetic-train-*.tar"))
    slot_keys: dict[tuple[int, int], set[str]] = {}
    steps = []
    val_keys: list[str] = []
    for rank in (0, 1):
        dm = datamodule(shards, rank)
        loader = dm.train_dataloader()
        epochs = [[(batch.keys, batch.frame_ids) for batch in loader] for _ in range(2)]
        assert len(epochs[0]) == len(epochs[1])
        assert epochs[0] != epochs[1]  # persistent workers draw a new stream each epoch
        steps.append(len(epochs[0]))
        for index, (keys, _) in enumerate(epochs[0] + epochs[1]):
            slot_keys.setdefault((rank, index % 2), set()).update(keys)  # workers take turns in order
        val_keys += [key for batch in dm.val_dataloader() for key in batch.keys]
    assert steps == [6, 6]  # ceil(5 / 2) batches per worker, the same on both ranks
    slots = list(slot_keys)
    for i, slot in enumerate(slots):
        own_shards = set(urls[slot[0]::2][slot[1]::2])
        for key in slot_keys[slot]:
            assert urls[scene_index(key) // CLIPS_PER_SHARD] in own_shards
        for other in slots[i + 1:]:
            assert not slot_keys[slot] & slot_keys[other]
    assert sorted(val_keys) == sorted(set(val_keys)) and len(val_keys) == SCENES


def test_batches_are_typed_and_budgeted(shards):
    dm = datamodule(shards, 0, num_workers=0, aspect_ratio_range=(0.5, 2.0))
    sizes = set()
    for batch in dm.train_dataloader():
        assert isinstance(batch, MultiViewBatch)
        b, n = batch.batch_size, batch.num_views
        assert 2 <= n <= 3 and b == 6 // n
        h, w = batch.images.shape[-2:]
        sizes.add((h, w))
        assert h % 8 == 0 and w % 8 == 0
        assert batch.images.dtype == torch.uint8  # shipped as uint8, made float on the device
        images = batch.with_float_images().images
        assert images.dtype == torch.float32 and 0 <= images.min() and images.max() <= 1 and images.std() > 0.05
        assert batch.depth_m.shape == batch.valid.shape == (b, n, h, w)
        assert batch.K.shape == (b, n, 3, 3) and batch.camera_to_world.shape == (b, n, 4, 4)
        assert batch.has_depth.all() and batch.dataset_names == ["synthetic"] * b
        assert torch.all(batch.depth_m[batch.valid] > 0) and batch.valid.float().mean() > 0.99
    assert len(sizes) > 1  # aspect ratios vary per batch


def test_resumed_datamodule_draws_a_fresh_stream(shards):
    def stream(dm: MultiViewDataModule) -> list:
        return [(batch.keys, batch.frame_ids) for batch in dm.train_dataloader()]

    first = datamodule(shards, 0, num_workers=0)
    again = datamodule(shards, 0, num_workers=0)
    assert stream(first) == stream(again)  # deterministic by seed
    resumed = datamodule(shards, 0, num_workers=0)
    resumed.load_state_dict(first.state_dict())
    assert resumed.restart == 1
    assert stream(resumed) != stream(first)


class DepthFromBrightness(L.LightningModule):
    """A one-parameter model, just enough to drive fit/validate over MultiViewBatch."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def _loss(self, batch: MultiViewBatch) -> torch.Tensor:
        assert isinstance(batch, MultiViewBatch)
        assert batch.images.dtype == torch.float32  # the DataModule's device hook converted them
        prediction = self.scale * batch.images.mean(dim=2)
        return ((prediction - batch.depth_m).abs() * batch.valid).sum() / batch.valid.sum()

    def training_step(self, batch: MultiViewBatch, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, batch_size=batch.batch_size)
        return loss

    def validation_step(self, batch: MultiViewBatch, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), batch_size=batch.batch_size)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_fit_runs_equal_epochs_and_counts_skips(shards, tmp_path):
    bad = tmp_path / "bad-000000.tar"
    key, meta, frames = render_clip(0, seed=1, views=3, height=32, width=32)
    meta["camera_to_world"][0][0][0] = 2.0  # non-rigid
    with tarfile.open(bad, "w") as tar:
        members = [("meta.json", json.dumps(meta).encode())]
        members += [(f"{i:03d}.{suffix}", data) for i, frame in enumerate(frames) for suffix, data in frame.items()]
        for suffix, data in members:
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    dm = MultiViewDataModule(
        train_shards=[str(shards / "synthetic-train-*.tar")],
        val_shards=[str(shards / "synthetic-train-000000.tar"), str(bad)],
        image_size=(32, 32), size_multiple=8, views_min=2, views_max=3, image_budget=6,
        train_batches_per_epoch=4, num_workers=1,
    )
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=tmp_path)
    trainer.fit(DepthFromBrightness(), datamodule=dm)
    assert trainer.global_step == 8
    assert dm.skipped_counts == {"bad_pose": 2}  # one bad clip, validated once per epoch


def test_shard_command_is_deterministic_across_worker_counts(console_script, tmp_path):
    outputs = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        result = console_script("g2vlm", "shard", "synthetic", "--out", str(out), "--scenes", "6", "--views", "2",
                                "--size", "24x32", "--seed", "5", "--workers", workers, "--clips-per-shard", "4",
                                cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "wrote 6 clips, 12 frames in 2 shards" in result.stdout
        outputs.append({path.name: path.read_bytes() for path in sorted(out.iterdir())})
    assert outputs[0] == outputs[1]
    index = json.loads(outputs[0]["synthetic-train-index.json"])
    assert [shard["clips"] for shard in index["shards"]] == [4, 2]
