"""Alignment solvers: scale (weighted-L1 exact, IRLS-L1, median), scale-and-shift (L1), Sim(3) (Umeyama).

Every solver is batched over leading dims, takes an optional boolean `valid` mask, and returns float32
(float64 for float64 inputs). They are solvers, not losses: callers that train through them run them
under `torch.no_grad()`.
"""

from __future__ import annotations

import numpy as np
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
    (invalid entries zeroed once, two reused buffers, in-place steps: ten passes over M per iteration, rows taken
    in chunks of about IRLS_CHUNK_ENTRIES entries so that the passes run in cache).
    Note that eps = 1e-8 lies below float32 resolution of the residuals, so float32 and float64 runs of the
    same loop differ (by up to ~1 % in s after 10 steps on noisy predictions); the loop itself is the protocol.
    Cost: O(iterations · M).
    """
    pred, target = upcast(pred, target)
    lead, length = pred.shape[:-1], pred.shape[-1]
    rows_total = lead.numel()
    pred, target = pred.reshape(rows_total, length), target.reshape(rows_total, length)
    if pred.shape[0] == 0:
        return torch.ones(lead, dtype=pred.dtype, device=pred.device)
    valid = None if valid is None else valid.expand(*lead, length).reshape(rows_total, length)
    rows = min(pred.shape[0], max(1, IRLS_CHUNK_ENTRIES // max(length, 1)))
    buffers = (pred.new_empty(rows, length), pred.new_empty(rows, length))  # reused by every chunk
    scales = []
    for start in range(0, pred.shape[0], rows):
        chunk = slice(start, start + rows)
        size = pred[chunk].shape[0]
        scales.append(_irls_rows(pred[chunk], target[chunk], None if valid is None else valid[chunk], iterations, eps,
                                 min_scale, buffers[0][:size], buffers[1][:size]))
    return torch.cat(scales).reshape(lead)


IRLS_CHUNK_ENTRIES = 1 << 18  # irls_l1_scale solves rows in chunks of about this many entries: buffers stay in cache


def _irls_rows(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None, iterations: int, eps: float,
               min_scale: float, weighted: torch.Tensor, product: torch.Tensor) -> torch.Tensor:
    """`irls_l1_scale` on rows (R, M), with work buffers weighted, product (R, M). Returns (R,)."""
    if valid is None:
        count = torch.full(pred.shape[:-1], pred.shape[-1], dtype=pred.dtype, device=pred.device)
    else:
        m = valid.to(pred.dtype)
        count = m.sum(-1)
        pred, target = pred * m, target * m  # invalid entries become 0, so they add 0 to both sums below
    mean_pred = pred.sum(-1) / count.clamp(min=1)
    mean_target = target.sum(-1) / count.clamp(min=1)
    scale = mean_target / torch.where(mean_pred == 0, torch.ones_like(mean_pred), mean_pred)
    tiny = torch.finfo(pred.dtype).tiny
    for _ in range(iterations):  # weighted: w, then w·pred, then w·pred·pred; product: w·pred·target
        torch.mul(pred, scale.unsqueeze(-1), out=weighted)
        weighted.sub_(target).abs_().add_(eps).reciprocal_()  # w = 1 / (|s·pred - target| + eps), bitwise m / (...)
        weighted.mul_(pred)  # w·pred: exactly 0 at invalid entries, as m / (...) · pred is
        numerator = torch.mul(weighted, target, out=product).sum(-1)
        denominator = weighted.mul_(pred).sum(-1)
        scale = torch.where(denominator > 0, numerator / denominator.clamp(min=tiny), scale)
    scale = scale.clamp(min=min_scale)
    return torch.where(count > 0, scale, torch.ones_like(scale))


@torch.no_grad()
@outside_autocast
def l1_scale_shift(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and shift minimising Σ |s·pred + t - target| (L1) over valid entries. (..., M) -> (s (...), t (...)).

    Solved exactly (see `_l1_line_fit`), in float64 on the CPU, row by row on the valid entries; returned in the
    input's dtype and device. No gradient (a solver). The official video-depth code minimises the same objective
    with Adam (lr 1e-4, <= 1000 steps, from s = median ratio, t = 0), which stops short of the optimum whenever a
    shift is needed; we solve it.
    Rows with fewer than 2 valid entries return (1, 0); rows whose valid preds are all equal return s = 1 and the
    L1-optimal shift for it. Entries outside `valid` may hold anything.
    Cost per row of n valid entries: a few O(n) passes plus a walk over a small band of points (see below).
    """
    pred, target = upcast(pred, target)
    mask = torch.ones_like(pred, dtype=torch.bool) if valid is None else valid.to(torch.bool).expand_as(pred)
    flat_shape = (pred.shape[:-1].numel(), pred.shape[-1])
    flat_pred, flat_target = pred.reshape(flat_shape), target.reshape(flat_shape)
    every = bool(mask.all())
    flat_pred, flat_target = (t.detach().cpu().numpy() for t in (flat_pred, flat_target))
    flat_mask = mask.reshape(flat_shape).cpu().numpy()
    scale = np.ones(flat_pred.shape[0])
    shift = np.zeros(flat_pred.shape[0])
    for row in range(flat_pred.shape[0]):
        x, y = (flat_pred[row], flat_target[row]) if every else (flat_pred[row][flat_mask[row]], flat_target[row][flat_mask[row]])
        if x.size >= 2:  # float64 row by row: small buffers, reused
            scale[row], shift[row] = _l1_line_fit(x.astype(np.float64), y.astype(np.float64))
    shape = pred.shape[:-1]
    return (torch.from_numpy(scale).to(pred).reshape(shape), torch.from_numpy(shift).to(pred).reshape(shape))


