"""`python -m g2vlm.benchmarks.demo_learning`: a few steps on freshly rendered demo shards give a complete report."""

from __future__ import annotations

import json
import math

import pytest
import torch
from kornia.geometry.conversions import axis_angle_to_rotation_matrix, rotation_matrix_to_axis_angle

from g2vlm.benchmarks import demo_learning
from g2vlm.datamodules.synthetic.shards import write_synthetic_shards


def test_a_short_run_reports_scores_cpu_time_and_loss_terms(tmp_path, monkeypatch):
    for split, scenes, seed in (("train", 8, 0), ("val", 2, 1)):
        write_synthetic_shards(tmp_path / "data" / "demo", scenes=scenes, views=4, height=64, width=64, seed=seed,
                               split=split, workers=1, progress=False)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "report.json"
    assert demo_learning.main(["--steps", "4", "--log-every", "2", "--warmup-steps", "1", "--image-budget", "16", "--model",
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


def _pose(axis_angle, translation):
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = axis_angle_to_rotation_matrix(torch.tensor([axis_angle], dtype=torch.float64))[0]
    pose[:3, 3] = torch.tensor(translation, dtype=torch.float64)
    return pose


def test_relative_pose_correlation_tells_the_learned_axes_from_the_missed_ones():
    generator = torch.Generator().manual_seed(0)
    clips = []
    for _ in range(40):  # clips of 3 cameras turning about all three axes and moving in all three directions
        angles = torch.randn(3, 3, generator=generator, dtype=torch.float64) * 0.2
        moves = torch.randn(3, 3, generator=generator, dtype=torch.float64)
        clips.append(torch.stack([_pose(a.tolist(), t.tolist()) for a, t in zip(angles, moves)]))
    gt = torch.stack(clips)
    # a predictor that has the pitch (rotation about camera x) and the x translation right and nothing else:
    # the other rotation components and translations are those of an unrelated set of clips
    other = gt[torch.randperm(len(gt), generator=generator)]
    pred = other.clone()
    mine, theirs = (rotation_matrix_to_axis_angle(poses[..., :3, :3]) for poses in (gt, other))  # (M, 3, 3)
    for m in range(len(gt)):
        for k in range(3):
            pred[m, k] = _pose([mine[m, k, 0].item(), theirs[m, k, 1].item(), theirs[m, k, 2].item()],
                               [gt[m, k, 0, 3].item(), other[m, k, 1, 3].item(), other[m, k, 2, 3].item()])
    self_correlation = demo_learning.relative_pose_correlation(gt, gt)
    assert all(value == pytest.approx(1.0) for value in self_correlation.values())
    correlation = demo_learning.relative_pose_correlation(pred, gt)
    assert correlation["rotation_x_pitch"] > 0.8 and correlation["translation_x"] > 0.5
    assert all(abs(correlation[name]) < 0.4 for name in ("rotation_y_yaw", "rotation_z_roll", "translation_y", "translation_z"))
