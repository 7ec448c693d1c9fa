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
        mask = (gt_depth > 0) & torch.isfinite(gt_depth) & torch.isfinite(pred_depth)
        if self.max_depth_m is not None:
            mask &= gt_depth < self.max_depth_m
        if valid is not None:
            mask &= valid.to(torch.bool)
        B = gt_depth.shape[0]
        pred = pred_depth.reshape(B, -1)
        gt = gt_depth.reshape(B, -1)
        mask = mask.reshape(B, -1)
        count = mask.sum(-1)
        aligned = self._align(pred, gt, mask)
        if self.clip_max_m is not None:
            aligned = aligned.clamp(max=self.clip_max_m)
        per_unit = _depth_metrics(aligned, gt, mask)  # (B, 7)
        used = count > 0
        self.weighted_sums += (per_unit[used].double() * count[used, None].double()).sum(0)
        self.pixels += count.sum().double()
        self.units += used.sum().double()
        self.skipped_units += (~used).sum().double()

    def _align(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.alignment == "scale":
            return irls_l1_scale(pred, gt, mask)[:, None] * pred
        if self.alignment == "median":
            return median_scale(pred, gt, mask)[:, None] * pred
        if self.alignment == "scale_shift":
            scale, shift = l1_scale_shift(pred, gt, mask)
            return scale[:, None] * pred + shift[:, None]
        return pred

    def compute(self) -> dict[str, torch.Tensor]:
        values = self.weighted_sums / self.pixels.clamp(min=1)
        out = {name: values[i].float() for i, name in enumerate(METRIC_NAMES)}
        out["valid_pixels"] = self.pixels
        out["skipped_units"] = self.skipped_units
        return out


def _depth_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-unit metrics over masked entries. (B, M) x3 -> (B, 7) in the order of METRIC_NAMES."""
    m = mask.to(pred.dtype)
    count = m.sum(-1).clamp(min=1)
    safe_gt = torch.where(mask, gt, torch.ones_like(gt))

    def mean(x):
        return (torch.where(mask, x, torch.zeros_like(x))).sum(-1) / count

    error = pred - gt
    abs_rel = mean(error.abs() / safe_gt)
    sq_rel = mean(error.square() / safe_gt)
    rmse = mean(error.square()).sqrt()
    clamped = pred.clamp(min=1e-5)
    log_rmse = mean((clamped.log() - safe_gt.log()).square()).sqrt()
    ratio = torch.maximum(clamped / safe_gt, safe_gt / clamped)
    deltas = [mean((ratio < 1.25**power).to(pred.dtype)) for power in (1, 2, 3)]
    return torch.stack([abs_rel, sq_rel, rmse, log_rmse, *deltas], dim=-1)
