import torch

from g2vlm.geometry.rotation import rotation_from_9d
from g2vlm.metrics.point_map import PointMapMetrics


def plane_sequence(size=31, spacing=0.1, frames=2):
    """A flat grid of points per frame (N, H, W, 3); all frames see the same plane patch, offset in y."""
    v, u = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    frames_points = [torch.stack([u * spacing, v * spacing + f * size * spacing, torch.zeros_like(u)], -1) for f in range(frames)]
    return torch.stack(frames_points)


def test_gt_vs_gt_under_similarity_is_perfect():
    gt = plane_sequence()
    gt[..., 2] = 0.3 * torch.sin(gt[..., 0]) * torch.cos(gt[..., 1])  # curved, so the alignment is well posed
    g = torch.Generator().manual_seed(0)
    rotation = rotation_from_9d(torch.randn(9, generator=g))
    pred = 2.5 * gt @ rotation.T + torch.tensor([1.0, -3.0, 0.5])
    valid = torch.ones(gt.shape[:-1], dtype=torch.bool)
    metric = PointMapMetrics()
    metric.update(pred, gt, valid)
    out = metric.compute()
    for name in ("accuracy", "accuracy_median", "completeness", "completeness_median"):
        assert out[name] < 1e-4, name
    assert out["normal_consistency"] > 0.9999 and out["normal_consistency_median"] > 0.9999


def test_known_checkerboard_offset_gives_known_accuracy_and_completeness():
    gt = plane_sequence()
    pred = gt.clone()
    height = 0.01  # much smaller than the 0.1 grid spacing: each point's nearest neighbour is its twin
    parity = (torch.arange(31)[:, None] + torch.arange(31)[None, :]) % 2 * 2 - 1
    pred[..., 2] = height * parity.float()
    valid = torch.ones(gt.shape[:-1], dtype=torch.bool)
    metric = PointMapMetrics()
    metric.update(pred, gt, valid)
    out = metric.compute()
    for name in ("accuracy", "accuracy_median", "completeness", "completeness_median"):
        assert abs(out[name] - height) < 2e-4, (name, out[name])
    assert out["normal_consistency"] > 0.99


def test_batches_average_sequences_and_skip_empty_ones():
    gt = plane_sequence(size=11)
    gt[..., 2] = 0.2 * torch.sin(3 * gt[..., 0])
    pred = torch.stack([gt, gt])
    valid = torch.ones(pred.shape[:-1], dtype=torch.bool)
    valid[1] = False
    metric = PointMapMetrics()
    metric.update(pred, torch.stack([gt, gt]), valid)
    out = metric.compute()
    assert out["sequences"] == 1 and out["skipped_sequences"] == 1
    assert out["accuracy"] < 1e-5
