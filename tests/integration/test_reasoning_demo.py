"""The reasoning demo end to end, shrunk: render the three question sets, train both stages through the real
`lightning` console script (stage 2 starting from stage 1's checkpoint), answer the held-out questions, report."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import run_console_script

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_two_stage_reasoning_demo_reports_both_tasks(tmp_path):
    result = run_console_script("python", "-m", "g2vlm.benchmarks.spar_demo", "--grounding-scenes", "24",
                                "--train-scenes", "24", "--val-scenes", "4", "--grounding-minutes", "0.5",
                                "--minutes", "0.5", "--workers", "1", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    grounding = tmp_path / "runs" / "reasoning-demo" / "grounding" / "checkpoints" / "last.ckpt"
    assert grounding.is_file()
    final = torch.load(tmp_path / "runs" / "reasoning-demo" / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=False)
    assert final["hyper_parameters"]["init_weights"] == "runs/reasoning-demo/grounding/checkpoints/last.ckpt"
    report = json.loads((tmp_path / "runs" / "reasoning-demo" / "report" / "report.json").read_text())
    assert set(report["tasks"]) == {"left_right", "object_depth"}
    assert report["tasks"]["left_right"]["kind"] == "multiple_choice"
    assert report["tasks"]["object_depth"]["kind"] == "numeric"
    assert "multiple choice: accuracy" in result.stdout and "numeric: MRA" in result.stdout