def _l1_line_fit(x: np.ndarray, y: np.ndarray, sample: int = 2048, band_fraction: int = 16) -> tuple[float, float]:
    """argmin over (s, t) of F = Σ |s·x + t - y| for 1-D float64 x, y with at least 2 entries. Returns (s, t).

    Up to 2·sample points: `_l1_line_walk` on all of them from an IRLS estimate. More points:
    1. A reference line: the exact fit of every (n // sample)-th point (close to the optimum); its residuals r0.
    2. The points with the smallest |r0| (about n / band_fraction of them) are kept; every other point k enters with
       its fixed sign: |r_k| >= sign(r0_k)·r_k, with equality while the line keeps k on its side. So
       F >= G := Σ_band |r| + Σ_others sign(r0_k)·r_k (a linear term), with equality where no other point
       changes side.
    3. G is minimised exactly by `_l1_line_walk`. If its minimiser L* keeps every other point on its side,
       F(L*) = G(L*) <= G <= F everywhere: L* is the optimum of F. Otherwise L* becomes the reference line and,
       from the second miss on, the band also grows x4; a band of all points is the plain problem.
    Rows whose x are all equal: s = 1 and t = the lower median of y - x (an optimum for s = 1).
    """
    if bool((x == x[0]).all()):
        return 1.0, float(np.sort(y - x)[(x.size - 1) // 2])
    if x.size <= 2 * sample:
        slope, intercept = _irls_line(x, y, iterations=4)
        return _l1_line_walk(x, y, 0.0, 0.0, slope, int(np.abs(slope * x + intercept - y).argmin()))
    stride = x.size // sample
    x_sample, y_sample = x[::stride], y[::stride]
    slope, intercept = _l1_line_fit(x_sample, y_sample, sample, band_fraction)
    fraction = 1.0 / band_fraction
    for miss in range(x.size):
        residual = slope * x + intercept - y
        distance = np.abs(residual)
        if fraction >= 1:
            return _l1_line_walk(x, y, 0.0, 0.0, slope, int(distance.argmin()))
        # the band: |r0| up to the `fraction` quantile of the sample's |r0| (any band is exact; this one is cheap)
        threshold = np.quantile(np.abs(slope * x_sample + intercept - y_sample), fraction, method="lower")
        inside = distance <= threshold
        sign = np.sign(residual)  # +-1 outside the band (|r0| > threshold >= 0), 0 inside it
        sign[inside] = 0.0
        fit = _l1_line_walk(x[inside], y[inside], float(sign @ x), float(sign.sum()), slope,
                            int(distance[inside].argmin()))
        if fit is not None and bool(np.all(sign * (fit[0] * x + fit[1] - y) >= 0)):
            return fit
        if fit is not None:
            slope, intercept = fit
        if fit is None or miss >= 1:
            fraction *= 4
    raise AssertionError("unreachable: the band reaches all points")


def _l1_line_walk(
    x: np.ndarray, y: np.ndarray, linear_slope: float, linear_shift: float, slope: float, pivot: int,
    max_steps: int = 1000,
) -> tuple[float, float] | None:
    """Exact argmin over lines (s, t) of G = Σ |s·x_k + t - y_k| + linear_slope·s + linear_shift·t, starting from
    the line through point `pivot` with slope `slope`. None when G is unbounded below (or every point has the
    pivot's x).

    Rotating the line about one of its data points j (t = y_j - s·x_j) changes G as
    Σ_k |x_k - x_j|·|s - σ_k| + (linear_slope - linear_shift·x_j)·s + const with σ_k = (y_k - y_j) / (x_k - x_j):
    a weighted median problem whose minimiser σ_i is the slope towards a point i. The walk (Wesolowsky's direct
    descent) moves to that line while it strictly lowers G. At a line through the points Z (two or more distinct
    x), G is linear on each cone of directions between the rotations about the points of Z, so the line is the
    global minimum (convexity) when the derivatives of every such rotation are >= 0 both ways:
        |Σ_{k∉Z} sign(r_k)·(x_k - x_j) + linear_slope - linear_shift·x_j| <= Σ_{k∈Z} |x_k - x_j|   for all j ∈ Z,
    r the residuals s·x + t - y. The walk checks that for all of Z at once (Z is any number of points: ties,
    quantised data, exactly collinear data), and otherwise rotates about a point where it fails. "On the line" means
    within 1e-12 of the data's magnitude, and the sums are compared with a 1e-12 relative slack (flat optima
    have exact ties).
    """
    magnitude = float(np.abs(x).max())
    tolerance = 1e-12 * (float(np.abs(y).max()) + magnitude * (abs(slope) + 1))
    slack = 1e-12 * (x.size * magnitude + abs(linear_slope) + abs(linear_shift) * magnitude)
    for step in range(max_steps):
        dx, dy = x - x[pivot], y - y[pivot]
        if step > 0:  # is the current line (through the pivot) optimal?
            residual = slope * dx - dy
            on_line = np.abs(residual) <= tolerance
            signs = np.where(on_line, 0.0, np.sign(residual))
            line_x = np.sort(x[on_line])
            distinct = np.unique(line_x)
            before = np.searchsorted(line_x, distinct, side="left")
            after = np.searchsorted(line_x, distinct, side="right")
            prefix = np.concatenate([[0.0], np.cumsum(line_x)])
            spread = (distinct * before - prefix[before]) + (prefix[-1] - prefix[after] - distinct * (line_x.size - after))
            imbalance = float(signs @ x) - float(signs.sum()) * distinct + linear_slope - linear_shift * distinct
            failing = np.flatnonzero(np.abs(imbalance) > spread + slack)
            if failing.size == 0:
                return slope, float(y[pivot] - slope * x[pivot])
            if not np.any(distinct[failing] == x[pivot]):  # rotate about a point of the line where it fails
                pivot = int(np.flatnonzero(on_line & (x == distinct[failing[0]]))[0])
                dx, dy = x - x[pivot], y - y[pivot]
        weights = np.abs(dx)
        total = float(weights.sum())
        linear = linear_slope - linear_shift * float(x[pivot])
        if abs(linear) > total or total == 0:
            return None  # G decreases without bound as the line turns about the pivot (or no point holds it)
        with np.errstate(divide="ignore", invalid="ignore"):
            slopes = dy / dx  # ±inf / NaN where dx == 0 (weight 0)
        pivot = _weighted_median_index(slopes, weights, 0.5 * (total - linear), slope)
        slope = float(slopes[pivot])
    raise RuntimeError(f"_l1_line_walk: the L1 line walk did not settle in {max_steps} steps")


def _weighted_median_index(values: np.ndarray, weights: np.ndarray, need: float, guess: float) -> int:
    """Index of the smallest value (among weights > 0) whose cumulative weight in ascending order reaches `need`.

    Only the values in a window around `guess` are sorted; the window widens (x8) until it holds the answer.
    Values of zero weight may be non-finite."""
    width = 1e-3 * abs(guess) + 1e-12
    while True:
        low, high = guess - width, guess + width
        below = float(weights[values < low].sum())
        inside = np.flatnonzero((values >= low) & (values <= high) & (weights > 0))
        if (below < need <= below + float(weights[inside].sum())) or not np.isfinite(width * 8 + abs(guess)):
            break
        width *= 8
    order = inside[np.argsort(values[inside], kind="stable")]
    cumulative = below + np.cumsum(weights[order])
    return int(order[min(int(np.searchsorted(cumulative, need)), order.size - 1)])


def _irls_line(x: np.ndarray, y: np.ndarray, iterations: int) -> tuple[float, float]:
    """Approximate L1 line (slope, intercept) by IRLS from least squares: the starting point of the exact fit."""
    weights = np.ones_like(x)
    slope, intercept = 1.0, 0.0
    for _ in range(iterations + 1):
        total = weights.sum()
        mean_x, mean_y = weights @ x / total, weights @ y / total
        centred_x = x - mean_x
        spread = weights @ (centred_x * centred_x)
        if spread <= 0:
            break
        slope = float(weights @ (centred_x * (y - mean_y)) / spread)
        intercept = float(mean_y - slope * mean_x)
        weights = 1.0 / (np.abs(slope * x + intercept - y) + 1e-12)
    return slope, intercept


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
