"""Geometry pretraining validated in a real 2-process CPU run (gloo) through the `lightning` console script: the
depth and pose metrics gather both ranks' clips, reach TensorBoard, and Lightning has nothing to warn about."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration
TINY = str(REPO_ROOT / "experiments" / "geometry" / "tiny.yaml")


def test_two_rank_validation_logs_depth_and_pose_metrics(console_script, tiny_workdir):
    # one validation shard per rank (every rank needs its own)
    val_shards = "[data/synthetic-tiny/synthetic-val-000000.tar, data/synthetic-tiny/synthetic-train-000000.tar]"
    result = console_script("lightning", "fit", "--config", TINY, "--trainer.strategy", "ddp", "--trainer.devices", "2",
                            "--trainer.num_sanity_val_steps", "0", "--data.val_shards", val_shards,
                            cwd=tiny_workdir, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "It is recommended to use `self.log(" not in result.stderr
    assert "Grad strides do not match bucket view strides" not in result.stderr
    events = EventAccumulator(str(tiny_workdir / "runs" / "geometry-tiny" / "tensorboard"))
    events.Reload()
    for tag in ("val/depth/abs_rel", "val/depth/delta_1", "val/pose/AUC@30"):
        (value,) = [event.value for event in events.Scalars(tag)]
        assert 0.0 <= value <= 100.0, (tag, value)
