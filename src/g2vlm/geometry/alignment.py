"""Alignment solvers: scale (weighted-L1 exact, IRLS-L1, median), scale-and-shift (L1), Sim(3) (Umeyama).

Every solver is batched over leading dims, takes an optional boolean `valid` mask, and returns float32
(float64 for float64 inputs). They are solvers, not losses: callers that train through them run them
under `torch.no_grad()`.
"""

from __future__ import annotations

import torch

from g2vlm.geometry.precision import outside_autocast, upcast


@outside_autocast
def weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Exact minimiser of Σ_m w_m |s - v_m| over s, along the last dim. (..., M) x (..., M) -> (...).

    Sorts the values and returns the first one at which the cumulative weight reaches half the total
    (the lower weighted median). Weights must be >= 0; an all-zero row returns its smallest value.
    Cost: one sort, O(M log M).
    """
    values, weights = upcast(values, weights)
    sorted_values, order = values.sort(dim=-1)
    cumulative = weights.gather(-1, order).cumsum(dim=-1)
    half = 0.5 * cumulative[..., -1:]
    index = (cumulative < half).sum(dim=-1, keepdim=True).clamp(max=values.shape[-1] - 1)
    return sorted_values.gather(-1, index).squeeze(-1)


@outside_autocast
def weighted_l1_scale(
    pred: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Optimal scale s* = argmin_s Σ_m w_m Σ_c |s·pred_mc - target_mc| (the reference's ROE solver).

    pred, target (..., M, C); weights (..., M) >= 0 (default 1); valid (..., M) bool. Returns (...).
    Each coordinate contributes w·|pred| · |s - target/pred|, so s* is the weighted median of the ratios
    target/pred with weights w·|pred| — an exact search over the sorted ratios (the MoGe "ROE" solver,
    without truncation). Coordinates with pred == 0 carry no weight. Rows with no weight return 1.
    The result may be negative; the geometry loss flips it to |s*| as the reference does.
    Cost: one sort of M·C ratios.
    """
    pred, target = upcast(pred, target)
    if weights is None:
        weights = torch.ones(pred.shape[:-1], dtype=pred.dtype, device=pred.device)
    (weights,) = upcast(weights)
    weights = weights.to(pred.dtype)
    if valid is not None:
        weights = weights * valid.to(pred.dtype)
    term_weights = weights.unsqueeze(-1) * pred.abs()  # (..., M, C)
    safe_pred = torch.where(pred == 0, torch.ones_like(pred), pred)
    ratios = torch.where(pred == 0, torch.zeros_like(pred), target / safe_pred)
    flat_ratios = ratios.flatten(-2)
    flat_weights = term_weights.flatten(-2)
    scale = weighted_median(flat_ratios, flat_weights)
    has_weight = flat_weights.sum(-1) > 0
    return torch.where(has_weight, scale, torch.ones_like(scale))


