"""Exact nearest-neighbour and k-NN search in 3D with a hierarchy of uniform voxel grids (no open3d/scipy).

`VoxelGridIndex(reference)` sorts the reference points by voxel key (one sort per grid level, built on first
use). A query looks at the 27 voxels around its own (9 contiguous z-columns of the sorted points); the result
is exact when the k-th distance found is at most the voxel size, since every point closer than that lies in
those voxels. Queries that are not settled move to the next level, whose voxels are twice as large; the
first level is picked from the k-th neighbour distance of a small query sample. A few isolated leftovers
(outliers) are answered by chunked brute force. With `max_distance`, the search stops at the first level
whose voxels reach it and reports misses beyond it (what ICP needs). Candidates are ranked by exact
distances (k = 1) or by a per-voxel batched product (k > 1), and the returned distances are exact; only the
order of near-ties within float rounding can differ from a brute-force search.

Cost: building a level sorts the M reference points, O(M log M). A batch of Q queries costs 18 binary
searches per occupied query voxel plus O(Q · c) distance evaluations, c the number of reference points in
the 27 voxels (about 30–60 for k = 1 on surface scans at the default density, a few hundred for k = 30);
the brute force for Q' leftover outliers costs O(Q' · M). Measured on 200k-point scans: about 0.7 s of CPU
per 200k nearest-neighbour queries and 2 s per 200k 30-NN queries on one core
(`benchmarks/pointmap_metrics_speed.py`).
"""

from __future__ import annotations

import torch

from g2vlm.geometry.precision import outside_autocast, upcast

# the 9 (dx, dy) voxel columns around a voxel; the 3 voxels along z of one column are consecutive keys
_COLUMN_OFFSETS = torch.stack(torch.meshgrid(torch.arange(-1, 2), torch.arange(-1, 2), indexing="ij"), dim=-1).reshape(9, 2)


