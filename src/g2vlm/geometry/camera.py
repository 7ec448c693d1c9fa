"""Rigid transforms and the pinhole camera.

Conventions (shared by the whole suite):
- `camera_to_world` (*b, 4, 4): maps OpenCV camera coordinates (x right, y down, z forward) to world.
- `K` (*b, 3, 3): pixel intrinsics; the pixel at (row v, col u) has its centre at image coordinates (u, v),
  so a centred principal point is cx = (W - 1) / 2.
- Point maps (*b, H, W, 3). All outputs are float32 (float64 if an input is float64).
"""

from __future__ import annotations

import torch

from g2vlm.geometry.precision import outside_autocast, upcast


@outside_autocast
def to_homogeneous(points: torch.Tensor) -> torch.Tensor:
    """(..., D) -> (..., D + 1) with a trailing 1."""
    (points,) = upcast(points)
    return torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)


@outside_autocast
def from_homogeneous(points: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(..., D + 1) -> (..., D), dividing by the last coordinate (its magnitude clamped at `eps`)."""
    (points,) = upcast(points)
    w = points[..., -1:]
    w = torch.where(w.abs() < eps, torch.full_like(w, eps), w)
    return points[..., :-1] / w


@outside_autocast
def se3_from_rotation_translation(rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """rotation (*b, 3, 3), translation (*b, 3) -> T (*b, 4, 4) = [[R, t], [0, 1]]."""
    rotation, translation = upcast(rotation, translation)
    batch = torch.broadcast_shapes(rotation.shape[:-2], translation.shape[:-1])
    top = torch.cat([rotation.expand(*batch, 3, 3), translation.expand(*batch, 3).unsqueeze(-1)], dim=-1)
    bottom = torch.zeros(*batch, 1, 4, dtype=top.dtype, device=top.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


@outside_autocast
def se3_inverse(T: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of rigid transforms. T (*b, 4, 4) -> (*b, 4, 4): [[R^T, -R^T t], [0, 1]].

    Only valid for rigid T (orthonormal R); it does not invert general 4x4 matrices.
    """
    (T,) = upcast(T)
    rotation_t = T[..., :3, :3].transpose(-1, -2)
    translation = -(rotation_t @ T[..., :3, 3:4]).squeeze(-1)
    return se3_from_rotation_translation(rotation_t, translation)


@outside_autocast
def se3_compose(T_a: torch.Tensor, T_b: torch.Tensor) -> torch.Tensor:
    """T_a ∘ T_b (apply T_b first). (*b, 4, 4) x (*b, 4, 4) -> (*b, 4, 4), broadcasting batch dims."""
    T_a, T_b = upcast(T_a, T_b)
    return T_a @ T_b


@outside_autocast
def relative_pose(camera_to_world_i: torch.Tensor, camera_to_world_j: torch.Tensor) -> torch.Tensor:
    """T_{i<-j} = inverse(P_i) · P_j: maps camera-j coordinates to camera-i coordinates. (*b, 4, 4)."""
    return se3_compose(se3_inverse(camera_to_world_i), camera_to_world_j)


@outside_autocast
def transform_points(T: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply rigid (or affine) transforms to points.

    T: (*b, 4, 4); points: (*b, ..., 3) whose leading dims broadcast with *b. Returns (*b, ..., 3).
    """
    T, points = upcast(T, points)
    batch_ndim = T.ndim - 2
    if points.ndim < batch_ndim + 1 or points.shape[-1] != 3:
        raise ValueError(
            f"geometry/camera.py transform_points: points shape {tuple(points.shape)} must be (*b, ..., 3) "
            f"with *b matching T's batch shape {tuple(T.shape[:-2])}"
        )
    inner_shape = points.shape[batch_ndim:-1]
    flat = points.reshape(*points.shape[:batch_ndim], -1, 3)
    rotation = T[..., :3, :3]
    translation = T[..., :3, 3]
    out = flat @ rotation.transpose(-1, -2) + translation.unsqueeze(-2)
    return out.reshape(*out.shape[:-2], *inner_shape, 3)


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(H, W, 2) pixel-centre coordinates (u, v) = (col, row)."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1)


@outside_autocast
def unproject_depth(
    depth: torch.Tensor, K: torch.Tensor, camera_to_world: torch.Tensor | None = None
) -> torch.Tensor:
    """Lift a z-depth map to 3D points.

    depth (*b, H, W) (z along the optical axis, any unit), K (*b, 3, 3), camera_to_world (*b, 4, 4) or None.
    Returns (*b, H, W, 3): camera-frame points if no pose is given, world points otherwise. Invalid pixels
    (depth 0) map to the camera centre; mask them with the caller's `valid`.
    """
    if camera_to_world is None:
        depth, K = upcast(depth, K)
    else:
        depth, K, camera_to_world = upcast(depth, K, camera_to_world)
    height, width = depth.shape[-2:]
    pixels = to_homogeneous(pixel_grid(height, width, device=depth.device, dtype=depth.dtype))  # (H, W, 3)
    K_inv = torch.linalg.inv(K)  # (*b, 3, 3)
    rays = pixels.reshape(-1, 3) @ K_inv.transpose(-1, -2)  # (*b, H*W, 3), z = 1
    points = rays.reshape(*rays.shape[:-2], height, width, 3) * depth.unsqueeze(-1)
    if camera_to_world is not None:
        points = transform_points(camera_to_world, points)
    return points


@outside_autocast
def project_points(
    points: torch.Tensor,
    K: torch.Tensor,
    camera_to_world: torch.Tensor | None = None,
    eps: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project 3D points to pixels.

    points (*b, ..., 3) (world frame if `camera_to_world` (*b, 4, 4) is given, camera frame otherwise),
    K (*b, 3, 3). Returns uv (*b, ..., 2) in pixel-centre coordinates and z (*b, ...) the camera-frame depth.
    Points with |z| < eps are divided by eps instead (uv is then meaningless; check z > 0).
    """
    if camera_to_world is None:
        points, K = upcast(points, K)
    else:
        points, K, camera_to_world = upcast(points, K, camera_to_world)
        points = transform_points(se3_inverse(camera_to_world), points)
    batch_ndim = K.ndim - 2
    inner_shape = points.shape[batch_ndim:-1]
    flat = points.reshape(*points.shape[:batch_ndim], -1, 3)
    pixels = flat @ K.transpose(-1, -2)
    z = flat[..., 2]
    w = pixels[..., 2:3]
    w = torch.where(w.abs() < eps, torch.full_like(w, eps), w)
    uv = pixels[..., :2] / w
    return uv.reshape(*uv.shape[:-2], *inner_shape, 2), z.reshape(*z.shape[:-1], *inner_shape)
