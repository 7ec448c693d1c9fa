"""End to end on a real one-node SLURM cluster (`make slurm-up`): our sbatch template runs the tiny geometry
config sharded with the FSDP2 overlay (experiments/trainer/fsdp.yaml, its bf16 GPU policy) on 2 CPU tasks over
gloo; `scancel --signal=USR1` preempts it mid-run; every rank saves its shards (at the next step the ranks check:
every 10 steps, PreemptionCheckpoint's default), the job requeues itself, restarts by itself, resumes from the
sharded folder and finishes from the saved step.

SLURM holds a requeued job for a couple of minutes (Reason=BeginTime); the test moves its start time to now,
which changes nothing else about the restart.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slurm
TEMPLATE = REPO_ROOT / "experiments" / "slurm" / "single_node.sbatch"
TINY = REPO_ROOT / "experiments" / "geometry" / "tiny.yaml"
FSDP = REPO_ROOT / "experiments" / "trainer" / "fsdp.yaml"
SLURM_CONF = os.environ.get("SLURM_CONF", "/tmp/g2vlm-slurm/slurm.conf")


def slurm(*args: str, check: bool = True) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, env={**os.environ, "SLURM_CONF": SLURM_CONF})
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr}")
    return result.stdout


def job_field(job_id: str, name: str) -> str:
    match = re.search(rf"\b{name}=(\S+)", slurm("scontrol", "show", "job", job_id))
    return match.group(1) if match else ""


def wait_for(condition, timeout: float, what: str, log) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}; job log:\n{log.read_text()[-4000:] if log.exists() else ''}")


@pytest.fixture(scope="module")
def cluster():
    try:
        slurm("sinfo", "-h")
    except (FileNotFoundError, RuntimeError) as error:
        pytest.skip(f"no local SLURM cluster ({error}); start one with `make slurm-up`")


def test_preempt_requeue_resume_finishes(cluster, tiny_workdir):
    (tiny_workdir / "runs").mkdir()
    submitted = subprocess.run(
        ["sbatch", "--job-name", "g2vlm-slurm-test", "--ntasks-per-node", "2", "--cpus-per-task", "1",
         "--gpus-per-node", "0", str(TEMPLATE), "--config", str(TINY), "--config", str(FSDP),
         "--trainer.accelerator", "cpu", "--trainer.max_steps", "30", "--trainer.limit_val_batches", "0",
         "--checkpoint.every_n_train_steps", "5", "--data.init_args.train_batches_per_epoch", "100"],
        cwd=tiny_workdir, capture_output=True, text=True,
        env={**os.environ, "SLURM_CONF": SLURM_CONF, "PYTHON": sys.executable,
             "PYTHONPATH": str(REPO_ROOT)})
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[-1]
    log = tiny_workdir / "runs" / f"slurm-g2vlm-slurm-test-{job_id}.out"
    checkpoints = tiny_workdir / "runs" / "geometry-tiny" / "checkpoints"
    try:
        wait_for(lambda: (checkpoints / "step=5.ckpt" / "meta.pt").exists(), 420, "the first checkpoint", log)
        slurm("scancel", "--signal=USR1", job_id)
        wait_for(lambda: job_field(job_id, "Restarts") == "1" and job_field(job_id, "JobState") == "PENDING",
                 120, "the requeue", log)
        slurm("scontrol", "update", f"JobId={job_id}", "StartTime=now")
        wait_for(lambda: job_field(job_id, "JobState") in ("COMPLETED", "FAILED", "CANCELLED"), 600,
                 "the requeued job to finish", log)
    finally:
        slurm("scancel", job_id, check=False)
    text = log.read_text()
    assert job_field(job_id, "JobState") == "COMPLETED", text[-4000:]
    assert f"requeued SLURM job {job_id}" in text
    assert f"job {job_id} restart 1" in text
    assert "Restored all states from the checkpoint at" in text and "last-preempted.ckpt" in text
    preempted = checkpoints / "last-preempted.ckpt"  # a sharded folder: one shard file per rank
    assert sorted(path.name for path in preempted.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"]
    saved_step = torch.load(preempted / "meta.pt", weights_only=True)["global_step"]
    assert saved_step in (10, 20)  # signalled after step 5; the ranks check at steps 10, 20, 30
    final = torch.load(checkpoints / "last.ckpt" / "meta.pt", weights_only=True)
    assert final["global_step"] == 30