class _GridLevel:
    """One uniform grid over the reference points: points sorted by voxel key (z fastest)."""

    def __init__(self, reference: torch.Tensor, origin: torch.Tensor, cell_size: float) -> None:
        self.cell_size = cell_size
        self.origin = origin
        coords = torch.floor((reference - origin) / cell_size).long() + 1  # +1: room for the -1 neighbour
        self.dims = coords.max(0).values + 2
        self.sorted_keys, self.order = self._keys(coords).sort()
        self.sorted_reference = reference[self.order]

    def _keys(self, coords: torch.Tensor) -> torch.Tensor:
        return (coords[..., 0] * self.dims[1] + coords[..., 1]) * self.dims[2] + coords[..., 2]

    def _column_ranges(self, voxel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For voxels (U, 3): the sorted-reference ranges of the 9 neighbouring z-columns of 3 voxels each,
        as first position (U, 9) and count (U, 9)."""
        columns = voxel[:, None, :2] + _COLUMN_OFFSETS.to(voxel.device)[None]  # (U, 9, 2)
        depth = int(self.dims[2])
        z_low = (voxel[:, None, 2] - 1).clamp(0, depth - 1).expand(-1, 9)
        z_high = (voxel[:, None, 2] + 1).clamp(0, depth - 1).expand(-1, 9)
        inside = ((columns >= 0) & (columns < self.dims[:2])).all(-1)
        inside &= (voxel[:, None, 2] + 1 >= 0) & (voxel[:, None, 2] - 1 <= depth - 1)
        column_key = (columns[..., 0] * self.dims[1] + columns[..., 1]) * depth
        low = torch.searchsorted(self.sorted_keys, column_key + z_low)
        high = torch.searchsorted(self.sorted_keys, column_key + z_high, right=True)
        return low, torch.where(inside, high - low, 0)

    def knn(self, queries: torch.Tensor, k: int, budget: int) -> tuple[torch.Tensor, torch.Tensor]:
        """k nearest among the 27 voxels around each query: distances (Q, k) (inf = none) and indices (Q, k).

        Queries are grouped by voxel and processed in order of candidate count, in chunks of about
        `budget` (query, candidate) pairs, so padding stays small.
        """
        coords = torch.floor((queries - self.origin) / self.cell_size).long() + 1
        voxel_keys, inverse = torch.unique(self._keys(coords), return_inverse=True)
        first = torch.empty(len(voxel_keys), dtype=torch.long, device=queries.device)
        first.scatter_(0, inverse, torch.arange(len(queries), device=queries.device))
        voxel_coords = coords[first]
        low, counts = self._column_ranges(voxel_coords)
        cumulative = counts.cumsum(-1)
        total = cumulative[:, -1]
        query_order = torch.argsort(total[inverse], stable=True)
        sorted_total = total[inverse[query_order]]
        distances = torch.full((len(queries), k), float("inf"), dtype=queries.dtype, device=queries.device)
        indices = torch.full((len(queries), k), -1, dtype=torch.long, device=queries.device)
        begin = 0
        while begin < len(queries):
            # largest chunk whose padded size (rows x widest row) fits the budget; totals are ascending
            padded = torch.arange(1, len(queries) - begin + 1, device=queries.device) * sorted_total[begin:].clamp(min=1)
            end = begin + max(int(torch.searchsorted(padded, budget, right=True)), 256)
            end = min(end, len(queries))
            width = max(int(sorted_total[end - 1]), k)
            chunk = query_order[begin:end]
            voxels, local = torch.unique(inverse[chunk], return_inverse=True)
            # candidate positions in the sorted reference, (V, L), -1 = padding
            column = torch.arange(width, device=queries.device).expand(len(voxels), width).contiguous()
            slot = torch.searchsorted(cumulative[voxels], column, right=True).clamp(max=8)
            offset = column - (cumulative[voxels] - counts[voxels]).gather(-1, slot)
            position = torch.where(column < total[voxels, None], low[voxels].gather(-1, slot) + offset, -1)
            if k == 1:
                found, best = self._nearest_in_rows(queries[chunk], position, local)
            else:
                found, best = self._knn_by_voxel(queries[chunk], position, local, voxel_coords[voxels], k)
            distances[chunk] = best
            indices[chunk] = torch.where(found >= 0, self.order[found.clamp(min=0)], -1)
            begin = end
        return distances, indices


    def _nearest_in_rows(
        self, queries: torch.Tensor, position: torch.Tensor, local: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest candidate per query by direct distances: (q, 1) positions and distances."""
        points = self.sorted_reference[position.clamp(min=0)]  # (V, L, 3): one gather per voxel
        points.masked_fill_((position < 0)[..., None], float("inf"))
        difference = points.index_select(0, local)  # (q, L, 3): contiguous row copies
        difference -= queries[:, None, :]
        best, nearest = difference.square_().sum(-1).min(dim=-1, keepdim=True)
        return position.index_select(0, local).gather(-1, nearest), best.sqrt()

    def _knn_by_voxel(
        self, queries: torch.Tensor, position: torch.Tensor, local: torch.Tensor, voxel: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """k nearest candidates per query, ranked with one batched product per voxel (queries of a voxel share
        its candidates) in coordinates centred on the voxel; the chosen distances are then measured exactly.
        Rounding of the product form can only swap near-ties. Returns (q, k) positions and distances."""
        by_voxel = torch.argsort(local, stable=True)
        restore = torch.empty_like(by_voxel)
        restore[by_voxel] = torch.arange(len(by_voxel), device=local.device)
        local_sorted = local[by_voxel]
        rank = torch.arange(len(local), device=local.device)
        rank -= torch.searchsorted(local_sorted, torch.arange(len(position), device=local.device))[local_sorted]
        centre = (voxel - 0.5).to(queries.dtype) * self.cell_size + self.origin  # (V, 3)
        grouped = queries.new_zeros(len(position), int(rank.max()) + 1, 3)
        grouped[local_sorted, rank] = queries[by_voxel] - centre[local_sorted]
        points = self.sorted_reference[position.clamp(min=0)] - centre[:, None, :]  # (V, L, 3)
        point_sq = points.square().sum(-1).masked_fill_(position < 0, float("inf"))
        ranking = torch.baddbmm(point_sq[:, None, :], grouped, points.transpose(-1, -2), alpha=-2.0)  # (V, n, L)
        rows = ranking.flatten(0, 1).index_select(0, local_sorted * ranking.shape[1] + rank)  # real rows only
        nearest = rows.topk(k, dim=-1, largest=False).indices[restore]  # (q, k)
        found = position[local[:, None], nearest]
        exact = (self.sorted_reference[found.clamp(min=0)] - queries[:, None, :]).norm(dim=-1)
        exact, reorder = exact.masked_fill(found < 0, float("inf")).sort(dim=-1)
        return found.gather(-1, reorder), exact


class VoxelGridIndex:
    """Exact k-NN over a fixed reference cloud (M, 3); build once, query many times (e.g. ICP iterations).

    Args:
        reference: (M, 3) points (fp32; float64 kept).
        points_per_voxel: target mean occupancy of non-empty voxels at the finest level; larger suits larger k.
        budget: (query, candidate) pairs evaluated at once (bounds memory: about 16 bytes each).
        brute_force_pairs: the search switches to brute force once the unsettled queries are few (at most
            1/64 of the reference points) and times the reference points at most this (isolated outliers
            would otherwise climb many grid levels).
    """

    def __init__(
        self,
        reference: torch.Tensor,
        points_per_voxel: float = 4.0,
        budget: int = 4_000_000,
        brute_force_pairs: int = 400_000_000,
    ) -> None:
        (reference,) = upcast(reference)
        if reference.ndim != 2 or reference.shape[-1] != 3 or len(reference) == 0:
            raise ValueError(f"geometry/nearest_neighbors.py: reference must be a non-empty (M, 3), got {tuple(reference.shape)}")
        self.reference = reference
        self.budget = budget
        self.brute_force_pairs = brute_force_pairs
        self.origin = reference.min(0).values
        self.extent = float((reference.max(0).values - self.origin).norm())
        self.base_cell = self._choose_cell_size(points_per_voxel)
        self._levels: dict[int, _GridLevel] = {}

    def _choose_cell_size(self, points_per_voxel: float) -> float:
        """Voxel size giving about `points_per_voxel` points per non-empty voxel (surface-like scaling)."""
        if self.extent == 0:
            return 1.0
        count = len(self.reference)
        cell = self.extent / max(count, 1) ** (1.0 / 3.0)
        for _ in range(3):
            keys = torch.floor((self.reference - self.origin) / cell).long()
            occupancy = count / _count_unique_voxels(keys)
            cell = cell * (points_per_voxel / occupancy) ** 0.5
        return max(cell, self.extent * 1e-6)

    def _level(self, level: int) -> _GridLevel:
        if level not in self._levels:
            self._levels[level] = _GridLevel(self.reference, self.origin, self.base_cell * 2.0**level)
        return self._levels[level]

    def _start_level(self, queries: torch.Tensor, k: int) -> int:
        """Finest level whose voxels cover the median k-th neighbour distance of a small query sample."""
        sample = queries[torch.linspace(0, len(queries) - 1, min(len(queries), 64)).long()]
        distance = self._brute_force(sample, k)[0][:, -1].median().item()
        if not distance > self.base_cell:
            return 0
        return int(torch.tensor(distance / self.base_cell).log2().ceil().item())

    @outside_autocast
    def query(
        self, queries: torch.Tensor, k: int = 1, max_distance: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """k nearest reference points of each query, nearest first.

        queries (Q, 3) -> distances (Q, k) and indices (Q, k) into the reference. Missing neighbours
        (fewer than k reference points, or none within `max_distance`) get distance inf and index -1.
        """
        queries = queries.to(self.reference.dtype)
        k_eff = min(k, len(self.reference))
        distances = torch.full((len(queries), k), float("inf"), dtype=queries.dtype, device=queries.device)
        indices = torch.full((len(queries), k), -1, dtype=torch.long, device=queries.device)
        if len(queries) == 0:
            return distances, indices
        pending = torch.arange(len(queries), device=queries.device)
        level = self._start_level(queries, k_eff)
        while len(pending) > 0:
            cell = self.base_cell * 2.0**level
            bounded = max_distance is not None and cell >= max_distance
            # a few isolated queries (outliers) are cheaper to answer by brute force than by climbing levels
            few = len(pending) <= max(64, len(self.reference) // 64)
            small = few and len(pending) * len(self.reference) <= self.brute_force_pairs
            if (cell > 2 * self.extent or small) and not bounded:
                d, i = self._brute_force(queries[pending], k_eff)
                distances[pending, :k_eff], indices[pending, :k_eff] = d, i
                break
            d, i = self._level(level).knn(queries[pending], k_eff, self.budget)
            settled = torch.ones_like(d[:, 0], dtype=torch.bool) if bounded else d[:, -1] <= cell
            distances[pending[settled], :k_eff] = d[settled]
            indices[pending[settled], :k_eff] = i[settled]
            pending = pending[~settled]
            level += 1
        if max_distance is not None:
            miss = distances > max_distance
            distances = distances.masked_fill(miss, float("inf"))
            indices = indices.masked_fill(miss, -1)
        return distances, indices

    def _brute_force(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact k-NN against all reference points, in chunks: O(Q · M).

        Candidates are ranked with the matrix-product form of the distance (fast; rounding can only swap
        near-ties); for k > 1 the best k + 8 are re-measured exactly and re-ranked. Distances are exact.
        """
        keep = 1 if k == 1 else min(k + 8, len(self.reference))
        reference_sq = self.reference.square().sum(-1)
        out_d, out_i = [], []
        rows = max(1, 2**23 // len(self.reference))
        for chunk in queries.split(rows):
            approx = torch.addmm(reference_sq[None, :], chunk, self.reference.T, alpha=-2.0)  # |q|² omitted: same per row
            if keep == 1:
                candidate = approx.argmin(dim=-1, keepdim=True)
            else:
                _, candidate = approx.topk(keep, dim=-1, largest=False)
            exact = (self.reference[candidate] - chunk[:, None, :]).norm(dim=-1)
            d, order = exact.topk(k, dim=-1, largest=False)
            out_d.append(d)
            out_i.append(candidate.gather(-1, order))
        return torch.cat(out_d), torch.cat(out_i)


def _count_unique_voxels(keys: torch.Tensor) -> int:
    """Number of distinct integer voxel coordinates (N, 3), via one sort of packed keys."""
    keys = keys - keys.min(0).values
    dims = keys.max(0).values + 1
    packed = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    return int(torch.unique(packed).numel())


@outside_autocast
def nearest_neighbors(
    queries: torch.Tensor, reference: torch.Tensor, k: int = 1, max_distance: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-off exact k-NN: (Q, 3) x (M, 3) -> distances (Q, k), indices (Q, k). See `VoxelGridIndex`."""
    return VoxelGridIndex(reference, points_per_voxel=max(4.0, k / 2)).query(queries, k=k, max_distance=max_distance)
