"""Preemption under 2-process CPU DDP (gloo): SIGUSR1 on one rank mid-epoch -> both ranks stop at one agreed
step (the next checked one: every 2 steps in tests/conf/two_ranks.yaml) after saving -> `scontrol requeue`
is called (a fake scontrol on PATH records it) -> a relaunch with `--ckpt_path last` resumes and, on
deterministic data, reproduces the uninterrupted run's losses exactly."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import REPO_ROOT, fake_slurm_env

pytestmark = pytest.mark.integration
CONFIG = str(REPO_ROOT / "tests" / "conf" / "two_ranks.yaml")


def record_overlay(workdir, name: str, out_dir, extra: str = "") -> str:
    path = workdir / f"{name}.yaml"
    path.write_text(f"""
trainer:
  callbacks+:
    - class_path: tests.fixtures.callbacks.RecordLosses
      init_args: {{out_dir: {out_dir}}}
{extra}""")
    return str(path)


def read_records(out_dir) -> list[dict]:
    return [json.loads((out_dir / f"losses-rank{rank}.json").read_text()) for rank in (0, 1)]


def test_sigusr1_saves_on_all_ranks_requeues_and_resumes_exactly(console_script, tiny_workdir):
    reference_dir = tiny_workdir / "reference"
    reference = console_script("lightning", "fit", "--config", CONFIG, "--config",
                               record_overlay(tiny_workdir, "reference", reference_dir),
                               "--trainer.default_root_dir", "runs/reference", cwd=tiny_workdir, timeout=900)
    assert reference.returncode == 0, reference.stderr[-4000:]

    slurm_env, requeue_log = fake_slurm_env(tiny_workdir)

    stopped_dir = tiny_workdir / "stopped"
    signal_on_rank_1 = """    - class_path: tests.fixtures.callbacks.SignalAtStep
      init_args: {step: 2, signal_name: SIGUSR1, rank: 1}
"""
    stopped = console_script("lightning", "fit", "--config", CONFIG, "--config",
                             record_overlay(tiny_workdir, "stopped", stopped_dir, signal_on_rank_1), cwd=tiny_workdir,
                             env=slurm_env, timeout=900)
    assert stopped.returncode == 0, stopped.stderr[-4000:]
    records = read_records(stopped_dir)
    agreed_step = records[0]["final_step"]
    # one agreed step, mid-run: the signal comes after step 2's check (SignalAtStep runs after PreemptionCheckpoint),
    # step 3 is not checked, step 4 is
    assert agreed_step == records[1]["final_step"] == 4
    assert requeue_log.read_text().split() == ["requeue", "4242"]  # rank 0 only, once
    saved = torch.load(tiny_workdir / "runs" / "two-ranks" / "checkpoints" / "last-preempted.ckpt",
                       map_location="cpu", weights_only=False)
    assert saved["global_step"] == agreed_step

    resumed_dir = tiny_workdir / "resumed"
    resumed = console_script("lightning", "fit", "--config", CONFIG, "--config",
                             record_overlay(tiny_workdir, "resumed", resumed_dir), "--ckpt_path", "last",
                             cwd=tiny_workdir, env=slurm_env, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    for rank, (expected, got) in enumerate(zip(read_records(reference_dir), read_records(resumed_dir))):
        assert got["final_step"] == 6
        resumed_steps = sorted(int(step) for step in got["losses"])
        assert resumed_steps == list(range(agreed_step, 6)), (rank, resumed_steps)
        for step in resumed_steps:
            assert got["losses"][str(step)] == pytest.approx(expected["losses"][str(step)], rel=1e-6, abs=0), (rank, step)
