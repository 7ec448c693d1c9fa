"""LossOutlierClipping in real 2-process CPU runs (gloo), through the `lightning` console script: under DDP, and
(slow) sharded with the FSDP2 overlay experiments/trainer/fsdp.yaml, where it must behave the same."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration
TINY = str(REPO_ROOT / "experiments" / "geometry" / "tiny.yaml")
FSDP = str(REPO_ROOT / "experiments" / "trainer" / "fsdp.yaml")
STRATEGIES = {"ddp": ["--trainer.strategy", "ddp"], "fsdp2": ["--config", FSDP]}


@pytest.mark.parametrize("strategy", ["ddp", pytest.param("fsdp2", marks=pytest.mark.slow)])
def test_bad_loss_on_one_rank_changes_no_parameter_on_either_rank(console_script, tiny_workdir, strategy):
    out = tiny_workdir / "record"
    # The injector must run before LossOutlierClipping, so this overlay replaces the callbacks list.
    overlay = tiny_workdir / "ddp_outliers.yaml"
    overlay.write_text(f"""
trainer:
  devices: 2
  max_steps: 5
  limit_val_batches: 0
  log_every_n_steps: 1
  callbacks:
    - class_path: tests.fixtures.callbacks.InjectBadLoss
      init_args: {{rank: 1, spike_step: 1, negative_step: 2, nan_step: 3}}
    - class_path: g2vlm.callbacks.loss_outlier_clipping.LossOutlierClipping
    - class_path: tests.fixtures.callbacks.RecordParameterChanges
      init_args: {{out_dir: {out}}}
""")
    result = console_script("lightning", "fit", "--config", TINY, *STRATEGIES[strategy], "--config", str(overlay),
                            cwd=tiny_workdir, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    for rank in (0, 1):
        changes = {int(step): change for step, change in json.loads((out / f"changes-rank{rank}.json").read_text()).items()}
        assert changes[0] > 0 and changes[4] > 0, changes  # normal steps train
        assert changes[1] == 0.0 and changes[2] == 0.0 and changes[3] == 0.0, changes  # spike, negative, NaN
    events = EventAccumulator(str(tiny_workdir / "runs" / "geometry-tiny" / "tensorboard"))
    events.Reload()
    counts = [event.value for event in events.Scalars("train/loss_outlier/count")]
    assert max(counts) == 3.0
