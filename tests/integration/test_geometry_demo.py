"""`g2vlm demo` end to end, shrunk: render scenes, train the `small` preset through the real `lightning fit` console
path for half a minute, evaluate beside the computed baselines, write the table and the figures."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from tests.conftest import run_console_script

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = ["untrained model", "constant depth, identity poses", "training means (depth map, poses)",
        "trained (small preset)"]


def test_demo_trains_scores_every_predictor_and_draws_the_figures(tmp_path):
    result = run_console_script("g2vlm", "demo", "--train-scenes", "48", "--val-scenes", "4", "--minutes", "0.5",
                                "--workers", "1", "--threads", "1", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rendered 48 train scenes" in result.stdout  # counted from the written index
    report = tmp_path / "runs" / "geometry-demo" / "report"
    results = json.loads((report / "results.json").read_text())
    assert list(results) == ROWS
    for row in results.values():
        assert all(math.isfinite(row[key]) for key in ("abs_rel", "delta_1", "auc_30", "rotation_error_deg",
                                                        "translation_error_deg"))
    assert results["constant depth, identity poses"]["auc_30"] == 0.0  # identity poses: no translation direction
    means = results["training means (depth map, poses)"]
    assert means["translation_error_deg"] < 90.0  # the mean training poses carry a direction: computed, not identity
    for name in ("depth_comparison.png", "point_clouds.png"):
        width, height = Image.open(report / name).size
        assert width >= 512 and height >= 300
        assert f"runs/geometry-demo/report/{name}" in result.stdout
    assert (report / "predicted_points.ply").is_file()
    assert "training means (depth map, poses)" in result.stdout
