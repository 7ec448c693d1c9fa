"""The fast solvers against straightforward reference implementations written here.

`irls_l1_scale` must be bitwise the textbook loop of the official evaluation (same float operations per element,
same row sums); `l1_scale_shift` must reach the exact L1 optimum (checked against a brute force over all lines
through two data points).
"""


import torch
from g2vlm.datamodules.synthetic.render import render
from g2vlm.datamodules.synthetic.scene import sample_scene

from g2vlm.geometry.alignment import irls_l1_scale


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
