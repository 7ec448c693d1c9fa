"""Point-to-point ICP (rigid), following Open3D's `registration_icp` with its default criteria."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from g2vlm.geometry.alignment import umeyama_sim3
from g2vlm.geometry.camera import se3_from_rotation_translation, transform_points
from g2vlm.geometry.nearest_neighbors import VoxelGridIndex
from g2vlm.geometry.precision import outside_autocast, upcast


@dataclass
class IcpResult:
    transform: torch.Tensor  # (4, 4) rigid, maps source to target
    fitness: float  # fraction of source points with a correspondence within max_distance
    inlier_rmse: float  # RMS distance over those correspondences
    iterations: int
    aligned: torch.Tensor  # (M, 3) the source after the final transform
    nearest: torch.Tensor  # (M,) index of each aligned point's nearest target point within max_distance, else -1
    nearest_distance: torch.Tensor  # (M,) its distance, inf where nearest is -1


class _Correspondences:
    """Exact nearest target point within `max_distance` for source points that move a little at a time.

    Each point keeps the position ("anchor") of its last exact (k+1)-NN query (bounded at 2·max_distance),
    its k nearest target points and the (k+1)-th distance, a lower bound for every other target point.
    After a move by δ, every other point is at least (bound - δ) away, so whenever the nearest of the k
    cached points is within that distance it is the true nearest — no search needed. Only points where this
    cannot be decided are searched again (rare once ICP moves by millimetres).
    """

    def __init__(self, index: VoxelGridIndex, max_distance: float, cached: int = 8) -> None:
        self.index = index
        self.max_distance = max_distance
        self.cached = cached
        self.anchor: torch.Tensor | None = None

    def _search(self, points: torch.Tensor, which: torch.Tensor) -> None:
        bound = 2 * self.max_distance
        distance, neighbour = self.index.query(points[which], k=self.cached + 1, max_distance=bound)
        self.anchor[which] = points[which]
        self.candidates[which] = neighbour[:, :-1]
        self.others_at_least[which] = torch.where(torch.isfinite(distance[:, -1]), distance[:, -1], bound)

    @staticmethod
    def _nearest_among(reference: torch.Tensor, candidates: torch.Tensor, points: torch.Tensor):
        """Nearest of each point's candidates (M, k) (-1 = none): distance (M,), index (M,)."""
        distance = (reference[candidates.clamp(min=0)] - points[:, None, :]).norm(dim=-1)
        best, column = distance.masked_fill(candidates < 0, float("inf")).min(dim=-1)
        return best, torch.where(torch.isfinite(best), candidates.gather(-1, column[:, None]).squeeze(-1), -1)

    def __call__(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points (M, 3) -> distance (M,) and target index (M,), -1 / inf beyond max_distance."""
        if self.anchor is None:
            self.anchor = points.clone()
            self.candidates = torch.full((len(points), self.cached), -1, dtype=torch.long, device=points.device)
            self.others_at_least = torch.zeros(len(points), dtype=points.dtype, device=points.device)
            self._search(points, torch.arange(len(points), device=points.device))
        others = self.others_at_least - (points - self.anchor).norm(dim=-1)
        distance, nearest = self._nearest_among(self.index.reference, self.candidates, points)
        # decided: a cached point is the true nearest, or nothing can be within max_distance
        decided = (distance <= others) | ((distance > self.max_distance) & (others > self.max_distance))
        undecided = (~decided).nonzero().squeeze(-1)
        if len(undecided) > 0:
            self._search(points, undecided)
            distance[undecided], nearest[undecided] = self._nearest_among(
                self.index.reference, self.candidates[undecided], points[undecided]
            )
        matched = distance <= self.max_distance
        return torch.where(matched, distance, float("inf")), torch.where(matched, nearest, -1)


@outside_autocast
def icp_point_to_point(
    source: torch.Tensor,
    target: torch.Tensor,
    max_distance: float,
    max_iterations: int = 30,
    relative_fitness: float = 1e-6,
    relative_rmse: float = 1e-6,
    target_index: VoxelGridIndex | None = None,
) -> IcpResult:
    """Rigid ICP from the identity: source (M, 3) towards target (T, 3).

    Each iteration pairs every source point with its nearest target point within `max_distance`, fits the
    rigid transform (Kabsch, no scale) on those pairs and applies it; it stops after `max_iterations` or
    when fitness and inlier RMSE change by less than the relative criteria (Open3D's defaults: 30, 1e-6,
    1e-6). Pass a prebuilt `target_index` to reuse it. Cost: one exact 2-NN query of the M points, then per
    iteration O(M) plus a search for the points whose nearest neighbour may have changed (see
    `_Correspondences`).
    """
    source, target = upcast(source, target)
    index = target_index if target_index is not None else VoxelGridIndex(target)
    correspondences = _Correspondences(index, max_distance)
    transform = torch.eye(4, dtype=source.dtype, device=source.device)
    current = source

    def evaluate(points):
        distance, neighbour = correspondences(points)
        matched = neighbour >= 0
        count = int(matched.sum())
        fitness = count / max(len(points), 1)
        rmse = float(distance[matched].square().mean().sqrt()) if count > 0 else 0.0
        return matched, neighbour, fitness, rmse, distance

    matched, neighbour, fitness, rmse, distance = evaluate(current)
    iterations = 0
    while iterations < max_iterations and int(matched.sum()) >= 3:
        iterations += 1
        _, rotation, translation = umeyama_sim3(current[matched], target[neighbour[matched]], with_scale=False)
        update = se3_from_rotation_translation(rotation, translation)
        transform = update @ transform
        current = transform_points(update, current)
        previous_fitness, previous_rmse = fitness, rmse
        matched, neighbour, fitness, rmse, distance = evaluate(current)
        if abs(previous_fitness - fitness) < relative_fitness and abs(previous_rmse - rmse) < relative_rmse:
            break
    return IcpResult(
        transform=transform,
        fitness=fitness,
        inlier_rmse=rmse,
        iterations=iterations,
        aligned=current,
        nearest=neighbour,
        nearest_distance=distance,
    )