@torch.no_grad()
@outside_autocast
def irls_l1_scale(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    iterations: int = 10,
    eps: float = 1e-8,
    min_scale: float = 1e-3,
) -> torch.Tensor:
    """Scale-only L1 fit by IRLS, exactly as the official depth evaluation ("median-scale" in its configs).

    pred, target (..., M); valid (..., M) bool or 0/1 float. Returns s (...) minimising Σ |s·pred - target|
    approximately: start s = mean(target) / mean(pred) over valid entries, then `iterations` Weiszfeld steps
    w = 1 / (|s·pred - target| + eps), s = Σ w·pred·target / Σ w·pred², finally s >= min_scale.
    Rows without valid entries return 1. Entries outside `valid` must be finite. No gradient (a solver).

    Every element goes through the same float operations in the same order as the textbook loop
    `w = m / ((s·pred - target).abs() + eps); s = (w·pred·target).sum() / (w·pred·pred).sum()`, and the row sums
    run over the same contiguous rows, so the result is bitwise that loop's; only the memory traffic is less
    (invalid entries zeroed once, two reused buffers, in-place steps: ten passes over M per iteration).
    Note that eps = 1e-8 lies below float32 resolution of the residuals, so float32 and float64 runs of the
    same loop differ (by up to ~1 % in s after 10 steps on noisy predictions); the loop itself is the protocol.
    Cost: O(iterations · M).
    """
    pred, target = upcast(pred, target)
    if valid is None:
        count = torch.full(pred.shape[:-1], pred.shape[-1], dtype=pred.dtype, device=pred.device)
    else:
        m = valid.expand_as(pred).to(pred.dtype)
        count = m.sum(-1)
        pred, target = pred * m, target * m  # invalid entries become 0, so they add 0 to both sums below
    mean_pred = pred.sum(-1) / count.clamp(min=1)
    mean_target = target.sum(-1) / count.clamp(min=1)
    scale = mean_target / torch.where(mean_pred == 0, torch.ones_like(mean_pred), mean_pred)
    weighted = torch.empty_like(pred)  # w, then w·pred, then w·pred·pred
    product = torch.empty_like(pred)  # w·pred·target
    tiny = torch.finfo(pred.dtype).tiny
    for _ in range(iterations):
        torch.mul(pred, scale.unsqueeze(-1), out=weighted)
        weighted.sub_(target).abs_().add_(eps).reciprocal_()  # w = 1 / (|s·pred - target| + eps), bitwise m / (...)
        weighted.mul_(pred)  # w·pred: exactly 0 at invalid entries, as m / (...) · pred is
        numerator = torch.mul(weighted, target, out=product).sum(-1)
        denominator = weighted.mul_(pred).sum(-1)
        scale = torch.where(denominator > 0, numerator / denominator.clamp(min=tiny), scale)
    scale = scale.clamp(min=min_scale)
    return torch.where(count > 0, scale, torch.ones_like(scale))


