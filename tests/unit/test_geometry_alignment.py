import numpy as np
import torch

from g2vlm.geometry.alignment import (
    irls_l1_scale,
    l1_scale_shift,
    umeyama_sim3,
    weighted_l1_scale,
    weighted_median,
)
from g2vlm.geometry.rotation import rotation_from_9d


def brute_force_l1_scale(pred, target, weights):
    """Evaluate Σ w |s x - y| at every candidate ratio (the optimum is one of them)."""
    ratios = (target / pred).flatten()
    objective = [(weights[:, None] * (s * pred - target).abs()).sum() for s in ratios]
    return min(objective)


def test_weighted_median_minimises_weighted_absolute_deviation():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(4, 31, dtype=torch.float64, generator=g)
    weights = torch.rand(4, 31, dtype=torch.float64, generator=g)
    median = weighted_median(values, weights)
    for row in range(4):
        deviations = (weights[row][:, None] * (values[row][:, None] - values[row][None, :]).abs()).sum(0)
        chosen = (weights[row] * (median[row] - values[row]).abs()).sum()
        assert abs(chosen - deviations.min()) < 1e-12
    # unit weights, odd count: the ordinary median
    torch.testing.assert_close(weighted_median(values[:, :31], torch.ones(4, 31, dtype=torch.float64)), values.median(-1).values)


def test_weighted_l1_scale_is_exact_optimum_and_ignores_invalid():
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(3, 50, 3, dtype=torch.float64, generator=g)
    target = 2.5 * pred + 0.3 * torch.randn(3, 50, 3, dtype=torch.float64, generator=g)
    weights = torch.rand(3, 50, dtype=torch.float64, generator=g)
    scale = weighted_l1_scale(pred, target, weights)
    for b in range(3):
        objective = (weights[b][:, None] * (scale[b] * pred[b] - target[b]).abs()).sum()
        assert abs(objective - brute_force_l1_scale(pred[b], target[b], weights[b])) < 1e-10
    # exact recovery with a minority of gross outliers
    clean = 3.0 * pred
    clean[:, :10] = 100.0
    torch.testing.assert_close(weighted_l1_scale(pred, clean), torch.full((3,), 3.0, dtype=torch.float64))
    # invalid entries are ignored; an empty row gives 1
    valid = torch.ones(3, 50, dtype=torch.bool)
    valid[0, :25] = False
    valid[2] = False
    corrupted = clean.clone()
    corrupted[0, :25] = -7.0
    out = weighted_l1_scale(pred, corrupted, valid=valid)
    assert abs(out[0] - 3.0) < 1e-12 and out[2] == 1.0


def test_irls_l1_scale_matches_official_iteration_and_recovers_scale():
    g = torch.Generator().manual_seed(2)
    pred = torch.rand(2, 100, dtype=torch.float64, generator=g) + 0.5
    target = 1.7 * pred
    torch.testing.assert_close(irls_l1_scale(pred, target), torch.full((2,), 1.7, dtype=torch.float64))
    # the official loop, written out with numpy on one row with outliers
    noisy = target.clone()
    noisy[:, :5] *= 4.0
    p, t = pred[0].numpy(), noisy[0].numpy()
    s = t.mean() / p.mean()
    for _ in range(10):
        w = 1.0 / (np.abs(s * p - t) + 1e-8)
        s = (w * p * t).sum() / (w * p * p).sum()
    s = max(s, 1e-3)
    assert abs(irls_l1_scale(pred, noisy)[0].item() - s) < 1e-12
    # masked entries are excluded
    valid = torch.ones(2, 100, dtype=torch.bool)
    valid[:, :5] = False
    torch.testing.assert_close(irls_l1_scale(pred, noisy, valid), torch.full((2,), 1.7, dtype=torch.float64))





def test_l1_scale_shift_exact_on_affine_and_robust_to_outliers():
    g = torch.Generator().manual_seed(4)
    pred = torch.rand(2, 200, dtype=torch.float64, generator=g) * 5 + 0.1
    target = 0.8 * pred + 2.0
    scale, shift = l1_scale_shift(pred, target)
    torch.testing.assert_close(scale, torch.full((2,), 0.8, dtype=torch.float64))
    torch.testing.assert_close(shift, torch.full((2,), 2.0, dtype=torch.float64))
    noisy = target.clone()
    noisy[:, :20] += 30.0
    scale, shift = l1_scale_shift(pred, noisy)
    assert (scale - 0.8).abs().max() < 1e-4 and (shift - 2.0).abs().max() < 1e-4
    # float32 and a mask
    valid = torch.ones(2, 200, dtype=torch.bool)
    valid[:, :20] = False
    scale, shift = l1_scale_shift(pred.float(), noisy.float(), valid)
    assert scale.dtype == torch.float32
    assert (scale - 0.8).abs().max() < 1e-5 and (shift - 2.0).abs().max() < 1e-4


def test_umeyama_recovers_random_sim3_to_1e5():
    g = torch.Generator().manual_seed(5)
    source = torch.randn(4, 500, 3, generator=g)
    rotation = rotation_from_9d(torch.randn(4, 9, generator=g))
    scale = torch.rand(4, generator=g) * 3 + 0.2
    translation = torch.randn(4, 3, generator=g) * 2
    target = scale[:, None, None] * source @ rotation.transpose(-1, -2) + translation[:, None]
    s, R, t = umeyama_sim3(source, target)
    assert s.dtype == torch.float32
    torch.testing.assert_close(s, scale, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(R, rotation, atol=1e-5, rtol=0)
    torch.testing.assert_close(t, translation, atol=1e-5, rtol=1e-5)


def test_umeyama_weights_rigid_mode_and_reflection():
    g = torch.Generator().manual_seed(6)
    source = torch.randn(300, 3, dtype=torch.float64, generator=g)
    rotation = rotation_from_9d(torch.randn(9, dtype=torch.float64, generator=g))
    target = 2.0 * source @ rotation.T + 1.0
    target[:50] = 1000.0 * torch.randn(50, 3, dtype=torch.float64, generator=g)
    weights = torch.ones(300, dtype=torch.float64)
    weights[:50] = 0
    s, R, t = umeyama_sim3(source, target, weights)
    torch.testing.assert_close(s, torch.tensor(2.0, dtype=torch.float64))
    torch.testing.assert_close(R, rotation)
    torch.testing.assert_close(t, torch.ones(3, dtype=torch.float64))
    # rigid mode keeps scale 1
    s, R, _ = umeyama_sim3(source[50:], (source[50:] @ rotation.T) + 3.0, with_scale=False)
    assert s == 1.0
    torch.testing.assert_close(R, rotation)
    # a mirrored target: the best proper rotation, never a reflection
    _, R, _ = umeyama_sim3(source, source * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    assert abs(torch.linalg.det(R).item() - 1.0) < 1e-12
    # all weights zero: identity
    s, R, _t = umeyama_sim3(source, target, torch.zeros(300, dtype=torch.float64))
    assert s == 1.0 and torch.equal(R, torch.eye(3, dtype=torch.float64))
