"""The metrics with list states, synchronised across 2 real processes (gloo): after the sync a "cat" state is one
tensor, not a list (a 2-process validation with poses stopped on this)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from g2vlm.geometry.camera import se3_from_rotation_translation
from g2vlm.metrics.relative_pose import RelativePoseMetrics

pytestmark = pytest.mark.integration


def _yaw(degrees: float) -> torch.Tensor:
    angle = math.radians(degrees)
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _clip(yaw_error_deg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views 1 m apart along x; the prediction's second view is turned by `yaw_error_deg`."""
    rotations = torch.stack([torch.eye(3), _yaw(10.0)])
    translations = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    gt = se3_from_rotation_translation(rotations, translations)
    pred = se3_from_rotation_translation(torch.stack([torch.eye(3), _yaw(10.0 + yaw_error_deg)]), translations)
    return pred[None], gt[None]


def _rank(rank: int, store: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        metric = RelativePoseMetrics(thresholds=(30,))
        metric.update(*_clip(0.0 if rank == 0 else 90.0))  # rank 0: exact poses; rank 1: 90° off
        out = metric.compute()
        results[rank] = (float(out["AUC@30"]), float(out["RRA@30"]), float(out["pairs"]))
    finally:
        dist.destroy_process_group()


def test_relative_pose_metrics_compute_after_a_two_process_sync(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_rank, args=(str(tmp_path / "store"), results), nprocs=2)
    # one view pair per rank: rank 0's is exact (AUC 100), rank 1's 90° off (0): 50 over both, on both ranks.
    assert results[0] == results[1] == (50.0, 50.0, 2.0)
