"""Depth metrics with the official monocular / video depth protocol (reference data-and-benchmarks.md §5).

One `update` call takes a batch of *alignment units*: the leading dim of the inputs. For monocular depth a
unit is one image (inputs (B, H, W)); for video depth a unit is one whole sequence (inputs (B, N, H, W)),
which gets one alignment. Per unit: the prediction is resized to the GT resolution if needed, the valid set is
GT > 0 (and < max_depth_m), the valid pixels are gathered in row-major order, the prediction is aligned,
optionally clipped, and the metrics are computed over them. Units are aggregated weighted by their valid-pixel
counts, as the official code does.

Fidelity to the official code (G2VLM `eval_code/recons/{monodepth,videodepth}/eval.py`, `utils/depth.py`):
- resize: `cv2.resize(pred, (W, H), interpolation=cv2.INTER_CUBIC)` per frame, with OpenCV itself (Keys' cubic
  a = -0.75, half-pixel centres, edge replication, no antialiasing). Torch's bicubic is the same filter but
  places the taps in float32 and differs by up to ~2e-4 m on textured predictions; a float64 torch bicubic
  rounded to float32 is within 3 ulps of OpenCV, but not bitwise, and the IRLS scale below amplifies ulps.
- every unit goes through the official operations in the official order, on the gathered valid pixels, the
  prediction in its own dtype (float32) and the GT in the dtype its reader returns (float64 for Bonn and KITTI,
  float32 for Sintel and NYU-v2): the IRLS scale (start mean(gt) / mean(pred), ten steps of
  w = 1 / (|s·pred - gt| + 1e-8), s = Σ w·pred·gt / Σ w·pred², clamp >= 1e-3) is chaotic in float32 — eps lies
  below the residuals' resolution, so a pixel whose residual rounds to 0 takes weight 1e8 — and a different
  summation order or dtype moves Abs Rel by 1e-5 to 1e-3 relative on noisy predictions. Doing the same
  operations makes ours bitwise the official on the same device (the official runs Sintel, Bonn and KITTI on
  the GPU, NYU-v2 on the CPU; GPU and CPU sums differ, so a run on another device than the official's may
  differ by that much: an uncertainty of the published numbers themselves). OpenCV builds differ too: 4.10 and
  5.1 resize to results a few ulps apart, which moved the official Abs Rel by 3e-4 relative on a 436×1024
  Sintel-like noisy case. δ thresholds are means of float32 0/1 values, as officially.
- video (`scale_shift`): the official L1 fit by Adam (lr 1e-4, at most 1000 steps, stop when the loss changes by
  less than 1e-6, from s = median(gt) / median(pred), t = 0), in the prediction's dtype, on the unit's valid
  pixels in row-major order. Adam moves s and t by about lr per step, so a sequence that needs a shift larger
  than ~0.1 m stays partly unaligned: a quirk of the published protocol, kept for comparability.
  `scale_shift_exact` is the exact L1 optimum instead (not comparable with published tables).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torchmetrics import Metric

from g2vlm.geometry.alignment import l1_scale_shift

Alignment = Literal["scale", "median", "scale_shift", "scale_shift_exact", "none"]
ALIGNMENTS = ("scale", "median", "scale_shift", "scale_shift_exact", "none")

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
            `scale_shift` — the official video-depth L1 scale and shift by Adam (see the module docstring);
            `scale_shift_exact` — the exact L1-optimal scale and shift (not comparable with published tables);
            `none` — metric depth.
        max_depth_m: GT depths at or above it are invalid (None: no cap).
        clip_max_m: aligned predictions are clipped to at most this (Sintel: 70).
    Log and ratio metrics clamp the aligned prediction at >= 1e-5 (as the official code). Non-finite GT or
    prediction entries are invalid (the official code has none in its inputs).
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
        if alignment not in ALIGNMENTS:
            raise ValueError(f"DepthMetrics: unknown alignment {alignment!r}")
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
            raise ValueError(f"DepthMetrics.for_dataset: no depth caps for dataset {dataset!r}; known: {sorted(DEPTH_CAPS_M)}")
        max_depth_m, clip_max_m = DEPTH_CAPS_M[dataset.lower()]
        return cls(alignment=alignment, max_depth_m=max_depth_m, clip_max_m=clip_max_m, **kwargs)

    def update(self, pred_depth: torch.Tensor, gt_depth: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """pred_depth (B, ..., h, w) and gt_depth (B, ..., H, W) in metres; valid (B, ..., H, W) optional extra mask.
        float64 inputs stay float64, others become float32 (the official dtypes, see the module docstring)."""
        if pred_depth.shape[:-2] != gt_depth.shape[:-2]:
            raise ValueError(
                f"DepthMetrics.update: pred_depth {tuple(pred_depth.shape)} and gt_depth {tuple(gt_depth.shape)} differ before H, W"
            )
        pred_depth = pred_depth.to(_float_dtype(pred_depth))
        gt_depth = gt_depth.to(_float_dtype(gt_depth))
        if pred_depth.shape[-2:] != gt_depth.shape[-2:]:
            pred_depth = resize_bicubic_opencv(pred_depth, gt_depth.shape[-2:])
        B = gt_depth.shape[0]
        pred_rows, gt_rows = pred_depth.reshape(B, -1), gt_depth.reshape(B, -1)
        valid_rows = None if valid is None else valid.to(torch.bool).expand_as(gt_depth).reshape(B, -1)
        for row in range(B):
            gt = gt_rows[row]
            mask = gt > 0
            if self.max_depth_m is not None:
                mask &= gt < self.max_depth_m
            mask &= torch.isfinite(gt) & torch.isfinite(pred_rows[row])
            if valid_rows is not None:
                mask &= valid_rows[row]
            pred, gt = pred_rows[row][mask], gt[mask]
            if gt.numel() == 0:
                self.skipped_units += 1
                continue
            aligned = self._align(pred, gt)
            if self.clip_max_m is not None:
                aligned = torch.clamp(aligned, max=self.clip_max_m)
            self.weighted_sums += official_depth_metrics(aligned, gt).to(torch.float64) * gt.numel()
            self.pixels += gt.numel()
            self.units += 1

    def _align(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """The aligned prediction of one unit's valid pixels pred (M,) (its own dtype), gt (M,), with the official
        operations (the result's dtype is theirs: promoted where the official code promotes)."""
        if self.alignment == "scale":
            return official_irls_scale(pred, gt) * pred
        if self.alignment == "median":
            return pred * (torch.median(gt) / torch.median(pred))
        if self.alignment == "scale_shift":
            scale, shift = adam_l1_scale_shift(pred, gt)
            return scale * pred + shift
        if self.alignment == "scale_shift_exact":
            scale, shift = l1_scale_shift(pred, gt)
            return scale * pred + shift
        return pred

    def compute(self) -> dict[str, torch.Tensor]:
        values = self.weighted_sums / self.pixels.clamp(min=1)
        out = {name: values[i].float() for i, name in enumerate(METRIC_NAMES)}
        out["valid_pixels"] = self.pixels
        out["skipped_units"] = self.skipped_units
        return out


def _float_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def resize_bicubic_opencv(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., h, w) -> (..., H, W): `cv2.resize(frame, (W, H), interpolation=cv2.INTER_CUBIC)` on every frame, the
    official evaluation's resize (float32 and float64 keep their dtype). Runs on the CPU; returned on the input's
    device."""
    import cv2

    frames = depth.detach().reshape(-1, *depth.shape[-2:]).cpu().numpy()
    resized = [cv2.resize(frame, (int(size[1]), int(size[0])), interpolation=cv2.INTER_CUBIC) for frame in frames]
    return torch.from_numpy(np.stack(resized)).reshape(*depth.shape[:-2], *size).to(depth.device)


def official_irls_scale(pred: torch.Tensor, gt: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """The official `align_with_scale` branch on one unit's valid pixels pred (M,), gt (M,): the same operations in
    the same order (see the module docstring; `g2vlm.geometry.alignment.irls_l1_scale` is the same loop over
    masked rows, equal in exact arithmetic but summed in another order). Returns s (0-dim, promoted dtype)."""
    scale = torch.nanmean(gt) / torch.nanmean(pred)
    for _ in range(iterations):
        weights = 1.0 / ((scale * pred - gt).abs() + 1e-8)
        scale = torch.sum(weights * pred * gt) / torch.sum(weights * pred**2)
    return scale.clamp(min=1e-3)


@torch.no_grad()
def adam_l1_scale_shift(pred: torch.Tensor, gt: torch.Tensor, lr: float = 1e-4, max_iterations: int = 1000,
                        tolerance: float = 1e-6) -> tuple[float, float]:
    """The official video-depth alignment (`absolute_value_scaling2`): minimise Σ |s·pred + t - gt| with Adam.

    pred, gt (M,): one unit's valid pixels in row-major order, pred in its own dtype. s starts at
    median(gt) / median(pred) (lower medians, as torch.median), t at 0; s and t are tensors of pred's dtype; Adam(lr)
    for at most `max_iterations` steps, stopping after a step whose loss differs from the previous step's by less
    than `tolerance`. Returns (s, t) as Python floats.
    """
    initial = (torch.median(gt) / torch.median(pred)).item()
    scale = torch.tensor([initial], dtype=pred.dtype, device=pred.device, requires_grad=True)
    shift = torch.tensor([0.0], dtype=pred.dtype, device=pred.device, requires_grad=True)
    optimizer = torch.optim.Adam([scale, shift], lr=lr)
    previous = None
    with torch.enable_grad():
        for _ in range(max_iterations):
            optimizer.zero_grad()
            loss = torch.sum(torch.abs(scale * pred + shift - gt))
            loss.backward()
            optimizer.step()
            if previous is not None and torch.abs(previous - loss) < tolerance:
                break
            previous = loss.item()
    return scale.item(), shift.item()


def official_depth_metrics(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """The official metrics of one unit's aligned valid pixels pred (M,), gt (M,), in its operations and order.
    Returns (7,) in the order of METRIC_NAMES."""
    error = pred - gt
    abs_rel = torch.mean(torch.abs(error) / gt)
    sq_rel = torch.mean((error**2) / gt)
    rmse = torch.sqrt(torch.mean(error**2))
    pred = torch.clamp(pred, min=1e-5)
    log_rmse = torch.sqrt(torch.mean((torch.log(pred) - torch.log(gt)) ** 2))
    ratio = torch.maximum(pred / gt, gt / pred)
    deltas = [torch.mean((ratio < 1.25**power).float()) for power in (1, 2, 3)]
    return torch.stack([value.to(torch.float64) for value in (abs_rel, sq_rel, rmse, log_rmse, *deltas)])
