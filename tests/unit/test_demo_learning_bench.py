"""`python -m g2vlm.benchmarks.demo_learning`: a few steps on freshly rendered demo shards give a complete report."""

from __future__ import annotations

import json
import math

from g2vlm.benchmarks import demo_learning
from g2vlm.datamodules.synthetic.shards import write_synthetic_shards


def test_a_short_run_reports_scores_cpu_time_and_loss_terms(tmp_path, monkeypatch):
    for split, scenes, seed in (("train", 8, 0), ("val", 2, 1)):
        write_synthetic_shards(tmp_path / "data" / "demo", scenes=scenes, views=4, height=64, width=64, seed=seed,
                               split=split, workers=1, progress=False)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "report.json"
    assert demo_learning.main(["--steps", "4", "--log-every", "2", "--warmup-steps", "1", "--model",
                               '{"geometry_heads": {"depth": 1}}', "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["args"]["steps"] == 4 and report["cpu_s_per_step"] > 0
    assert all(math.isfinite(report[key]) for key in ("abs_rel", "delta_1", "auc_30", "rotation_error_deg"))
    assert [row["step"] for row in report["train_loss"]] == [2, 4]
    assert {"local_points", "camera_rotation", "camera_translation"} <= set(report["train_loss"][0])
