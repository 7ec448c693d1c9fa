"""Relative camera pose metrics: RRA@τ, RTA@τ, AUC@τ (reference data-and-benchmarks.md §7, Pi3/G²VLM eval).

For each sequence, all unordered frame pairs i < j are compared: the relative pose E_j·E_i⁻¹ of the
world-to-camera matrices (= inverse(P_j)·P_i for camera_to_world P), for prediction and GT.
- Rotation error: geodesic angle between the relative rotations, in degrees (equal to the official
  quaternion formula arccos(1 - 2(1 - <q̂, q>²)), computed stably).
- Translation error: angle between the relative translation directions with the sign ambiguity removed,
  min(θ, 180° - θ) = arccos|cos θ|. A zero-length translation gives 90° (as the official eps-normalised
  formula does); NaN gives 1e6.
Errors of all pairs of all sequences are pooled (Pi3/G²VLM), then:
- RRA@τ / RTA@τ = % of pairs with rotation / translation error < τ;
- AUC@τ = mean over the 1°-wide bins [0,1), ..., [τ-1, τ] of the cumulative fraction of pairs whose
  max(rotation, translation) error falls in them (numpy.histogram semantics, last bin closed), × 100.
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from g2vlm.geometry.camera import relative_pose
from g2vlm.geometry.rotation import rotation_angle
from g2vlm.geometry.vector import safe_norm


def pair_errors_deg(pred_camera_to_world: torch.Tensor, gt_camera_to_world: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation and translation errors (degrees) of all pairs i < j. (B, N, 4, 4) x2 -> (B, N(N-1)/2) x2."""
    pred = pred_camera_to_world.to(torch.float64)
    gt = gt_camera_to_world.to(torch.float64)
    N = pred.shape[-3]
    i, j = torch.triu_indices(N, N, offset=1, device=pred.device)
    pred_relative = relative_pose(pred[..., j, :, :], pred[..., i, :, :])  # inverse(P_j) · P_i
    gt_relative = relative_pose(gt[..., j, :, :], gt[..., i, :, :])
    rotation_error = torch.rad2deg(rotation_angle(pred_relative[..., :3, :3], gt_relative[..., :3, :3]))
    t_pred, t_gt = pred_relative[..., :3, 3], gt_relative[..., :3, 3]
    cross = safe_norm(torch.cross(t_pred, t_gt, dim=-1))
    dot = (t_pred * t_gt).sum(-1).abs()
    translation_error = torch.rad2deg(torch.atan2(cross, dot))
    degenerate = (safe_norm(t_pred) == 0) | (safe_norm(t_gt) == 0)
    translation_error = torch.where(degenerate, torch.full_like(translation_error, 90.0), translation_error)
    translation_error = torch.nan_to_num(translation_error, nan=1e6)
    rotation_error = torch.nan_to_num(rotation_error, nan=1e6)
    return rotation_error, translation_error


def pose_auc(rotation_error: torch.Tensor, translation_error: torch.Tensor, max_threshold: int) -> torch.Tensor:
    """AUC@max_threshold in [0, 1] from per-pair errors in degrees (official `calculate_auc_np`)."""
    errors = torch.maximum(rotation_error, translation_error).to(torch.float64)
    if errors.numel() == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    edges = torch.arange(1, max_threshold + 1, dtype=torch.float64, device=errors.device)
    below = (errors[None, :] < edges[:, None]).to(torch.float64)
    below[-1] = (errors <= max_threshold).to(torch.float64)  # numpy.histogram closes the last bin
    return below.mean(-1).mean()


class RelativePoseMetrics(Metric):
    """RRA@τ, RTA@τ and AUC@τ (percent) over all frame pairs of all sequences.

    `update(pred_camera_to_world, gt_camera_to_world)` takes (B, N, 4, 4) (or (N, 4, 4)) OpenCV poses.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, thresholds: tuple[int, ...] = (5, 15, 30), **kwargs) -> None:
        super().__init__(**kwargs)
        self.thresholds = tuple(int(t) for t in thresholds)
        self.add_state("rotation_errors", default=[], dist_reduce_fx="cat")
        self.add_state("translation_errors", default=[], dist_reduce_fx="cat")

    def update(self, pred_camera_to_world: torch.Tensor, gt_camera_to_world: torch.Tensor) -> None:
        if pred_camera_to_world.shape != gt_camera_to_world.shape or pred_camera_to_world.shape[-2:] != (4, 4):
            raise ValueError(
                f"RelativePoseMetrics.update: poses must match and be (..., N, 4, 4), got "
                f"{tuple(pred_camera_to_world.shape)} and {tuple(gt_camera_to_world.shape)}"
            )
        rotation_error, translation_error = pair_errors_deg(pred_camera_to_world, gt_camera_to_world)
        self.rotation_errors.append(rotation_error.reshape(-1))
        self.translation_errors.append(translation_error.reshape(-1))

    def compute(self) -> dict[str, torch.Tensor]:
        rotation_error, translation_error = _gathered(self.rotation_errors), _gathered(self.translation_errors)
        out = {}
        for tau in self.thresholds:
            out[f"RRA@{tau}"] = 100.0 * (rotation_error < tau).double().mean() if rotation_error.numel() else torch.tensor(math.nan)
            out[f"RTA@{tau}"] = 100.0 * (translation_error < tau).double().mean() if translation_error.numel() else torch.tensor(math.nan)
            out[f"AUC@{tau}"] = 100.0 * pose_auc(rotation_error, translation_error, tau)
        out["pairs"] = torch.tensor(float(rotation_error.numel()))
        return out


def _gathered(state: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """A "cat" state as one flat tensor: a list of per-update tensors on one process, one tensor once torchmetrics
    has synchronised the ranks (its gather concatenates them); empty when nothing was added."""
    return dim_zero_cat(state) if len(state) else torch.zeros(0)