@outside_autocast
def masked_median(values: torch.Tensor, valid: torch.Tensor | None = None, lower: bool = False) -> torch.Tensor:
    """Median over the last dim of the valid entries. (..., M) -> (...).

    For an even count it is the mean of the two middle values (numpy's median), or the lower one with
    `lower=True` (torch.median's convention, which the official median-scale depth alignment uses).
    Rows without valid entries return NaN. Cost: one sort.
    """
    (values,) = upcast(values)
    if valid is None:
        valid = torch.ones_like(values, dtype=torch.bool)
    valid = valid.expand_as(values)
    count = valid.sum(-1, keepdim=True)
    sorted_values = torch.where(valid, values, torch.full_like(values, float("inf"))).sort(dim=-1).values
    low = ((count - 1).clamp(min=0)) // 2
    high = low if lower else torch.where(count % 2 == 1, low, count.clamp(min=1) // 2)
    median = 0.5 * (sorted_values.gather(-1, low) + sorted_values.gather(-1, high))
    median = torch.where(count > 0, median, torch.full_like(median, float("nan")))
    return median.squeeze(-1)


@outside_autocast
def median_scale(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """s = median(target) / median(pred) over valid entries, lower medians as torch.median (the official
    `scale` depth alignment; CUT3R/MonST3R mono-depth). (..., M) -> (...)."""
    pred, target = upcast(pred, target)
    return masked_median(target, valid, lower=True) / masked_median(pred, valid, lower=True)


@outside_autocast
def l1_scale_shift(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    iterations: int = 50,
    eps: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and shift minimising Σ |s·pred + t - target| (L1) over valid entries. (..., M) -> (s (...), t (...)).

    Solved by IRLS (least squares start, then `iterations` reweighted 2x2 solves with w = 1/(|r| + eps)),
    which converges to the L1 optimum and is exact when target is an affine function of pred. The
    official video-depth code minimises the same objective with Adam (lr 1e-4, <= 1000 steps, from
    s = median ratio, t = 0), which stops short of the optimum whenever a shift is needed; we solve it.
    Rows with fewer than 2 valid entries return (1, 0). Cost: O(iterations · M).
    """
    pred, target = upcast(pred, target)
    mask = torch.ones_like(pred, dtype=torch.bool) if valid is None else valid.expand_as(pred)
    m = mask.to(pred.dtype)
    w = m
    scale = torch.ones(pred.shape[:-1], dtype=pred.dtype, device=pred.device)
    shift = torch.zeros_like(scale)
    for step in range(iterations + 1):
        if step > 0:
            residual = (scale.unsqueeze(-1) * pred + shift.unsqueeze(-1) - target).abs()
            w = m / (residual + eps)
        sw = w.sum(-1, keepdim=True).clamp(min=torch.finfo(pred.dtype).tiny)
        mean_pred = (w * pred).sum(-1, keepdim=True) / sw
        mean_target = (w * target).sum(-1, keepdim=True) / sw
        centred_pred = (pred - mean_pred) * m  # centred normal equations: well conditioned in fp32
        sxx = (w * centred_pred * centred_pred).sum(-1)
        sxy = (w * centred_pred * (target - mean_target)).sum(-1)
        solvable = sxx > 0
        scale = torch.where(solvable, sxy / torch.where(solvable, sxx, torch.ones_like(sxx)), scale)
        shift = torch.where(solvable, (mean_target - scale.unsqueeze(-1) * mean_pred).squeeze(-1), shift)
    enough = m.sum(-1) >= 2
    return torch.where(enough, scale, torch.ones_like(scale)), torch.where(enough, shift, torch.zeros_like(shift))


@outside_autocast
def umeyama_sim3(
    source: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    with_scale: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares similarity (Umeyama 1991): target ≈ s·R·source + t.

    source, target (..., M, 3); weights (..., M) >= 0 (a bool mask works too). Returns scale (...),
    rotation (..., 3, 3) in SO(3) (reflections corrected), translation (..., 3). `with_scale=False` gives the
    rigid (Kabsch) fit with scale 1. Degenerate inputs (all weights 0, or a source of one point)
    return the identity similarity. Cost: O(M) plus one 3x3 SVD.
    """
    source, target = upcast(source, target)
    if weights is None:
        weights = torch.ones(source.shape[:-1], dtype=source.dtype, device=source.device)
    weights = weights.to(source.dtype)
    total = weights.sum(-1, keepdim=True)  # (..., 1)
    safe_total = total.clamp(min=torch.finfo(source.dtype).tiny)
    w = (weights / safe_total).unsqueeze(-1)  # (..., M, 1)
    mean_source = (w * source).sum(-2)
    mean_target = (w * target).sum(-2)
    centred_source = source - mean_source.unsqueeze(-2)
    centred_target = target - mean_target.unsqueeze(-2)
    covariance = (w * centred_target).transpose(-1, -2) @ centred_source  # (..., 3, 3) target x source
    u, singular, vh = torch.linalg.svd(covariance)
    sign = torch.ones_like(singular)
    sign[..., 2] = torch.where(torch.linalg.det(u) * torch.linalg.det(vh) < 0, -1.0, 1.0).to(singular.dtype)
    rotation = (u * sign.unsqueeze(-2)) @ vh
    if with_scale:
        variance = (w.squeeze(-1) * centred_source.square().sum(-1)).sum(-1)
        scale = (singular * sign).sum(-1) / variance.clamp(min=torch.finfo(source.dtype).tiny)
        scale = torch.where(variance > 0, scale, torch.ones_like(scale))
    else:
        scale = torch.ones(source.shape[:-2], dtype=source.dtype, device=source.device)
    empty = total.squeeze(-1) <= 0
    eye = torch.eye(3, dtype=source.dtype, device=source.device).expand_as(rotation)
    rotation = torch.where(empty[..., None, None], eye, rotation)
    scale = torch.where(empty, torch.ones_like(scale), scale)
    translation = mean_target - scale.unsqueeze(-1) * (rotation @ mean_source.unsqueeze(-1)).squeeze(-1)
    return scale, rotation, translation
