"""FSDP2 on CUDA (gpu marker; skipped without CUDA): the CPU tests of tests/integration/test_fsdp_cpu.py on GPUs,
with NCCL and the overlay exactly as experiments/trainer/fsdp.yaml writes it (bf16 trunk, fp32 heads, activation
checkpointing). Uses 2 GPUs when there are 2 or more (real sharding), else 1.

- the bf16 run trains, saves sharded (one shard file per rank), resumes with `--ckpt_path last`, and
  `g2vlm consolidate` of the folder loads on the CPU with the gathered weights;
- in fp32 (`param_dtype: float32`, TF32 off) the losses of 10 steps equal the same run under DDP, the logged
  pre-clip norm equals the norm of the whole gradients and the applied norm is at most 1;
- SIGUSR1 -> sharded save -> resume reproduces the uninterrupted run's losses and AdamW moments
  (`trainer.deterministic`: CUDA kernels without a deterministic variant fail loudly rather than drift).
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from g2vlm.lit.geometry_pretraining import GeometryPretraining
from tests.conftest import run_console_script
from tests.fixtures.fit_records import CONFIG, FSDP, STEPS, logged, losses, recorder_overlay

pytestmark = pytest.mark.gpu
# NVIDIA_TF32_OVERRIDE=0: fp32 matmuls in fp32, so DDP and FSDP2 differ only by summation order
FP32_ENV = {"NVIDIA_TF32_OVERRIDE": "0"}


def devices() -> int:
    return min(2, max(1, torch.cuda.device_count()))


def fit(workdir, name: str, *args: str, root: str | None = None, fsdp: bool = True, fp32: bool = True,
        extra_callbacks: str = "", env: dict[str, str] | None = None):
    overlay = recorder_overlay(workdir, name, extra_callbacks)
    sharding = ["--config", FSDP] if fsdp else []
    precision = ["--trainer.strategy.init_args.param_dtype", "float32"] if fsdp and fp32 else []
    result = run_console_script(
        "lightning", "fit", "--config", CONFIG, *sharding, *precision, "--config", str(overlay),
        "--trainer.accelerator", "gpu", "--trainer.devices", str(devices()), "--trainer.deterministic", "true",
        "--model.init_args.optimization.eps", "1e-8",
        "--trainer.max_steps", str(STEPS), "--trainer.log_every_n_steps", "1",
        "--trainer.default_root_dir", f"runs/{root or name}", *args,
        cwd=workdir, env={**(FP32_ENV if fp32 else {}), **(env or {})}, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir / name


def test_bf16_policy_saves_sharded_resumes_and_consolidates(tiny_workdir):
    fit(tiny_workdir, "bf16", "--trainer.max_steps", "2", "--checkpoint.every_n_train_steps", "2", fp32=False)
    folder = tiny_workdir / "runs" / "bf16" / "checkpoints" / "last.ckpt"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [".metadata", "meta.pt", *(f"__{rank}_0.distcp" for rank in range(devices()))])
    resumed = fit(tiny_workdir, "bf16-resumed", "--trainer.max_steps", "4", "--ckpt_path", "last", root="bf16",
                  fp32=False)
    assert sorted(losses(resumed, 0)) == [2, 3]
    assert all(torch.isfinite(torch.tensor(v)) for v in losses(resumed, 0).values())

    result = run_console_script("g2vlm", "consolidate", str(folder), "--out", "portable.ckpt", "--overwrite",
                                cwd=tiny_workdir)
    assert result.returncode == 0, result.stderr
    gathered = torch.load(resumed / "end.pt", weights_only=True)
    module = GeometryPretraining.load_from_checkpoint(tiny_workdir / "portable.ckpt", map_location="cpu")
    assert torch.load(tiny_workdir / "portable.ckpt", weights_only=True)["global_step"] == 4
    for name, value in gathered["parameters"].items():
        assert torch.equal(module.state_dict()[name], value.cpu()), name


def test_fp32_losses_and_gradient_norms_equal_ddp(tiny_workdir):
    sharded = fit(tiny_workdir, "fsdp")
    ddp = fit(tiny_workdir, "ddp", fsdp=False)
    for rank in range(devices()):
        expected, got = losses(ddp, rank), losses(sharded, rank)
        for step in range(STEPS):
            assert got[step] == pytest.approx(expected[step], rel=1e-4, abs=0), (rank, step)
    fsdp_logged = logged(tiny_workdir, "fsdp", "train/grad_norm/total")
    assert fsdp_logged[0] == pytest.approx(logged(tiny_workdir, "ddp", "train/grad_norm/total")[0], rel=1e-6)
    norms = json.loads((sharded / "grad-norms-rank0.json").read_text())
    for step in range(STEPS):
        assert fsdp_logged[step] == pytest.approx(norms["pre_clip"][str(step)], rel=1e-5), step
        assert norms["applied"][str(step)] <= 1.0 + 1e-6, step


def test_sigusr1_sharded_save_and_resume_continue_exactly(tiny_workdir):
    reference = fit(tiny_workdir, "reference")
    fake_bin = tiny_workdir / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "scontrol").chmod(0o755)
    env = {"PATH": f"{fake_bin}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    signal_at_2 = """    - class_path: tests.fixtures.callbacks.SignalAtStep
      init_args: {step: 2, signal_name: SIGUSR1, rank: 0}
"""
    fit(tiny_workdir, "stopped", root="preempt", extra_callbacks=signal_at_2, env=env)
    resumed = fit(tiny_workdir, "resumed", "--ckpt_path", "last", root="preempt", env=env)
    for rank in range(devices()):
        expected, got = losses(reference, rank), losses(resumed, rank)
        assert sorted(got) == list(range(4, STEPS))
        moments = torch.load(reference / f"optimizer-rank{rank}.pt", weights_only=True)
        resumed_moments = torch.load(resumed / f"optimizer-rank{rank}.pt", weights_only=True)
        for step in range(4, STEPS):
            assert got[step] == expected[step], (rank, step)
            assert resumed_moments[step]["lr"] == moments[step]["lr"]
            for key in ("exp_avg", "exp_avg_sq"):
                for name, value in moments[step][key].items():
                    assert torch.equal(resumed_moments[step][key][name], value), (rank, step, key, name)
