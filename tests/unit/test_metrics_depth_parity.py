"""DepthMetrics against the straightforward masked implementation written here (one temporary per operation,
bool masks, `torch.where` masked means): the results must be bitwise equal."""

import torch
import torch.nn.functional as F

from g2vlm.geometry.alignment import irls_l1_scale, l1_scale_shift, median_scale
from g2vlm.metrics.depth import METRIC_CHUNK_ENTRIES, METRIC_NAMES, DepthMetrics


def reference_unit_metrics(pred, gt, mask):
    m = mask.to(pred.dtype)
    count = m.sum(-1).clamp(min=1)
    safe_gt = torch.where(mask, gt, torch.ones_like(gt))

    def mean(x):
        return torch.where(mask, x, torch.zeros_like(x)).sum(-1) / count

    error = pred - gt
    clamped = pred.clamp(min=1e-5)
    ratio = torch.maximum(clamped / safe_gt, safe_gt / clamped)
    return torch.stack([
        mean(error.abs() / safe_gt),
        mean(error.square() / safe_gt),
        mean(error.square()).sqrt(),
        mean((clamped.log() - safe_gt.log()).square()).sqrt(),
        *[mean((ratio < 1.25**power).to(pred.dtype)) for power in (1, 2, 3)],
    ], dim=-1)


def reference_depth_metrics(pred_depth, gt_depth, alignment, max_depth_m=None, clip_max_m=None, valid=None):
    """Pixel-weighted metrics {name: float64} over alignment units (the leading dim)."""
    pred_depth, gt_depth = pred_depth.float(), gt_depth.float()
    if pred_depth.shape[-2:] != gt_depth.shape[-2:]:
        flat = F.interpolate(pred_depth.reshape(-1, 1, *pred_depth.shape[-2:]), size=gt_depth.shape[-2:],
                             mode="bicubic", align_corners=False)
        pred_depth = flat.reshape(gt_depth.shape)
    mask = (gt_depth > 0) & torch.isfinite(gt_depth) & torch.isfinite(pred_depth)
    if max_depth_m is not None:
        mask &= gt_depth < max_depth_m
    if valid is not None:
        mask &= valid
    B = gt_depth.shape[0]
    pred, gt, mask = pred_depth.reshape(B, -1), gt_depth.reshape(B, -1), mask.reshape(B, -1)
    # invalid entries may hold inf/NaN; the solvers take finite inputs
    pred, gt = torch.where(mask, pred, 0), torch.where(mask, gt, 0)
    if alignment == "scale":
        aligned = irls_l1_scale(pred, gt, mask)[:, None] * pred
    elif alignment == "median":
        aligned = median_scale(pred, gt, mask)[:, None] * pred
    elif alignment == "scale_shift":
        scale, shift = l1_scale_shift(pred, gt, mask)
        aligned = scale[:, None] * pred + shift[:, None]
    else:
        aligned = pred
    if clip_max_m is not None:
        aligned = aligned.clamp(max=clip_max_m)
    count = mask.sum(-1)
    per_unit = reference_unit_metrics(aligned, gt, mask)
    used = count > 0
    sums = (per_unit[used].double() * count[used, None].double()).sum(0)
    return {name: (sums[i] / count.sum().double().clamp(min=1)).float() for i, name in enumerate(METRIC_NAMES)}, count.sum()


def random_case(seed, shape, pred_shape=None):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(shape, generator=g) * 80 + 0.1
    gt[torch.rand(shape, generator=g) < 0.1] = 0  # holes
    pred = torch.rand(pred_shape or shape, generator=g) * 5 + 0.01
    return pred, gt, g


def assert_bitwise(pred, gt, alignment, max_depth_m=None, clip_max_m=None, valid=None):
    metric = DepthMetrics(alignment=alignment, max_depth_m=max_depth_m, clip_max_m=clip_max_m)
    metric.update(pred.clone(), gt.clone(), valid)
    out = metric.compute()
    expected, pixels = reference_depth_metrics(pred, gt, alignment, max_depth_m, clip_max_m, valid)
    assert out["valid_pixels"] == pixels
    for name in METRIC_NAMES:
        assert torch.equal(out[name], expected[name]), (alignment, name, out[name].item(), expected[name].item())


def test_mono_metrics_bitwise_with_holes_caps_clip_and_extra_mask():
    pred, gt, g = random_case(0, (6, 24, 32))
    valid = torch.rand(6, 24, 32, generator=g) > 0.2
    for alignment in ("scale", "median", "none"):
        assert_bitwise(pred, gt, alignment)
        assert_bitwise(pred, gt, alignment, max_depth_m=70.0, clip_max_m=70.0, valid=valid)


def test_all_valid_fast_path_bitwise():
    pred, gt, _ = random_case(1, (5, 16, 20))
    gt = gt + 0.5  # every pixel valid
    for alignment in ("scale", "median", "none"):
        assert_bitwise(pred, gt, alignment)
        assert_bitwise(pred * 40, gt, alignment, clip_max_m=30.0)


def test_non_finite_inputs_resize_and_video_units_bitwise():
    pred, gt, _ = random_case(2, (3, 4, 12, 16), pred_shape=(3, 4, 6, 8))
    assert_bitwise(pred, gt, "scale", max_depth_m=70.0)  # bicubic resize to the GT, video-shaped units
    pred, gt, _ = random_case(3, (4, 10, 12))
    pred[0, 0, :3] = float("nan")
    pred[1, 2, 5] = float("inf")
    gt[2, 1, :4] = float("nan")
    gt[3, 0, 0] = float("inf")
    gt[0, 5] = 0
    for alignment in ("scale", "median", "none"):
        assert_bitwise(pred, gt, alignment)
    # a unit with no valid pixel at all is skipped and counted
    gt[1] = 0
    assert_bitwise(pred, gt, "scale")
    metric = DepthMetrics(alignment="scale")
    metric.update(pred, gt)
    assert metric.compute()["skipped_units"] == 1


def test_many_units_scored_in_several_chunks_bitwise():
    pred, gt, _ = random_case(4, (70, 64, 64))  # more pixels than one chunk of the metric pass holds
    assert pred.numel() > METRIC_CHUNK_ENTRIES
    assert_bitwise(pred, gt, "scale", max_depth_m=70.0, clip_max_m=60.0)
    assert_bitwise(pred, gt + 0.5, "none")  # every pixel valid
