"""FSDP on a GPU machine (gpu marker; skipped without CUDA): fit with sharded checkpoints -> resume ->
consolidate -> load on CPU with identical weights; the clipped gradient norm under FSDP equals the
unsharded run's. Uses every visible GPU (at least 1; 2 or more exercise real sharding)."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.gpu
TINY = str(REPO_ROOT / "experiments" / "geometry" / "tiny.yaml")
FSDP = str(REPO_ROOT / "experiments" / "trainer" / "fsdp.yaml")


def devices() -> str:
    return str(max(1, torch.cuda.device_count()))


def gpu_args(root: str, max_steps: int) -> list[str]:
    return ["--trainer.accelerator", "gpu", "--trainer.devices", devices(), "--trainer.max_steps", str(max_steps),
            "--trainer.default_root_dir", root, "--trainer.limit_val_batches", "0", "--trainer.log_every_n_steps", "1",
            "--checkpoint.every_n_train_steps", "2"]


def scalar(root, tag: str) -> list[float]:
    events = EventAccumulator(str(root / "tensorboard"))
    events.Reload()
    return [event.value for event in events.Scalars(tag)]


def test_fsdp_sharded_save_resume_consolidate_load_on_cpu(console_script, tiny_workdir):
    first = console_script("lightning", "fit", "--config", TINY, "--config", FSDP, *gpu_args("runs/fsdp", 2),
                           cwd=tiny_workdir, timeout=900)
    assert first.returncode == 0, first.stderr[-4000:]
    checkpoints = tiny_workdir / "runs" / "fsdp" / "checkpoints"
    assert (checkpoints / "last.ckpt").is_dir() and (checkpoints / "last.ckpt" / ".metadata").is_file()  # sharded

    resumed = console_script("lightning", "fit", "--config", TINY, "--config", FSDP, *gpu_args("runs/fsdp", 4),
                             "--ckpt_path", "last", cwd=tiny_workdir, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "Restored all states from the checkpoint" in resumed.stdout + resumed.stderr

    consolidated = console_script("g2vlm", "consolidate", str(checkpoints / "last.ckpt"), "--out", "portable.ckpt",
                                  cwd=tiny_workdir)
    assert consolidated.returncode == 0, consolidated.stderr
    from g2vlm.lit.geometry_pretraining import GeometryPretraining

    portable = torch.load(tiny_workdir / "portable.ckpt", map_location="cpu", weights_only=False)
    assert portable["global_step"] == 4
    module = GeometryPretraining.load_from_checkpoint(tiny_workdir / "portable.ckpt", map_location="cpu",
                                                      weights_only=False)
    for key, value in module.state_dict().items():  # loads on CPU, strictly, with the saved values
        assert torch.equal(value, portable["state_dict"][key]), key
    assert all(torch.isfinite(value).all() for value in portable["state_dict"].values())


def test_fsdp_clipped_gradient_norm_equals_the_unsharded_run(console_script, tiny_workdir):
    huge_loss = ["--model.init_args.loss", "g2vlm.losses.geometry_loss.GeometryLoss",
                 "--model.init_args.loss.init_args.local_weight", "1000.0"]
    unsharded = console_script("lightning", "fit", "--config", TINY, *huge_loss, *gpu_args("runs/single", 1),
                               "--trainer.devices", "1", "--trainer.precision", "32-true", cwd=tiny_workdir, timeout=900)
    assert unsharded.returncode == 0, unsharded.stderr[-4000:]
    sharded = console_script("lightning", "fit", "--config", TINY, "--config", FSDP, *huge_loss,
                             *gpu_args("runs/sharded", 1), "--trainer.devices", "1", "--trainer.precision", "32-true",
                             "--trainer.strategy.init_args.mixed_precision", "null", cwd=tiny_workdir, timeout=900)
    assert sharded.returncode == 0, sharded.stderr[-4000:]
    single_norm = scalar(tiny_workdir / "runs" / "single", "train/grad_norm/total")[0]
    fsdp_norm = scalar(tiny_workdir / "runs" / "sharded", "train/grad_norm/total")[0]
    assert single_norm > 1.0  # clipping was active
    assert fsdp_norm == pytest.approx(single_norm, rel=1e-4)
