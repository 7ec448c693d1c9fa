"""Point-to-point ICP (rigid), following Open3D's `registration_icp` with its default criteria."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from g2vlm.geometry.alignment import umeyama_sim3
from g2vlm.geometry.camera import se3_from_rotation_translation, transform_points
from g2vlm.geometry.nearest_neighbors import NearestNeighborIndex
from g2vlm.geometry.precision import outside_autocast, upcast


@dataclass
class IcpResult:
    transform: torch.Tensor  # (4, 4) rigid, maps source to target
    fitness: float  # fraction of source points with a correspondence closer than max_distance
    inlier_rmse: float  # RMS distance over those correspondences
    iterations: int
    aligned: torch.Tensor  # (M, 3) the source after the final transform


@outside_autocast
def icp_point_to_point(
    source: torch.Tensor,
    target: torch.Tensor,
    max_distance: float,
    max_iterations: int = 30,
    relative_fitness: float = 1e-6,
    relative_rmse: float = 1e-6,
    target_index: NearestNeighborIndex | None = None,
) -> IcpResult:
    """Rigid ICP from the identity: source (M, 3) towards target (T, 3).

    Each iteration pairs every source point with its nearest target point closer than `max_distance`,
    fits the rigid transform (Kabsch, no scale) on those pairs and applies it; it stops after
    `max_iterations` or when fitness and inlier RMSE change by less than the relative criteria (Open3D's
    defaults: 30, 1e-6, 1e-6; like Open3D, the changes are compared as absolute differences). Pass a
    prebuilt `target_index` to reuse it. Cost per iteration: one nearest-neighbour query of the M points
    bounded by `max_distance` (see `g2vlm.geometry.nearest_neighbors`) plus O(M).
    """
    source, target = upcast(source, target)
    index = target_index if target_index is not None else NearestNeighborIndex(target)
    transform = torch.eye(4, dtype=source.dtype, device=source.device)
    current = source

    def evaluate(points):
        distance, neighbour = index.query(points, k=1, max_distance=max_distance)
        distance, neighbour = distance[:, 0], neighbour[:, 0]
        matched = neighbour >= 0
        count = int(matched.sum())
        fitness = count / max(len(points), 1)
        rmse = float(distance[matched].square().mean().sqrt()) if count > 0 else 0.0
        return matched, neighbour, fitness, rmse

    matched, neighbour, fitness, rmse = evaluate(current)
    iterations = 0
    while iterations < max_iterations and int(matched.sum()) >= 3:
        iterations += 1
        _, rotation, translation = umeyama_sim3(current[matched], target[neighbour[matched]], with_scale=False)
        update = se3_from_rotation_translation(rotation, translation)
        transform = update @ transform
        current = transform_points(update, current)
        previous_fitness, previous_rmse = fitness, rmse
        matched, neighbour, fitness, rmse = evaluate(current)
        if abs(previous_fitness - fitness) < relative_fitness and abs(previous_rmse - rmse) < relative_rmse:
            break
    return IcpResult(transform=transform, fitness=fitness, inlier_rmse=rmse, iterations=iterations, aligned=current)
