"""The fast solvers against straightforward reference implementations written here.

`irls_l1_scale` must be bitwise the textbook loop of the official evaluation (same float operations per element,
same row sums); `l1_scale_shift` must reach the exact L1 optimum (checked against a brute force over all lines
through two data points).
"""


import numpy as np
import torch

from g2vlm.datamodules.synthetic.render import render
from g2vlm.datamodules.synthetic.scene import sample_scene
from g2vlm.geometry.alignment import _l1_line_fit, _l1_line_walk, irls_l1_scale, l1_scale_shift


def reference_irls_l1_scale(pred, target, valid=None, iterations=10, eps=1e-8, min_scale=1e-3):
    """The official loop as written in the evaluation code, batched over rows, one temporary per operation."""
    mask = torch.ones_like(pred, dtype=torch.bool) if valid is None else valid.expand_as(pred)
    m = mask.to(pred.dtype)
    count = m.sum(-1)
    mean_pred = (pred * m).sum(-1) / count.clamp(min=1)
    mean_target = (target * m).sum(-1) / count.clamp(min=1)
    scale = mean_target / torch.where(mean_pred == 0, torch.ones_like(mean_pred), mean_pred)
    for _ in range(iterations):
        residual = (scale.unsqueeze(-1) * pred - target).abs()
        w = m / (residual + eps)
        numerator = (w * pred * target).sum(-1)
        denominator = (w * pred * pred).sum(-1)
        scale = torch.where(denominator > 0, numerator / denominator.clamp(min=torch.finfo(pred.dtype).tiny), scale)
    scale = scale.clamp(min=min_scale)
    return torch.where(count > 0, scale, torch.ones_like(scale))


def rendered_depth(views=6, size=32):
    """Real-ish GT: z-depth of a procedural synthetic room (V, size*size), 0 where a ray hits nothing."""
    depth = torch.from_numpy(render(sample_scene(7, 0, views, size, size)).depth_m).float()
    return torch.nan_to_num(depth, nan=0.0, posinf=0.0).reshape(views, -1)


