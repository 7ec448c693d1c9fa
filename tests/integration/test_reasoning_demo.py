"""The reasoning demo end to end, shrunk: render the three question sets, train both stages through the real
`lightning` console script (stage 2 starting from stage 1's checkpoint), answer the held-out questions, report;
then `make bench-spar` scores that checkpoint on a miniature SPAR-Bench parquet (tests/fixtures/spar_bench.py)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from g2vlm.metrics.spatial_qa import SPAR_TASKS
from tests.conftest import REPO_ROOT, run_console_script
from tests.fixtures.spar_bench import write_parquet

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_two_stage_reasoning_demo_reports_both_tasks(tmp_path):
    result = run_console_script("python", "-m", "g2vlm.demo_reasoning", "--grounding-scenes", "24",
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
    # SPAR-Bench as Hugging Face ships it -> shards -> the demo checkpoint's answers, every task scored
    write_parquet(tmp_path / "SPAR-Bench")
    demo = tmp_path / "runs" / "reasoning-demo"
    bench = subprocess.run(["make", "-C", str(REPO_ROOT), "bench-spar", f"PARQUET={tmp_path / 'SPAR-Bench' / 'data'}",
                            f"DATA={tmp_path / 'spar-bench'}", f"CKPT={demo / 'checkpoints' / 'last.ckpt'}",
                            f"TOKENIZER={tmp_path / 'data' / 'reasoning-demo' / 'tokenizer'}",
                            f"OUT={tmp_path / 'spar.json'}"],
                           capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert bench.returncode == 0, bench.stderr[-3000:]
    assert "wrote 20 SPAR-Bench questions of 20 tasks" in bench.stdout and "SPAR-Bench, 20 questions" in bench.stdout
    spar = json.loads((tmp_path / "spar.json").read_text())["spar"]
    assert set(spar["tasks"]) == set(SPAR_TASKS) and spar["n_questions"] == 20
