"""Joint spatial-reasoning training through the real `lightning` console script on tiny synthetic QA shards."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO_ROOT, run_console_script

pytestmark = pytest.mark.integration
TINY = str(REPO_ROOT / "experiments" / "reasoning" / "tiny.yaml")


def test_tiny_reasoning_fast_dev_run(reasoning_workdir):
    result = run_console_script("lightning", "fit", "--config", TINY, "--trainer.fast_dev_run", "2",
                                cwd=reasoning_workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "`Trainer.fit` stopped: `max_steps=2` reached." in result.stdout + result.stderr


def test_vg_ce_variant_trains_and_validation_scores_generated_answers(reasoning_workdir):
    result = run_console_script("lightning", "fit", "--config", TINY, "--model.init_args.variant", "vg_ce",
                                "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
                                "--trainer.log_every_n_steps", "1", cwd=reasoning_workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    events = EventAccumulator(str(reasoning_workdir / "runs" / "reasoning-tiny" / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss/ce", "train/loss/vg", "train/loss/vg_camera_rotation", "val/loss/ce", "val/qa/score"} <= scalars
    assert (reasoning_workdir / "runs" / "reasoning-tiny" / "checkpoints" / "last.ckpt").is_file()
