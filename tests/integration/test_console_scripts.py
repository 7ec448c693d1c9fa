"""The real console scripts, run in subprocesses as a user runs them."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration


def test_lightning_help_lists_the_four_subcommands(console_script, tmp_path):
    result = console_script("lightning", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for subcommand in ("fit", "validate", "test", "predict"):
        assert subcommand in result.stdout


def test_lightning_fit_trains_saves_config_and_resumes(console_script, tmp_path):
    config = str(REPO_ROOT / "tests" / "conf" / "regression.yaml")
    first = console_script("lightning", "fit", "--config", config, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run_dir = tmp_path / "runs" / "test-regression"
    saved = yaml.safe_load((run_dir / "tensorboard" / "config.yaml").read_text())
    assert saved["model"]["class_path"] == "tests.fixtures.regression.LinearRegression"
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()

    second = console_script("lightning", "fit", "--config", config, "--trainer.max_steps", "6",
                            "--ckpt_path", "last", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "Restored all states from the checkpoint" in second.stderr + second.stdout
    import torch

    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert checkpoint["global_step"] == 6


def test_python_dash_m_g2vlm_is_the_same_cli(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "g2vlm", "fit", "--help"], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert "--trainer.max_steps" in result.stdout


def test_lightning_rejects_a_misspelt_option(console_script, tmp_path):
    config = str(REPO_ROOT / "tests" / "conf" / "regression.yaml")
    result = console_script("lightning", "fit", "--config", config, "--model.init_args.in_featurez", "3",
                            cwd=tmp_path)
    assert result.returncode != 0
    assert "in_featurez" in result.stderr


def test_g2vlm_help_and_doctor(console_script, tmp_path):
    help_result = console_script("g2vlm", "--help", cwd=tmp_path)
    assert help_result.returncode == 0, help_result.stderr
    assert "doctor" in help_result.stdout
    doctor = console_script("g2vlm", "doctor", cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "doctor: ok" in doctor.stdout
