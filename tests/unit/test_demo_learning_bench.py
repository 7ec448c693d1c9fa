"""`python -m g2vlm.benchmarks.demo_learning`: a few steps on freshly rendered demo shards give a complete report."""

from __future__ import annotations

import json
import math

import pytest
import torch

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
    assert {"local_points", "camera_rotation", "camera_translation", "camera_rotation_of_identity"} <= set(
        report["train_loss"][0])
    assert 0.0 < report["train_loss"][0]["camera_rotation_of_identity"] < math.pi


def test_identity_rotation_loss_is_the_mean_angle_of_the_relative_rotations():
    def about_z(degrees):
        pose = torch.eye(4)
        c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
        pose[:2, :2] = torch.tensor([[c, -s], [s, c]])
        pose[:3, 3] = torch.tensor([1.0, 2.0, 3.0])  # translations do not enter
        return pose

    clips = torch.stack([torch.stack([about_z(0), about_z(30), about_z(90)]), torch.stack([about_z(10)] * 3)])
    # clip 0: ordered pairs at 30, 90, 60 degrees (each twice); clip 1: all 0
    expected = math.radians((30 + 90 + 60) / 3) / 2
    assert demo_learning.identity_rotation_loss(clips).item() == pytest.approx(expected, abs=1e-9)
