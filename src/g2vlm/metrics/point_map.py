"""Multi-view point-map metrics: Accuracy, Completeness, Normal Consistency (reference data-and-benchmarks.md §6).

Per sequence: every valid pixel is a point (no subsampling). The predicted points are aligned to the GT by
Umeyama Sim(3) on the pixel correspondences, then by point-to-point ICP from the identity with a maximum
correspondence distance (0.1 scene units; 100 for DTU in mm), as Open3D's defaults. Then
- Accuracy = mean (and median) distance from each aligned predicted point to its nearest GT point;
- Completeness = mean (and median) distance from each GT point to its nearest predicted point;
- Normals by PCA over 30 nearest neighbours (Open3D `estimate_normals` default), unoriented;
  NC1 = |n_pred · n_gt(nearest)| in the accuracy direction, NC2 the same in the completeness direction,
  NC = (NC1 + NC2) / 2 (mean and median versions).
Sequences are averaged with equal weight.

Cost per sequence of M points: two kd-tree builds (O(M log M)); ICP does one nearest-neighbour query of
the M points bounded by its threshold per iteration (at most 30); Accuracy and Completeness are one
nearest-neighbour query each, the normals two 30-NN queries. See `g2vlm.geometry.nearest_neighbors` (scipy's
exact cKDTree): queries far from the other cloud (a collapsed or badly wrong prediction) cost much more than
near ones. Measured with `python benchmarks/pointmap_metrics_speed.py`: see its docstring.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from g2vlm.geometry.alignment import masked_median, umeyama_sim3
from g2vlm.geometry.icp import icp_point_to_point
from g2vlm.geometry.nearest_neighbors import NearestNeighborIndex
from g2vlm.geometry.normals import knn_normals

POINT_MAP_METRIC_NAMES = (
    "accuracy",
    "accuracy_median",
    "completeness",
    "completeness_median",
    "normal_consistency",
    "normal_consistency_median",
)


def point_map_scores(
    pred_points: torch.Tensor,
    gt_points: torch.Tensor,
    icp_max_distance: float = 0.1,
    icp_max_iterations: int = 30,
    normal_neighbors: int = 30,
) -> dict[str, float]:
    """Scores of one sequence from corresponding point sets pred (M, 3) and GT (M, 3) (valid pixels only)."""
    pred_points = pred_points.to(torch.float32)
    gt_points = gt_points.to(torch.float32)
    scale, rotation, translation = umeyama_sim3(pred_points, gt_points)
    aligned = scale * pred_points @ rotation.T + translation
    gt_index = NearestNeighborIndex(gt_points)
    aligned = icp_point_to_point(
        aligned, gt_points, icp_max_distance, max_iterations=icp_max_iterations, target_index=gt_index
    ).aligned
    pred_index = NearestNeighborIndex(aligned)
    accuracy, nearest_gt = gt_index.query(aligned)
    completeness, nearest_pred = pred_index.query(gt_points)
    pred_normals = knn_normals(aligned, k=normal_neighbors, index=pred_index)
    gt_normals = knn_normals(gt_points, k=normal_neighbors, index=gt_index)
    nc1 = (gt_normals[nearest_gt[:, 0]] * pred_normals).sum(-1).abs()
    nc2 = (pred_normals[nearest_pred[:, 0]] * gt_normals).sum(-1).abs()
    accuracy, completeness = accuracy[:, 0], completeness[:, 0]
    return {
        "accuracy": accuracy.mean().item(),
        "accuracy_median": masked_median(accuracy).item(),
        "completeness": completeness.mean().item(),
        "completeness_median": masked_median(completeness).item(),
        "normal_consistency": 0.5 * (nc1.mean() + nc2.mean()).item(),
        "normal_consistency_median": 0.5 * (masked_median(nc1) + masked_median(nc2)).item(),
    }


class PointMapMetrics(Metric):
    """Acc / Comp / NC (means and medians) averaged over sequences.

    `update(pred_points, gt_points, valid)`: one sequence as (N, H, W, 3), (N, H, W, 3), (N, H, W), or a batch
    of sequences with a leading B. Predicted points are world points (pose · local points) at the GT's pixels;
    `valid` is the GT validity. Sequences with fewer than 3 valid points are skipped and counted.

    Args:
        icp_max_distance: ICP correspondence threshold in scene units (0.1 m; 100 for DTU in mm).
        icp_max_iterations: ICP iteration cap (Open3D default 30).
        normal_neighbors: k of the normal estimation (Open3D default 30).
    """

    full_state_update = False
    higher_is_better = None

    def __init__(
        self, icp_max_distance: float = 0.1, icp_max_iterations: int = 30, normal_neighbors: int = 30, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.icp_max_distance = icp_max_distance
        self.icp_max_iterations = icp_max_iterations
        self.normal_neighbors = normal_neighbors
        self.add_state("sums", default=torch.zeros(len(POINT_MAP_METRIC_NAMES), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sequences", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("skipped_sequences", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred_points: torch.Tensor, gt_points: torch.Tensor, valid: torch.Tensor) -> None:
        if pred_points.shape != gt_points.shape or pred_points.shape[:-1] != valid.shape or pred_points.shape[-1] != 3:
            raise ValueError(
                f"metrics/point_map.py: pred_points {tuple(pred_points.shape)}, gt_points {tuple(gt_points.shape)} and "
                f"valid {tuple(valid.shape)} must be (..., N, H, W, 3) x2 and (..., N, H, W)"
            )
        if pred_points.ndim == 4:
            pred_points, gt_points, valid = pred_points[None], gt_points[None], valid[None]
        for pred, gt, mask in zip(pred_points, gt_points, valid):
            mask = mask.to(torch.bool) & torch.isfinite(gt).all(-1) & torch.isfinite(pred).all(-1)
            if int(mask.sum()) < 3:
                self.skipped_sequences += 1
                continue
            scores = point_map_scores(
                pred[mask], gt[mask], self.icp_max_distance, self.icp_max_iterations, self.normal_neighbors
            )
            self.sums += torch.tensor([scores[name] for name in POINT_MAP_METRIC_NAMES], dtype=torch.float64, device=self.sums.device)
            self.sequences += 1

    def compute(self) -> dict[str, torch.Tensor]:
        values = self.sums / self.sequences
        out = {name: values[i].float() for i, name in enumerate(POINT_MAP_METRIC_NAMES)}
        out["sequences"] = self.sequences
        out["skipped_sequences"] = self.skipped_sequences
        return out
