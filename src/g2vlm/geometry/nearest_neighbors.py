"""Exact k-nearest-neighbour search in 3D: scipy's `cKDTree` behind a small torch-in / torch-out API.

Distances are computed in float64 by the tree and returned in the reference's dtype (fp32; float64 kept);
only the order of exact distance ties can differ from a brute-force search. Searches use every core
(`workers=-1`).

Cost: building the tree is O(M log M) (about 0.05 s of CPU for 200k points). A query whose neighbours
are close by relative to the cloud's extent (ICP correspondences, k-NN normals, a reasonable
prediction) costs O(log M + k): measured about 1 µs for k = 1 and 4 µs for k = 30 per query on a
200k-point room scan (one core). Queries far from a surface cloud cost much more, and more the farther
they are: kd-tree cells are bounded by split planes, which cut a surface across but hardly ever along its
normal, so a query at distance d searches the cells of about M·(d / L)² points of a surface of extent L.
Measured on the same scan with a collapsed prediction (an untrained model's, 0.3–1 m from the walls):
about 500 µs per query (`benchmarks/speed/pointmap_metrics.py --prediction collapsed`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree

from g2vlm.geometry.precision import outside_autocast, upcast

# points per kd-tree leaf: as fast as scipy's default 16 near the cloud, 2–5x faster far from it (fewer cells)
LEAF_SIZE = 64


class NearestNeighborIndex:
    """Exact k-NN over a fixed reference cloud (M, 3) (fp32; float64 kept): build once, query many times."""

    def __init__(self, reference: torch.Tensor) -> None:
        (reference,) = upcast(reference)
        if reference.ndim != 2 or reference.shape[-1] != 3 or len(reference) == 0:
            raise ValueError(f"NearestNeighborIndex: reference must be a non-empty (M, 3), got {tuple(reference.shape)}")
        self.reference = reference
        self._tree = cKDTree(_to_numpy(reference), leafsize=LEAF_SIZE)

    @outside_autocast
    def query(
        self, queries: torch.Tensor, k: int = 1, max_distance: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """k nearest reference points of each query, nearest first.

        queries (Q, 3) -> distances (Q, k) and indices (Q, k) into the reference. Missing neighbours
        (fewer than k reference points, or none closer than `max_distance`, strictly, as Open3D's
        correspondence search) get distance inf and index -1.
        """
        if queries.ndim != 2 or queries.shape[-1] != 3:
            raise ValueError(f"NearestNeighborIndex.query: queries must be (Q, 3), got {tuple(queries.shape)}")
        bound = math.inf if max_distance is None else float(max_distance)
        distances, indices = self._tree.query(_to_numpy(queries), k=k, distance_upper_bound=bound, workers=-1)
        distances = torch.from_numpy(distances.reshape(len(queries), k))
        indices = torch.from_numpy(indices.reshape(len(queries), k))
        indices = indices.masked_fill(indices == len(self.reference), -1)  # cKDTree marks a miss by M
        device = self.reference.device
        return distances.to(device=device, dtype=self.reference.dtype), indices.to(device)


def _to_numpy(points: torch.Tensor) -> np.ndarray:
    return points.detach().to(device="cpu", dtype=torch.float64).numpy()


@outside_autocast
def nearest_neighbors(
    queries: torch.Tensor, reference: torch.Tensor, k: int = 1, max_distance: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-off exact k-NN: (Q, 3) x (M, 3) -> distances (Q, k), indices (Q, k). See `NearestNeighborIndex`."""
    return NearestNeighborIndex(reference).query(queries, k=k, max_distance=max_distance)
