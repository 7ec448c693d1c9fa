"""Depth metrics with the official monocular / video depth protocol (reference data-and-benchmarks.md §5).

One `update` call takes a batch of *alignment units*: the leading dim of the inputs. For monocular depth a
unit is one image (inputs (B, H, W)); for video depth a unit is one whole sequence (inputs (B, N, H, W)),
which gets one alignment. Per unit: the prediction is resized to the GT resolution (bicubic) if needed, the
valid set is GT > 0 (and < max_depth_m), the prediction is aligned, optionally clipped, and the metrics are
computed over the unit's valid pixels. Units are aggregated weighted by their valid-pixel counts, as the
official code does.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from g2vlm.geometry.alignment import irls_l1_scale, l1_scale_shift, median_scale

Alignment = Literal["scale", "median", "scale_shift", "none"]

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "log_rmse", "delta_1", "delta_2", "delta_3")

METRIC_CHUNK_ENTRIES = 1 << 18  # pixels per chunk of the metric pass (its buffers stay in cache)

# Per-dataset caps of the official evaluation: (max GT depth for validity, clip of aligned predictions), metres.
DEPTH_CAPS_M: dict[str, tuple[float | None, float | None]] = {
    "sintel": (70.0, 70.0),
    "bonn": (70.0, None),
    "kitti": (None, None),
    "nyu": (None, None),
}


class DepthMetrics(Metric):
    """Abs Rel, Sq Rel, RMSE, log-RMSE, δ<1.25, δ<1.25², δ<1.25³ after alignment.

    Args:
        alignment: `scale` — IRLS-L1 scale (the official default, labelled "median-scale" in its configs);
            `median` — median(gt)/median(pred) (lower medians, as torch.median; the official `scale` label);
            `scale_shift` — L1-optimal scale and shift (video depth); `none` — metric depth.
        max_depth_m: GT depths at or above it are invalid (None: no cap).
        clip_max_m: aligned predictions are clipped to at most this (Sintel: 70).
    Log and ratio metrics clamp the aligned prediction at >= 1e-5 (as the official code).
    """

    full_state_update = False
    higher_is_better = None

    def __init__(
        self,
        alignment: Alignment = "scale",
        max_depth_m: float | None = None,
        clip_max_m: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if alignment not in ("scale", "median", "scale_shift", "none"):
            raise ValueError(f"metrics/depth.py: unknown alignment {alignment!r}")
        self.alignment = alignment
        self.max_depth_m = max_depth_m
        self.clip_max_m = clip_max_m
        self.add_state("weighted_sums", default=torch.zeros(len(METRIC_NAMES), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pixels", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("units", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("skipped_units", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    @classmethod
    def for_dataset(cls, dataset: str, alignment: Alignment = "scale", **kwargs) -> DepthMetrics:
        """Metrics with the official caps of `dataset` (sintel, bonn, kitti, nyu)."""
        if dataset.lower() not in DEPTH_CAPS_M:
            raise ValueError(f"metrics/depth.py: no depth caps for dataset {dataset!r}; known: {sorted(DEPTH_CAPS_M)}")
        max_depth_m, clip_max_m = DEPTH_CAPS_M[dataset.lower()]
        return cls(alignment=alignment, max_depth_m=max_depth_m, clip_max_m=clip_max_m, **kwargs)

    def update(self, pred_depth: torch.Tensor, gt_depth: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """pred_depth (B, ..., h, w) and gt_depth (B, ..., H, W) in metres; valid (B, ..., H, W) optional extra mask."""
        pred_depth = pred_depth.to(torch.float32)
        gt_depth = gt_depth.to(torch.float32)
        if pred_depth.shape[:-2] != gt_depth.shape[:-2]:
            raise ValueError(
                f"metrics/depth.py: pred_depth {tuple(pred_depth.shape)} and gt_depth {tuple(gt_depth.shape)} differ before H, W"
            )
        if pred_depth.shape[-2:] != gt_depth.shape[-2:]:
            flat = pred_depth.reshape(-1, 1, *pred_depth.shape[-2:])
            flat = F.interpolate(flat, size=gt_depth.shape[-2:], mode="bicubic", align_corners=False)
            pred_depth = flat.reshape(*gt_depth.shape)
        B = gt_depth.shape[0]
        pred = pred_depth.reshape(B, -1)
        gt = gt_depth.reshape(B, -1)
        if valid is not None:
            valid = valid.to(torch.bool).expand_as(gt_depth).reshape(B, -1)
        pred, gt, mask = _finite_and_valid(pred, gt, self.max_depth_m, valid)
        if mask is None:  # every pixel valid
            count = torch.full((B,), float(gt.shape[-1]), dtype=torch.float64, device=gt.device)
        else:
            count = mask.sum(-1, dtype=torch.float64)
        scale, shift = self._alignment(pred, gt, mask)
        # aligned predictions and metrics in chunks of rows whose three buffers stay in cache (and are reused:
        # first touches of fresh large buffers cost as much as several passes over them)
        rows = max(1, min(B, METRIC_CHUNK_ENTRIES // max(gt.shape[-1], 1)))
        buffers = gt.new_empty((3, rows, gt.shape[-1]))
        per_unit = gt.new_empty((B, len(METRIC_NAMES)))
        for start in range(0, B, rows):
            chunk = slice(start, start + rows)
            size = gt[chunk].shape[0]
            aligned = buffers[0, :size]
            if scale is None:
                aligned.copy_(pred[chunk])
            else:
                torch.mul(pred[chunk], scale[chunk, None], out=aligned)
            if shift is not None:
                aligned.add_(shift[chunk, None])
            if self.clip_max_m is not None:
                aligned.clamp_(max=self.clip_max_m)
            per_unit[chunk] = _depth_metrics(aligned, gt[chunk], None if mask is None else mask[chunk],
                                             (buffers[1, :size], buffers[2, :size]))
        used = count > 0
        self.weighted_sums += (per_unit[used].double() * count[used, None]).sum(0)
        self.pixels += count.sum()
        self.units += used.sum().double()
        self.skipped_units += (~used).sum().double()

    def _alignment(
        self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Per-unit scale (B,) and shift (B,) of the alignment (None: not part of it)."""
        if self.alignment == "scale":
            return irls_l1_scale(pred, gt, mask), None
        if self.alignment == "median":
            return median_scale(pred, gt, None if mask is None else mask.to(torch.bool)), None
        if self.alignment == "scale_shift":
            return l1_scale_shift(pred, gt, None if mask is None else mask.to(torch.bool))
        return None, None

    def compute(self) -> dict[str, torch.Tensor]:
        values = self.weighted_sums / self.pixels.clamp(min=1)
        out = {name: values[i].float() for i, name in enumerate(METRIC_NAMES)}
        out["valid_pixels"] = self.pixels
        out["skipped_units"] = self.skipped_units
        return out


