"""Training on data that fails, through the real `lightning` console script: data that yields nothing stops the run
in seconds with one clear error, a signal stops a run stuck in data loading, and skip counts reach TensorBoard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO_ROOT, VENV_BIN, run_console_script
from tests.fixtures.bad_clips import clip_members, eight_bit_depth, with_meta, write_tar

pytestmark = pytest.mark.integration
TINY = str(REPO_ROOT / "experiments" / "geometry" / "tiny.yaml")
DATA_STALL = str(REPO_ROOT / "tests" / "conf" / "data_stall.yaml")


def members(index: int):
    return clip_members(index, views=4, height=32, width=32, seed=3)


def test_training_on_clips_that_all_fail_to_decode_exits_within_60_s_naming_shards_and_counts(tmp_path):
    (tmp_path / "data").mkdir()
    for number in range(2):  # every clip reads and validates; every depth PNG is 8-bit, so each fails when decoded
        write_tar(tmp_path / "data" / f"depth8-{number:06d}.tar",
                  [(key, eight_bit_depth(clip)) for key, clip in map(members, range(8))])
    start = time.monotonic()
    result = run_console_script("lightning", "fit", "--config", TINY, "--trainer.limit_val_batches", "0",
                                "--data.init_args.train_shards", "[data/depth8-*.tar]", cwd=tmp_path, timeout=120)
    assert time.monotonic() - start < 60
    assert result.returncode == 2, result.stderr[-3000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("lightning: error: TrainClipBatches: 1000 samples in a row were skipped")
    assert "data/depth8-000000.tar" in error and "data/depth8-000001.tar" in error and "'bad_depth': 1000" in error


@pytest.mark.parametrize(("signal_name", "sigint_ignored"), [("SIGTERM", False), ("SIGUSR1", False), ("SIGTERM", True)])
def test_a_signal_stops_a_run_stuck_in_data_loading(tiny_workdir, signal_name, sigint_ignored):
    """The training loader delivers one batch and then blocks (tests/fixtures/stalling_data.py): no step ever ends,
    so the preemption callback can never reach a step to save at. Also as a background job of a shell without job
    control, which starts the run with SIGINT ignored (the stall stop raises SIGINT)."""
    marker = tiny_workdir / "stalled"
    process = subprocess.Popen(
        [str(VENV_BIN / "lightning"), "fit", "--config", TINY, "--config", DATA_STALL, "--trainer.limit_val_batches",
         "0", "--data.init_args.stalled_marker", str(marker)], cwd=tiny_workdir, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert marker.exists(), f"the loader never stalled\n{process.communicate(timeout=30)[0][-3000:]}"
        time.sleep(1.0)
        process.send_signal(signal.Signals[signal_name])
        sent = time.monotonic()
        output, _ = process.communicate(timeout=60)
        assert time.monotonic() - sent < 30  # data_stall_seconds is 3 in tests/conf/data_stall.yaml
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode != 0
    assert f"{signal_name} received, but no training batch came in the 3 s since (the data loader is stuck)" in output


def test_skip_counts_reach_tensorboard_per_reason_and_an_empty_validation_set_says_so(tmp_path):
    (tmp_path / "data").mkdir()
    clips = [members(index) for index in range(10)]
    camera_to_world = json.loads(clips[7][1]["meta.json"])["camera_to_world"]
    camera_to_world[0][0][0] = 1.5  # a scaled axis: not a rotation
    train = [clips[0], (clips[1][0], eight_bit_depth(clips[1][1])), clips[2],
             (clips[3][0], {k: v for k, v in clips[3][1].items() if k != "002.jpg"}), clips[4],
             (clips[7][0], with_meta(clips[7][1], camera_to_world=camera_to_world)), clips[5], clips[6]]
    write_tar(tmp_path / "data" / "mixed-000000.tar", train)
    write_tar(tmp_path / "data" / "val-000000.tar", [(key, eight_bit_depth(clip)) for key, clip in clips[8:]])
    result = run_console_script("lightning", "fit", "--config", TINY, "--trainer.max_steps", "6",
                                "--trainer.log_every_n_steps", "1", "--trainer.val_check_interval", "3",
                                "--data.init_args.train_shards", "[data/mixed-000000.tar]",
                                "--data.init_args.val_shards", "[data/val-000000.tar]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "validation shards data/val-000000.tar gave no valid clip (skipped by reason: {'bad_depth': 2})" \
        in result.stderr
    events = EventAccumulator(str(tmp_path / "runs" / "geometry-tiny" / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    for reason in ("bad_depth", "missing_frame", "bad_pose"):
        assert f"data/skipped/{reason}" in tags, tags
        values = [event.value for event in events.Scalars(f"data/skipped/{reason}")]
        assert values == sorted(values) and values[-1] >= 1  # running totals
    # bad_pose and missing_frame are both found while reading, once per pass over the shard: equal running totals
    assert [e.value for e in events.Scalars("data/skipped/bad_pose")] == \
        [e.value for e in events.Scalars("data/skipped/missing_frame")]
