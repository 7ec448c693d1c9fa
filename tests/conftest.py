"""Test tiers: unit (unmarked), `integration`, `slow`, `gpu`. `make test` runs all but slow and gpu.

gpu-marked tests are skipped cleanly on machines without CUDA.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def run_console_script(name: str, *args: str, cwd: Path, timeout: float = 600,
                       env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run one of the venv's console scripts (`lightning`, `g2vlm`) in a subprocess, as a user would.

    The repo root is put on PYTHONPATH so test fixtures (`tests.fixtures...`) resolve as class paths;
    `env` adds or overrides environment variables.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run([str(VENV_BIN / name), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def fake_slurm_env(folder: Path) -> tuple[dict[str, str], Path]:
    """The environment of SLURM job 4242 with a fake `scontrol` (folder/bin) that appends its arguments to
    folder/scontrol.log: (env for `run_console_script`, the log's path)."""
    fake_bin = folder / "bin"
    fake_bin.mkdir()
    requeue_log = folder / "scontrol.log"
    (fake_bin / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {requeue_log}\n')
    (fake_bin / "scontrol").chmod(0o755)
    return {"PATH": f"{fake_bin}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}, requeue_log


@pytest.fixture
def console_script():
    return run_console_script


@pytest.fixture(scope="session")
def tiny_synthetic_shards(tmp_path_factory) -> Path:
    """Synthetic shards in the layout experiments/geometry/tiny.yaml names, written by the real
    `g2vlm shard synthetic` console script: <root>/data/synthetic-tiny/synthetic-{train,val}-000000.tar."""
    root = tmp_path_factory.mktemp("tiny-shards")
    for extra in (["--scenes", "8"], ["--scenes", "4", "--split", "val", "--seed", "1"]):
        result = run_console_script("g2vlm", "shard", "synthetic", "--out", "data/synthetic-tiny", "--views", "4",
                                    "--size", "32x32", "--no-progress", *extra, cwd=root)
        assert result.returncode == 0, result.stderr
    return root


def save_tiny_checkpoint(path: Path) -> None:
    """A GeometryPretraining checkpoint of the `tiny` preset (seed 0), saved by a Lightning Trainer at `path`."""
    import lightning as L

    from g2vlm.lit.geometry_pretraining import GeometryPretraining

    torch.manual_seed(0)
    module = GeometryPretraining(preset="tiny", freeze=["vit", "semantic"])
    module.configure_model()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The `tiny` checkpoint of `save_tiny_checkpoint`, written once per session."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    save_tiny_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def reasoning_workdir(tmp_path_factory) -> Path:
    """data/reasoning-tiny as experiments/reasoning/tiny.yaml names it, written by `g2vlm shard synthetic-qa`."""
    from g2vlm.datamodules.qa.tokenizer import build_character_tokenizer

    root = tmp_path_factory.mktemp("reasoning")
    for extra in (["--scenes", "8"], ["--scenes", "2", "--split", "val", "--seed", "1"]):
        result = run_console_script("g2vlm", "shard", "synthetic-qa", "--out", "data/reasoning-tiny", "--views", "2",
                                    "--size", "32x32", "--no-progress", *extra, cwd=root)
        assert result.returncode == 0, result.stderr
    build_character_tokenizer(root / "data" / "reasoning-tiny" / "tokenizer")
    return root


@pytest.fixture
def tiny_workdir(tmp_path, tiny_synthetic_shards) -> Path:
    """A fresh working directory whose data/ holds the tiny synthetic shards."""
    (tmp_path / "data").symlink_to(tiny_synthetic_shards / "data")
    return tmp_path
