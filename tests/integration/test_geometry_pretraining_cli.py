"""Geometry pretraining through the real `lightning` console script on tiny synthetic shards."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration
TINY = str(REPO_ROOT / "experiments" / "geometry" / "tiny.yaml")
PREEMPT_EVERY_STEP = str(REPO_ROOT / "tests" / "conf" / "preempt_every_step.yaml")


def test_tiny_geometry_fast_dev_run(console_script, tiny_workdir):
    result = console_script("lightning", "fit", "--config", TINY, "--trainer.fast_dev_run", "2", cwd=tiny_workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "`Trainer.fit` stopped: `max_steps=2` reached." in result.stdout + result.stderr


def test_sigterm_mid_epoch_then_resume_restores_step_optimizer_and_lr(console_script, tiny_workdir):
    common = ["--config", PREEMPT_EVERY_STEP, "--config", TINY, "--trainer.max_steps", "8", "--data.init_args.train_batches_per_epoch", "5",
              "--checkpoint.every_n_train_steps", "1", "--trainer.limit_val_batches", "0", "--trainer.log_every_n_steps", "1"]
    # Uninterrupted reference run: a checkpoint after every step.
    reference = console_script("lightning", "fit", *common, "--trainer.default_root_dir", "runs/reference",
                               cwd=tiny_workdir)
    assert reference.returncode == 0, reference.stderr[-3000:]
    events = EventAccumulator(str(tiny_workdir / "runs" / "reference" / "tensorboard"))
    events.Reload()
    assert "vis/depth" in events.Tags()["images"]  # GeometryVisualiser: depth comparison
    assert "vis/points_VERTEX" in events.Tags()["tensors"]  # and the point cloud (mesh plugin)
    assert "train/loss/camera_rotation" in events.Tags()["scalars"]

    # Interrupted run: SIGTERM during step 3 of a 5-batch epoch; the run saves and stops.
    stopped = console_script("lightning", "fit", *common, "--trainer.default_root_dir", "runs/interrupted",
                             "--trainer.callbacks+=tests.fixtures.callbacks.SignalAtStep",
                             "--trainer.callbacks.init_args.step", "3", cwd=tiny_workdir)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    preempted = tiny_workdir / "runs" / "interrupted" / "checkpoints" / "last-preempted.ckpt"
    saved = torch.load(preempted, map_location="cpu", weights_only=False)
    step = saved["global_step"]
    assert 3 <= step < 8

    # Same data order before the stop, so the saved state equals the reference run's at that step.
    expected = torch.load(tiny_workdir / "runs" / "reference" / "checkpoints" / f"step={step}.ckpt",
                          map_location="cpu", weights_only=False)
    assert saved["lr_schedulers"] == expected["lr_schedulers"]
    for saved_state, expected_state in zip(saved["optimizer_states"][0]["state"].values(),
                                           expected["optimizer_states"][0]["state"].values()):
        torch.testing.assert_close(saved_state["exp_avg"], expected_state["exp_avg"], rtol=0, atol=0)
        torch.testing.assert_close(saved_state["exp_avg_sq"], expected_state["exp_avg_sq"], rtol=0, atol=0)

    # Relaunch with --ckpt_path last: it starts from the saved step, moments and learning rate, and finishes.
    record = tiny_workdir / "resumed.pt"
    resumed = console_script("lightning", "fit", *common, "--trainer.default_root_dir", "runs/interrupted",
                             "--ckpt_path", "last", "--trainer.callbacks+=tests.fixtures.callbacks.RecordResumedState",
                             f"--trainer.callbacks.init_args.path={record}", cwd=tiny_workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = torch.load(record, map_location="cpu", weights_only=False)
    assert state["global_step"] == step
    reference_lrs = [group["lr"] for group in expected["optimizer_states"][0]["param_groups"]]
    assert state["learning_rates"] == reference_lrs
    for restored, expected_state in zip(state["optimizer"]["state"].values(),
                                        expected["optimizer_states"][0]["state"].values()):
        torch.testing.assert_close(restored["exp_avg"], expected_state["exp_avg"], rtol=0, atol=0)
    final = torch.load(tiny_workdir / "runs" / "interrupted" / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=False)
    assert final["global_step"] == 8