def _finite_and_valid(
    pred: torch.Tensor, gt: torch.Tensor, max_depth_m: float | None, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(B, M) x2 -> pred and gt with every entry finite (non-finite ones replaced; they are invalid) and the float
    0/1 mask (B, M) of GT > 0, GT < max_depth_m (if set), both finite, and `valid` (if given); mask None when every
    entry is valid (decided by reductions, without touching a new buffer).

    Float masks: bool tensors cost several times more per element on the CPU."""
    finite_pred = bool(torch.isfinite(pred.sum()))  # a sum of finite values can overflow: then the slow path
    finite_gt = bool(torch.isfinite(gt.sum()))
    if (valid is None and finite_pred and finite_gt and gt.numel() > 0 and bool(gt.min() > 0)
            and (max_depth_m is None or bool(gt.max() < max_depth_m))):
        return pred, gt, None
    mask = torch.gt(gt, 0, out=torch.empty_like(gt))  # NaN fails
    if max_depth_m is not None or not finite_gt:
        mask.mul_(gt < (float("inf") if max_depth_m is None else max_depth_m))  # inf fails
    if valid is not None:
        mask.mul_(valid)
    if not finite_pred:
        finite = torch.isfinite(pred)
        mask.mul_(finite)
        pred = torch.where(finite, pred, torch.zeros_like(pred))
    if not finite_gt:  # NaN or inf GT entries (already invalid) are replaced for the arithmetic
        gt = torch.where(torch.isfinite(gt), gt, torch.zeros_like(gt))
    return pred, gt, mask


def _depth_metrics(
    pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None, work: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """Per-unit metrics over the valid entries. pred, gt (B, M) finite; mask (B, M) float 0/1 or None (all valid);
    work: two (B, M) buffers to overwrite. Returns (B, 7) in the order of METRIC_NAMES. Consumes `pred`.

    Invalid entries are set to pred = gt = 1 (zero error, zero log ratio, ratio 1) so the row sums need no masking:
    every valid entry sees the same float operations as the textbook masked means, and the sums are bitwise theirs.
    """
    first, second = work
    if mask is None:
        count = torch.full(pred.shape[:-1], float(pred.shape[-1]), dtype=pred.dtype, device=pred.device)
    else:
        count = mask.sum(-1).clamp(min=1)
        outside = torch.neg(mask, out=first).add_(1)  # 1 - mask
        pred = torch.addcmul(outside, pred, mask, out=pred)  # pred where valid, 1 elsewhere (exact: m is 0 or 1)
        gt = torch.addcmul(outside, gt, mask)
    error = torch.sub(pred, gt, out=first).abs_()
    abs_rel = torch.div(error, gt, out=second).sum(-1) / count
    error.mul_(error)  # squared error
    rmse = (error.sum(-1) / count).sqrt()
    sq_rel = torch.div(error, gt, out=second).sum(-1) / count
    clamped = pred.clamp_(min=1e-5)
    log_difference = torch.log(clamped, out=second).sub_(torch.log(gt, out=first))
    log_rmse = (log_difference.square_().sum(-1) / count).sqrt()
    ratio = torch.maximum(torch.div(clamped, gt, out=second), torch.div(gt, clamped, out=first), out=second)
    deltas = []
    for power in (1, 2, 3):
        below = torch.lt(ratio, 1.25**power, out=first)  # float 0/1
        if mask is not None:
            below.mul_(mask)
        deltas.append(below.sum(-1) / count)
    return torch.stack([abs_rel, sq_rel, rmse, log_rmse, *deltas], dim=-1)
