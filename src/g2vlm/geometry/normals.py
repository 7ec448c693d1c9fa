"""Surface normals from point maps, and depth edges.

Point maps are (*b, H, W, 3) in a camera frame with OpenCV axes (x right, y down, z forward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from g2vlm.geometry.nearest_neighbors import NearestNeighborIndex
from g2vlm.geometry.precision import outside_autocast, upcast
from g2vlm.geometry.vector import cross


@outside_autocast
def depth_edges(
    depth: torch.Tensor,
    valid: torch.Tensor | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    kernel_size: int = 3,
) -> torch.Tensor:
    """Pixels whose depth varies too much within a kernel_size window (MoGe/utils3d `depth_edge`).

    depth (*b, H, W); valid (*b, H, W) bool restricts the window statistics to valid pixels.
    A pixel is an edge if (max - min) of the window exceeds `atol`, or (max - min) / depth exceeds `rtol`.
    Returns bool (*b, H, W).
    """
    (depth,) = upcast(depth)
    shape = depth.shape
    flat = depth.reshape(-1, 1, *shape[-2:])
    pad = kernel_size // 2
    if valid is None:
        window_max = F.max_pool2d(flat, kernel_size, stride=1, padding=pad)
        window_min = -F.max_pool2d(-flat, kernel_size, stride=1, padding=pad)
    else:
        mask = valid.reshape(-1, 1, *shape[-2:])
        window_max = F.max_pool2d(torch.where(mask, flat, -torch.inf), kernel_size, stride=1, padding=pad)
        window_min = -F.max_pool2d(torch.where(mask, -flat, -torch.inf), kernel_size, stride=1, padding=pad)
    spread = (window_max - window_min).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    edge = torch.zeros_like(flat, dtype=torch.bool)
    if atol is not None:
        edge |= spread > atol
    if rtol is not None:
        edge |= (spread / flat).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0) > rtol
    return edge.reshape(shape)


@outside_autocast
def quad_triangle_normals(points: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The four (unnormalised) triangle normals of every 2x2 pixel quad, as in MoGe's normal loss.

    points (*b, H, W, 3) -> four tensors (*b, H-1, W-1, 3), one per corner (right-up, left-up, left-down,
    right-down), each the cross product of the two edges leaving that corner. Use with
    `quad_triangle_masks` for the matching validity masks.
    """
    (points,) = upcast(points)
    left_up, right_up = points[..., :-1, :-1, :], points[..., :-1, 1:, :]
    left_down, right_down = points[..., 1:, :-1, :], points[..., 1:, 1:, :]
    up_x_left = cross(right_up - right_down, left_down - right_down)
    left_x_down = cross(left_up - right_up, right_down - right_up)
    down_x_right = cross(left_down - left_up, right_up - left_up)
    right_x_up = cross(right_down - left_down, left_up - left_down)
    return up_x_left, left_x_down, down_x_right, right_x_up


def quad_triangle_masks(valid: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Validity of the four triangles of `quad_triangle_normals`: all three vertices valid. (*b, H, W) -> 4 x (*b, H-1, W-1)."""
    left_up, right_up = valid[..., :-1, :-1], valid[..., :-1, 1:]
    left_down, right_down = valid[..., 1:, :-1], valid[..., 1:, 1:]
    return (
        right_up & left_down & right_down,
        left_up & right_down & right_up,
        left_down & right_up & left_up,
        right_down & left_up & left_down,
    )


@outside_autocast
def point_map_normals(points: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel unit normals of a point map from central differences of its pixel neighbours.

    points (*b, H, W, 3), valid (*b, H, W) bool. The normal is normalise(d/dv × d/du), which for a point map
    in OpenCV camera axes faces the camera (a fronto-parallel plane gives (0, 0, -1)). One-sided
    differences are used where a neighbour is missing or invalid. Returns (normals (*b, H, W, 3),
    normal_valid (*b, H, W)); pixels without a valid neighbour along both axes get a zero normal.
    """
    (points,) = upcast(points)
    if valid is None:
        valid = torch.ones(points.shape[:-1], dtype=torch.bool, device=points.device)
    du, du_ok = _neighbour_difference(points, valid, dim=-2)
    dv, dv_ok = _neighbour_difference(points, valid, dim=-3)
    normals = cross(dv, du)
    norm = normals.norm(dim=-1, keepdim=True)
    normal_valid = valid & du_ok & dv_ok & (norm.squeeze(-1) > 0)
    normals = torch.where(normal_valid.unsqueeze(-1), normals / norm.clamp(min=torch.finfo(points.dtype).tiny), 0.0)
    return normals, normal_valid


def _neighbour_difference(points: torch.Tensor, valid: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Central difference along a pixel axis (dim -2 = columns of the point map, -3 = rows), one-sided where needed."""
    size = points.shape[dim]
    valid_dim = dim + 1  # the same axis in the (*b, H, W) mask
    forward = F.pad(points.movedim(dim, -1), (0, 1)).movedim(-1, dim).narrow(dim, 1, size)
    backward = F.pad(points.movedim(dim, -1), (1, 0)).movedim(-1, dim).narrow(dim, 0, size)
    forward_ok = F.pad(valid.movedim(valid_dim, -1), (0, 1)).movedim(-1, valid_dim).narrow(valid_dim, 1, size) & valid
    backward_ok = F.pad(valid.movedim(valid_dim, -1), (1, 0)).movedim(-1, valid_dim).narrow(valid_dim, 0, size) & valid
    both = forward_ok & backward_ok
    difference = torch.where(
        both.unsqueeze(-1),
        0.5 * (forward - backward),
        torch.where(forward_ok.unsqueeze(-1), forward - points, torch.where(backward_ok.unsqueeze(-1), points - backward, 0.0)),
    )
    return difference, forward_ok | backward_ok


@outside_autocast
def knn_normals(points: torch.Tensor, k: int = 30, index: NearestNeighborIndex | None = None) -> torch.Tensor:
    """Unoriented unit normals of a point cloud by PCA over each point's k nearest neighbours (itself
    included), as Open3D's `estimate_normals` with its default KNN(30) search. (M, 3) -> (M, 3).

    A cloud of fewer than 3 points gets (0, 0, 1) everywhere, as Open3D; with fewer than k points every point
    uses them all. Pass the cloud's prebuilt `index` to reuse it. Cost: one k-NN query of the M points (see
    `g2vlm.geometry.nearest_neighbors`) plus a batched 3x3 eigendecomposition.
    """
    (points,) = upcast(points)
    index = index if index is not None else NearestNeighborIndex(points)
    k = min(k, len(index.reference))
    if k < 3:
        return torch.tensor([0.0, 0.0, 1.0], dtype=points.dtype, device=points.device).expand(len(points), 3).clone()
    _, neighbours = index.query(points, k=k)
    neighbourhood = index.reference[neighbours]  # (M, k, 3)
    centred = neighbourhood - neighbourhood.mean(-2, keepdim=True)
    covariance = centred.transpose(-1, -2) @ centred / k
    return torch.linalg.eigh(covariance).eigenvectors[..., :, 0]
