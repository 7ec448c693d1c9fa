"""The G²VLM visual-geometry loss (reference `g2vlm-official.md` §2; π³'s `Pi3Loss`), in fp32.

    L_VG = λ_local·L_local + λ_normal·L_normal + λ_global·L_global + λ_camera·(λ_trans·L_trans + L_rot)

Official defaults: λ_local = λ_normal = λ_global = 1, λ_camera = 0.2, λ_trans = 100 (the paper's
supplementary says λ_trans = 200; the released code uses 100, which is our default).

Ground truth: GT points (unprojected from depth_m and K) and GT camera_to_world are moved into frame 0's
camera frame and divided by the mean distance of the valid GT points from the origin. Prediction: local
points, translations and global points are divided by the mean norm of the predicted local points over the
GT-valid pixels (with gradient, as the reference). The optimal scale s* (per sample, no gradient, fp32)
is the weighted-L1 optimum (ROE) between the normalised predicted and GT local points at 4096 valid pixels
resampled with nearest indexing, weights 1/z (z clamped from below at 0.1 × the frame's mean valid depth).

Samples without depth (`has_depth` false) get the camera loss only; GT and predicted translations are
then normalised by the mean distance of the cameras from camera 0 and s* = 1. A sample with depth but fewer
than `min_valid_pixels` valid pixels contributes an exact zero to every term (the graph is kept, so every
rank runs the same backward). Each term is a mean pooled over the batch (pixels, quads or camera pairs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from g2vlm.geometry.alignment import weighted_l1_scale
from g2vlm.geometry.camera import se3_inverse, transform_points, unproject_depth
from g2vlm.geometry.normals import (
    depth_edges,
    quad_triangle_masks,
    quad_triangle_normals,
)
from g2vlm.geometry.precision import upcast
from g2vlm.geometry.rotation import rotation_angle
from g2vlm.geometry.vector import cross, safe_norm

if TYPE_CHECKING:
    from g2vlm.model.outputs import GeometryOutput

# Datasets whose GT is good enough for the normal loss (the official "high/middle quality" list).
NORMAL_LOSS_DATASETS: tuple[str, ...] = (
    "gtasfm",
    "hypersim",
    "matrixcity",
    "tartanair",
    "unreal4k",
    "nav_20w",
    "blendedmvs",
    "scannet",
    "scannetpp",
    "taskonomy",
    "dl3dv",
    "omniworld",
    "mapfree",
    "ariasyn",
    "arkit_high",
)


@dataclass
class GeometryTarget:
    """Ground truth of B clips of N views, the loss's target in both stages.

    depth_m: (B, N, H, W) z-depth in metres, 0 where invalid. valid: (B, N, H, W) bool. K: (B, N, 3, 3) pixel
    intrinsics. camera_to_world: (B, N, 4, 4) OpenCV poses in any world frame. has_depth: (B,) bool; false: the
    camera loss only. dataset_names: B dataset labels (the normal-loss gate).
    """

    depth_m: torch.Tensor
    valid: torch.Tensor
    K: torch.Tensor
    camera_to_world: torch.Tensor
    has_depth: torch.Tensor
    dataset_names: list[str]

    @classmethod
    def of(cls, batch) -> GeometryTarget:
        """The target a batch with these fields holds (a `MultiViewBatch`: its derived `depth_m` and `valid`)."""
        return cls(batch.depth_m, batch.valid, batch.K, batch.camera_to_world, batch.has_depth, list(batch.dataset_names))


@dataclass
class GeometryLossOutput:
    """The weighted total and every term unweighted (scalars), plus what was solved and counted."""

    total: torch.Tensor
    local_points: torch.Tensor
    normal: torch.Tensor
    global_points: torch.Tensor
    camera_translation: torch.Tensor
    camera_rotation: torch.Tensor
    scale: torch.Tensor  # (B,) s*, detached
    num_valid_pixels: torch.Tensor  # pixels that entered the point terms (for cross-rank normalisation)
    num_camera_pairs: torch.Tensor

    def terms(self) -> dict[str, torch.Tensor]:
        """The unweighted terms and the total, for logging."""
        return {
            "total": self.total,
            "local_points": self.local_points,
            "normal": self.normal,
            "global_points": self.global_points,
            "camera_translation": self.camera_translation,
            "camera_rotation": self.camera_rotation,
        }


class GeometryLoss(nn.Module):
    """G²VLM geometry loss. Every weight is an argument with the official default.

    Args:
        local_weight: λ_local on the 1/z-weighted L1 of local points.
        normal_weight: λ_normal on the MoGe-style normal loss (paper λ_normal = 1.0).
        global_weight: λ_global on the global-point term (weight 1 in code; absent from the paper's eq. 2).
        camera_weight: λ_camera (paper and code: 0.2).
        translation_weight: λ_trans inside the camera loss. Code 100 (default); the paper says 200.
        huber_delta: δ of the Huber loss on relative translations (0.1).
        scale_points: points resampled for the s* solve (4096).
        depth_clamp_ratio: z is clamped from below at this × the frame's mean valid GT depth for 1/z (0.1).
        normal_datasets: dataset names (case-insensitive) that get the normal loss. With none listed, or
            normal_weight 0, the normal term is an exact 0 and is not computed.
        normal_edge_rtol: relative depth-edge tolerance; triangles touching GT depth edges are skipped (0.03).
        min_valid_pixels: a sample with depth needs at least this many valid pixels to contribute (100).
    """

    def __init__(
        self,
        local_weight: float = 1.0,
        normal_weight: float = 1.0,
        global_weight: float = 1.0,
        camera_weight: float = 0.2,
        translation_weight: float = 100.0,
        huber_delta: float = 0.1,
        scale_points: int = 4096,
        depth_clamp_ratio: float = 0.1,
        normal_datasets: tuple[str, ...] | list[str] = NORMAL_LOSS_DATASETS,
        normal_edge_rtol: float = 0.03,
        min_valid_pixels: int = 100,
    ) -> None:
        super().__init__()
        self.local_weight = local_weight
        self.normal_weight = normal_weight
        self.global_weight = global_weight
        self.camera_weight = camera_weight
        self.translation_weight = translation_weight
        self.huber_delta = huber_delta
        self.scale_points = scale_points
        self.depth_clamp_ratio = depth_clamp_ratio
        self.normal_datasets = frozenset(name.lower() for name in normal_datasets)
        self.normal_edge_rtol = normal_edge_rtol
        self.min_valid_pixels = min_valid_pixels

    def forward(self, output: GeometryOutput, target: GeometryTarget,
                scale: torch.Tensor | None = None) -> GeometryLossOutput:
        """The loss of a prediction against its target, in fp32 outside autocast.

        Args:
            output: the model's prediction; read are `local_points` (B, N, H, W, 3) camera-frame points,
                `camera_to_world` (B, N, 4, 4) OpenCV poses and `global_points` (B, N, H, W, 3) in frame 0
                (None: no global term).
            target: the ground truth of the same B clips of N views.
            scale: optional (B,) s* to use instead of solving it (held fixed, e.g. for gradcheck).
        """
        with torch.autocast(device_type=output.local_points.device.type, enabled=False):
            return self._forward(output.local_points, output.camera_to_world, output.global_points, target, scale)

    def _normal_gate(self, dataset_names: list[str], device: torch.device) -> torch.Tensor:
        """(B,) bool: the samples whose dataset gets the normal loss. Written on the host into a fresh (on CUDA:
        pinned) buffer and copied without blocking, so no step waits for the device (the caching host allocator
        keeps the pinned buffer until its copy has run)."""
        gate = torch.empty(len(dataset_names), dtype=torch.bool, pin_memory=device.type == "cuda")
        gate.numpy()[:] = [name.lower() in self.normal_datasets for name in dataset_names]
        return gate.to(device, non_blocking=True)

    def _forward(self, pred_local_points, pred_camera_to_world, pred_global_points, target: GeometryTarget,
                 scale) -> GeometryLossOutput:
        depth_m, valid, K, camera_to_world = target.depth_m, target.valid, target.K, target.camera_to_world
        has_depth, dataset_names = target.has_depth, target.dataset_names
        tensors = [pred_local_points, pred_camera_to_world, depth_m, K, camera_to_world]
        if pred_global_points is not None:
            tensors.append(pred_global_points)
        tensors = list(upcast(*tensors))
        pred_local_points, pred_camera_to_world, depth_m, K, camera_to_world = tensors[:5]
        if pred_global_points is not None:
            pred_global_points = tensors[5]
        B, _N, _H, _W, _ = pred_local_points.shape
        if len(dataset_names) != B:
            raise ValueError(f"GeometryLoss: target.dataset_names has {len(dataset_names)} entries for batch {B}")
        has_depth = has_depth.to(device=depth_m.device, dtype=torch.bool)

        # --- which samples contribute what
        valid = valid.to(torch.bool) & (depth_m > 0) & torch.isfinite(depth_m) & has_depth[:, None, None, None]
        valid_count = valid.sum(dim=(1, 2, 3))
        point_samples = has_depth & (valid_count >= self.min_valid_pixels)  # (B,)
        camera_samples = point_samples | ~has_depth
        valid = valid & point_samples[:, None, None, None]
        depth_m = torch.where(valid, depth_m, torch.zeros_like(depth_m))

        # --- ground truth in frame 0, normalised
        gt_camera_points = unproject_depth(depth_m, K)  # (B, N, H, W, 3)
        to_frame0 = se3_inverse(camera_to_world[:, :1])  # (B, 1, 4, 4)
        gt_pose0 = to_frame0 @ camera_to_world  # (B, N, 4, 4)
        gt_world_points = transform_points(gt_pose0, gt_camera_points)
        gt_factor = torch.where(
            point_samples,
            _masked_mean_per_sample(safe_norm(gt_world_points), valid),
            _mean_camera_distance(gt_pose0),
        )
        gt_factor = torch.where(camera_samples, gt_factor, torch.ones_like(gt_factor)).clamp(1e-6, 1e6)
        gt_local = gt_camera_points / gt_factor[:, None, None, None, None]
        gt_world = gt_world_points / gt_factor[:, None, None, None, None]
        gt_pose = _scale_translation(gt_pose0, 1.0 / gt_factor)

        # --- prediction normalised by its own scale (with gradient)
        pred_points_norm = _masked_mean_per_sample(safe_norm(torch.where(valid[..., None], pred_local_points, 0.0)), valid)
        pred_camera_norm = _mean_camera_distance(se3_inverse(pred_camera_to_world[:, :1]) @ pred_camera_to_world)
        pred_factor = torch.where(point_samples, pred_points_norm, pred_camera_norm)
        pred_factor = torch.where(camera_samples, pred_factor, torch.ones_like(pred_factor))
        pred_factor = torch.where(pred_factor > 1e-8, pred_factor, torch.full_like(pred_factor, 1e-8))
        pred_local = pred_local_points / pred_factor[:, None, None, None, None]

        # --- 1/z weights and the optimal scale s*
        weights = self._depth_weights(gt_local[..., 2], valid)
        if scale is None:
            with torch.no_grad():
                scale = self._solve_scale(pred_local.detach(), gt_local, weights, valid)
        scale = torch.where(point_samples, scale.to(pred_local.dtype).detach(), torch.ones_like(pred_factor))
        aligned_local = pred_local * scale[:, None, None, None, None]

        # --- point terms
        local_loss = _masked_mean((aligned_local - gt_local).abs().sum(-1) * weights, valid) / 3.0
        if pred_global_points is not None:
            aligned_global = pred_global_points * (scale / pred_factor)[:, None, None, None, None]
            global_loss = _masked_mean((aligned_global - gt_world).abs().sum(-1) * weights, valid) / 3.0
        else:
            global_loss = torch.zeros((), dtype=pred_local.dtype, device=pred_local.device)
        if self.normal_weight and self.normal_datasets:
            normal_gate = self._normal_gate(dataset_names, valid.device)
            normal_loss = self._normal_loss(aligned_local, gt_local, valid, normal_gate & point_samples)
        else:  # switched off: an exact 0, not computed (it is ~40 % of the CPU demo's step)
            normal_loss = torch.zeros((), dtype=pred_local.dtype, device=pred_local.device)

        # --- camera terms over all ordered pairs i != j
        pred_pose = _scale_translation(pred_camera_to_world, scale / pred_factor)
        translation_loss, rotation_loss, num_pairs = self._camera_loss(pred_pose, gt_pose, camera_samples)

        total = (
            self.local_weight * local_loss
            + self.normal_weight * normal_loss
            + self.global_weight * global_loss
            + self.camera_weight * (self.translation_weight * translation_loss + rotation_loss)
        )
        return GeometryLossOutput(
            total=total,
            local_points=local_loss,
            normal=normal_loss,
            global_points=global_loss,
            camera_translation=translation_loss,
            camera_rotation=rotation_loss,
            scale=scale.detach(),
            num_valid_pixels=valid.sum(),
            num_camera_pairs=num_pairs,
        )

    def _depth_weights(self, gt_z: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """w = 1 / (max(z, ratio · frame mean z) + 1e-6) on valid pixels, 0 elsewhere. (B, N, H, W)."""
        m = valid.to(gt_z.dtype)
        frame_mean = (gt_z * m).sum(dim=(-1, -2)) / m.sum(dim=(-1, -2)).clamp(min=1)
        floor = (self.depth_clamp_ratio * frame_mean)[..., None, None]
        clamped = torch.maximum(gt_z, floor)
        return torch.where(valid, 1.0 / (clamped + 1e-6), torch.zeros_like(gt_z))

    def _solve_scale(
        self, pred_local: torch.Tensor, gt_local: torch.Tensor, weights: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """Per-sample |s*| on `scale_points` valid pixels picked by nearest resampling (reference `prepare_ROE`)."""
        B = pred_local.shape[0]
        flat_valid = valid.reshape(B, -1)
        count = flat_valid.sum(-1)
        # valid pixel indices first, in raster order
        order = torch.argsort((~flat_valid).to(torch.uint8), dim=-1, stable=True)
        steps = torch.arange(self.scale_points, device=valid.device)
        picks = (steps[None, :] * count[:, None]) // self.scale_points  # nearest: floor(i · n / size)
        pixel = order.gather(-1, picks)
        pred = pred_local.reshape(B, -1, 3).gather(1, pixel[..., None].expand(-1, -1, 3))
        gt = gt_local.reshape(B, -1, 3).gather(1, pixel[..., None].expand(-1, -1, 3))
        w = weights.reshape(B, -1).gather(1, pixel)
        scale = weighted_l1_scale(pred, gt, w).abs()
        return torch.where(count > 0, scale, torch.ones_like(scale))

    def _normal_loss(
        self, aligned_local: torch.Tensor, gt_local: torch.Tensor, valid: torch.Tensor, gate: torch.Tensor
    ) -> torch.Tensor:
        """MoGe normal loss: per 2x2 quad, 4 triangle-normal angles clamped to [1°, 90°], smoothed (β = 3°).

        Triangles need 3 valid vertices off GT depth edges. Sum of the 4 terms, mean over the quads of the
        gated samples' frames, divided by 4·max(H, W) (as the reference).
        """
        H, W = aligned_local.shape[-3:-1]
        mask = valid & ~depth_edges(gt_local[..., 2], valid, rtol=self.normal_edge_rtol)
        mask = mask & gate[:, None, None, None]
        pred_normals = quad_triangle_normals(aligned_local)
        gt_normals = quad_triangle_normals(gt_local)
        masks = quad_triangle_masks(mask)
        min_angle, max_angle, beta = math.radians(1.0), math.radians(90.0), math.radians(3.0)
        per_quad = torch.zeros(aligned_local.shape[:-3] + (H - 1, W - 1), dtype=aligned_local.dtype, device=aligned_local.device)
        for pred_n, gt_n, tri_mask in zip(pred_normals, gt_normals, masks):
            angle = torch.atan2(safe_norm(cross(pred_n, gt_n)) + 1e-12, (pred_n * gt_n).sum(-1))
            angle = angle.clamp(min_angle, max_angle)
            smoothed = torch.where(angle < beta, 0.5 * angle.square() / beta, angle - 0.5 * beta)
            per_quad = per_quad + torch.where(tri_mask, smoothed, torch.zeros_like(smoothed))
        frames = gate.sum() * aligned_local.shape[1]
        quads_total = (frames * (H - 1) * (W - 1)).clamp(min=1)
        return per_quad.sum() / quads_total / (4 * max(H, W))

    def _camera_loss(
        self, pred_pose: torch.Tensor, gt_pose: torch.Tensor, samples: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Huber(δ) on relative translations and geodesic angle on relative rotations, all ordered pairs i≠j."""
        N = pred_pose.shape[1]
        pred_relative = se3_inverse(pred_pose)[:, :, None] @ pred_pose[:, None, :]  # (B, N, N, 4, 4) = P_i^-1 P_j
        gt_relative = se3_inverse(gt_pose)[:, :, None] @ gt_pose[:, None, :]
        off_diagonal = ~torch.eye(N, dtype=torch.bool, device=pred_pose.device)
        pairs = off_diagonal[None] & samples[:, None, None]  # (B, N, N)
        translation = F.huber_loss(
            pred_relative[..., :3, 3], gt_relative[..., :3, 3], reduction="none", delta=self.huber_delta
        ).sum(-1)
        translation_loss = _masked_mean(translation, pairs) / 3.0
        angle = rotation_angle(pred_relative[..., :3, :3], gt_relative[..., :3, :3])
        rotation_loss = _masked_mean(angle, pairs)
        return translation_loss, rotation_loss, pairs.sum()


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values over mask; an empty mask gives an exact 0 that keeps the graph."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp(min=1)


def _masked_mean_per_sample(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, ...) values and mask -> (B,) per-sample means (0 where the mask is empty)."""
    B = values.shape[0]
    total = torch.where(mask, values, torch.zeros_like(values)).reshape(B, -1).sum(-1)
    return total / mask.reshape(B, -1).sum(-1).clamp(min=1)


def _mean_camera_distance(pose_in_frame0: torch.Tensor) -> torch.Tensor:
    """Mean distance of cameras 1..N-1 from camera 0 (poses already in frame 0). (B, N, 4, 4) -> (B,); 1 if N = 1."""
    if pose_in_frame0.shape[1] < 2:
        return torch.ones(pose_in_frame0.shape[0], dtype=pose_in_frame0.dtype, device=pose_in_frame0.device)
    return safe_norm(pose_in_frame0[:, 1:, :3, 3]).mean(-1)


def _scale_translation(pose: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Multiply the translation of (B, N, 4, 4) poses by a per-sample factor (B,), out of place."""
    scale = torch.ones_like(pose)
    scale[..., :3, 3] = factor[:, None, None].expand(-1, pose.shape[1], 3)
    return pose * scale