def test_irls_l1_scale_is_bitwise_the_reference_loop():
    g = torch.Generator().manual_seed(0)
    gt = rendered_depth()
    cases = {
        # a model-like prediction: blurred scale of the GT plus noise and a few gross outliers
        "noisy": 0.4 * gt * (1 + 0.2 * torch.randn(gt.shape, generator=g)) + 0.05 * torch.rand(gt.shape, generator=g),
        # a nearly collapsed prediction (untrained model)
        "flat": 2.0 + 0.01 * torch.randn(gt.shape, generator=g),
        "exact": 3.0 * gt,
    }
    cases["noisy"].view(-1)[::97] *= 10
    valid = gt > 0
    valid[1, : gt.shape[1] // 2] = False
    valid[2] = False  # a row without valid entries
    for name, pred in cases.items():
        for dtype in (torch.float32, torch.float64):
            p, t = pred.to(dtype), gt.to(dtype)
            assert torch.equal(irls_l1_scale(p, t, valid), reference_irls_l1_scale(p, t, valid)), (name, dtype)
            assert torch.equal(irls_l1_scale(p, t), reference_irls_l1_scale(p, t)), (name, dtype)
            assert torch.equal(irls_l1_scale(p, t, valid.to(dtype)), reference_irls_l1_scale(p, t, valid)), (name, dtype)
    # random inputs of mixed sign with leading dims and a broadcast mask, other iteration counts
    pred = torch.randn(3, 4, 257, generator=g)
    target = 1.5 * pred + torch.randn(3, 4, 257, generator=g)
    valid = torch.rand(1, 4, 257, generator=g) > 0.3
    for iterations in (0, 1, 25):
        assert torch.equal(irls_l1_scale(pred, target, valid, iterations=iterations),
                           reference_irls_l1_scale(pred, target, valid, iterations=iterations))
    # no rows, empty rows
    assert irls_l1_scale(torch.rand(0, 5), torch.rand(0, 5)).shape == (0,)
    assert torch.equal(irls_l1_scale(torch.rand(2, 0), torch.rand(2, 0)), torch.ones(2))
    # many rows, solved in several chunks that reuse their buffers
    pred = torch.rand(2, 300, 1000, generator=g) + 0.1  # 600 rows of 1000: three chunks
    target = 2 * pred + torch.randn(2, 300, 1000, generator=g)
    assert torch.equal(irls_l1_scale(pred, target, pred > 0.2), reference_irls_l1_scale(pred, target, pred > 0.2))


def brute_force_l1_line(x, y):
    """min over all lines through two data points of Σ |s·x + t - y| (an L1 line optimum is one of them).
    x, y 1-D numpy float64."""
    i, j = np.triu_indices(len(x), 1)
    keep = x[i] != x[j]
    if not keep.any():
        return float("inf")
    i, j = i[keep], j[keep]
    s = (y[j] - y[i]) / (x[j] - x[i])
    t = y[i] - s * x[i]
    return float(np.abs(s[:, None] * x[None] + t[:, None] - y[None]).sum(1).min())


def l1_objective(x, y, s, t):
    return float(np.abs(float(s) * np.asarray(x, dtype=np.float64) + float(t) - np.asarray(y, dtype=np.float64)).sum())


def small_l1_problems(seed, count):
    """Lines with noise and outliers, every second family quantised (repeated x, exact ties of slopes, several
    points on one line: 0.1 and 1 steps; 0.25 is exact in binary, 0.1 is not)."""
    rng = np.random.default_rng(seed)
    for trial in range(count):
        n = int(rng.integers(9, 40))
        x = rng.random(n) * 5
        y = 0.7 * x + 1.3 + rng.standard_normal(n) * (0.05, 0.5, 3.0)[trial % 3]
        y[rng.random(n) < 0.25] += 20 * rng.random()
        step = (0, 1, 0.25, 0.1)[trial % 4]
        if step:
            x, y = np.round(x / step) * step, np.round(y / step) * step
        yield trial, x, y


def test_l1_scale_shift_reaches_the_brute_force_optimum():
    for trial, x, y in small_l1_problems(0, 300):
        s, t = l1_scale_shift(torch.from_numpy(x), torch.from_numpy(y))
        assert l1_objective(x, y, s, t) <= brute_force_l1_line(x, y) + 1e-9, trial


def test_band_reduction_reaches_the_brute_force_optimum():
    """Samples of 4 points and bands of 1/2 .. 1/8, so the reference line is poor: bands that cannot hold the line
    (unbounded) and minimisers that push outside points across are both met and must end at the optimum."""
    for band_fraction in (2, 4, 8):
        for trial, x, y in small_l1_problems(band_fraction, 150):
            s, t = _l1_line_fit(x, y, sample=4, band_fraction=band_fraction)
            assert l1_objective(x, y, s, t) <= brute_force_l1_line(x, y) + 1e-9, (band_fraction, trial)


def test_l1_line_walk_on_grid_data_from_every_start():
    """Points on an integer grid times a unit not exact in binary: optima on flat faces whose weight sums tie
    exactly up to rounding (a walk that compared them without slack turned between two lines forever), and
    many points on each line. Every start must end at the optimum."""
    unit = 636.3614218631243
    x = unit * np.array([0, 0, 0, 2, 2, 4, 1, 0, 4, 1, 3, 1, 2, 0, 3, 4, 3, 4, 3, 2, 4, 2, 0, 2, 3, 0], dtype=np.float64)
    y = unit * np.array([-8, 21, 9, 11, 28, 22, 34, -6, 26, 14, -14, -12, 4, 20, -7, 14, 39, -8, -8, 38, -2, 33, 4,
                         26, -12, 19], dtype=np.float64)
    best = brute_force_l1_line(x, y)
    for pivot in range(len(x)):
        for slope in (-3.0, -0.5, 0.0, 0.7, 2.0):
            fit = _l1_line_walk(x, y, 0.0, 0.0, slope, pivot)
            assert l1_objective(x, y, *fit) <= best * (1 + 1e-12), (pivot, slope)


def test_l1_scale_shift_on_exactly_affine_rows_of_every_size():
    """Every point on one line (a prediction that is an exact affine map of the GT): all of them are on the
    optimal line at once, which the optimality check must settle in one step, not point by point."""
    gt = rendered_depth(views=20, size=32).reshape(-1)
    gt = gt[gt > 0].double()
    for n in (3, 1000, gt.numel()):  # the plain walk and the band path
        scale, shift = l1_scale_shift(2.0 * gt[:n] - 1.0, gt[:n])
        assert abs(float(scale) - 0.5) < 1e-12 and abs(float(shift) - 0.5) < 1e-12, n


def test_l1_scale_shift_batched_masked_and_degenerate_rows():
    g = torch.Generator().manual_seed(6)
    x = torch.rand(4, 30, dtype=torch.float64, generator=g) * 3 + 0.5
    y = 2.0 * x - 0.4 + 0.3 * torch.randn(4, 30, dtype=torch.float64, generator=g)
    valid = torch.rand(4, 30, generator=g) > 0.3
    valid[2] = False
    valid[2, 7] = True  # one valid entry: (1, 0)
    x[3] = 1.5  # all preds equal: s = 1 and the best shift for it
    y_masked = torch.where(valid, y, torch.full_like(y, float("nan")))  # values outside the mask are ignored
    s, t = l1_scale_shift(x, y_masked, valid)
    for row in (0, 1):
        xr, yr = x[row][valid[row]].numpy(), y[row][valid[row]].numpy()
        assert l1_objective(xr, yr, s[row], t[row]) <= brute_force_l1_line(xr, yr) + 1e-9
    assert s[2] == 1 and t[2] == 0
    xr, yr = x[3][valid[3]].numpy(), y[3][valid[3]].numpy()
    assert s[3] == 1 and l1_objective(xr, yr, 1.0, t[3]) <= min(l1_objective(xr, yr, 1.0, c - 1.5) for c in yr) + 1e-12
    empty_scale, empty_shift = l1_scale_shift(torch.rand(2, 0), torch.rand(2, 0))
    assert torch.equal(empty_scale, torch.ones(2)) and torch.equal(empty_shift, torch.zeros(2))
    # float32 in, float32 out, same optimum up to float32 rounding
    s32, t32 = l1_scale_shift(x[:2].float(), y[:2].float(), valid[:2])
    assert s32.dtype == torch.float32
    torch.testing.assert_close(s32.double(), s[:2], rtol=1e-5, atol=1e-5)


def test_l1_scale_shift_on_video_sized_rows_matches_the_plain_walk():
    """Rows of 20k model-like depths (the band path) against the exact walk over all points, and better than the
    old solver (IRLS, 50 reweighted least-squares steps)."""
    g = torch.Generator().manual_seed(8)
    gt = rendered_depth(views=20, size=32).reshape(1, -1)
    gt = gt[:, gt[0] > 0]
    pred = torch.cat([0.5 * gt + 0.3 + 0.1 * gt * torch.randn(gt.shape, generator=g),  # noisy, shifted
                      2.0 * gt.mean() + 0.05 * torch.randn(gt.shape, generator=g)])  # nearly collapsed
    target = gt.expand_as(pred)
    scale, shift = l1_scale_shift(pred, target)
    for row in range(2):
        x, y = pred[row].double().numpy(), target[row].double().numpy()
        plain = _l1_line_walk(x, y, 0.0, 0.0, 1.0, 0)
        ours = float(np.abs(float(scale[row]) * x + float(shift[row]) - y).sum())
        assert ours <= float(np.abs(plain[0] * x + plain[1] - y).sum()) * (1 + 1e-6)  # float32 outputs
        old_scale, old_shift = irls_scale_shift(pred[row].double(), target[row].double())
        assert ours <= float((old_scale * pred[row].double() + old_shift - target[row].double()).abs().sum())


def irls_scale_shift(x, y, iterations=50, eps=1e-8):
    """The previous solver: least squares, then reweighted least squares with w = 1 / (|r| + eps)."""
    w = torch.ones_like(x)
    scale, shift = 1.0, 0.0
    for step in range(iterations + 1):
        if step > 0:
            w = 1 / ((scale * x + shift - y).abs() + eps)
        mean_x, mean_y = (w * x).sum() / w.sum(), (w * y).sum() / w.sum()
        scale = (w * (x - mean_x) * (y - mean_y)).sum() / (w * (x - mean_x) ** 2).sum()
        shift = mean_y - scale * mean_x
    return scale, shift
