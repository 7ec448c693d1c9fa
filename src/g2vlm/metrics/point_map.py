"""Multi-view point-map metrics: Accuracy, Completeness, Normal Consistency (reference data-and-benchmarks.md §6).

The official evaluation (G2VLM `eval_code/recons/mv_recon/eval.py` and `mv_recon/utils.py`), step by step, per
sequence; every valid pixel is a point (no subsampling):
1. Umeyama Sim(3) of the predicted points onto the GT points, in numpy, with the prediction in its own dtype
   (float32 from a model: the means and variance are float32, the covariance, SVD and result float64) —
   `umeyama` below performs the official operations in the official order;
2. aligned = c · einsum(pred, R) + t (float64);
3. point-to-point ICP from the identity, max correspondence distance 0.1 (100 for DTU in mm), Open3D's
   defaults (at most 30 iterations, stop when fitness and inlier RMSE both change by less than 1e-6), in float64
   (`g2vlm.geometry.icp`; Open3D itself is not a dependency);
4. normals by PCA over the 30 nearest neighbours (Open3D `estimate_normals` default), unoriented;
5. Accuracy = mean (and median) distance from each aligned predicted point to its nearest GT point
   (scipy cKDTree); Completeness = the same from GT to prediction; NC1 = |n_gt(nearest) · n_pred| in the
   accuracy direction, NC2 the same in the completeness direction, NC = (NC1 + NC2) / 2 (means and medians).
Sequences are averaged with equal weight.

Everything after the Umeyama step runs in float64: ICP decides when to stop by comparing changes of 1e-6, so a
float32 cloud stops at another iteration than Open3D (1.5e-3 relative in Accuracy on the issue's case). In
float64 the remaining differences from Open3D are the order of its sums (it sums the squared distances over
OpenMP threads) and its 3×3 eigen-solver: see the tests for the agreement measured against Open3D.

Cost per sequence of M points: two kd-tree builds (O(M log M)); ICP does one nearest-neighbour query of
the M points bounded by its threshold per iteration (at most 30); Accuracy and Completeness are one
nearest-neighbour query each, the normals two 30-NN queries. See `g2vlm.geometry.nearest_neighbors` (scipy's
exact cKDTree): queries far from the other cloud (a collapsed or badly wrong prediction) cost much more than
near ones. Measured with `python benchmarks/speed/pointmap_metrics.py`: see its docstring.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

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


def umeyama(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Sim(3) with c·R·source + t ≈ target, for source and target (3, M) (Umeyama 1991), with the operations and
    dtypes of the official evaluation (`mv_recon/utils.py: umeyama`): the source's mean and variance in its own
    dtype, the cross-covariance in the promoted dtype, reflections corrected. Returns (c, R (3, 3), t (3, 1))."""
    mean_source = source.mean(axis=1).reshape(-1, 1)
    mean_target = target.mean(axis=1).reshape(-1, 1)
    variance = np.square(source - mean_source).sum(axis=0).mean()
    covariance = ((target - mean_target) @ (source - mean_source).T) / source.shape[1]
    u, singular, vh = np.linalg.svd(covariance)
    sign = np.eye(source.shape[0])
    if np.linalg.det(u) * np.linalg.det(vh) < 0:
        sign[-1, -1] = -1
    scale = np.trace(np.diag(singular) @ sign) / variance
    rotation = u @ sign @ vh
    return scale, rotation, mean_target - scale * rotation @ mean_source


def point_map_scores(
    pred_points: torch.Tensor,
    gt_points: torch.Tensor,
    icp_max_distance: float = 0.1,
    icp_max_iterations: int = 30,
    normal_neighbors: int = 30,
) -> dict[str, float]:
    """Scores of one sequence from corresponding point sets pred (M, 3) (its own dtype: float32 from a model) and
    GT (M, 3) (float64), valid pixels only, in the official steps (module docstring)."""
    pred = pred_points.detach().cpu().numpy()
    gt = gt_points.detach().cpu().to(torch.float64).numpy()
    if pred.dtype != np.float64:
        pred = pred.astype(np.float32)
    scale, rotation, translation = umeyama(pred.T, gt.T)
    aligned = scale * np.einsum("mj,ij->mi", pred, rotation) + translation.T
    gt_torch = torch.from_numpy(gt)
    gt_index = NearestNeighborIndex(gt_torch)
    aligned = icp_point_to_point(torch.from_numpy(aligned), gt_torch, icp_max_distance,
                                 max_iterations=icp_max_iterations, target_index=gt_index).aligned
    pred_index = NearestNeighborIndex(aligned)
    pred_normals = knn_normals(aligned, k=normal_neighbors, index=pred_index).numpy()
    gt_normals = knn_normals(gt_torch, k=normal_neighbors, index=gt_index).numpy()
    accuracy, nearest_gt = (t[:, 0].numpy() for t in gt_index.query(aligned))
    completeness, nearest_pred = (t[:, 0].numpy() for t in pred_index.query(gt_torch))
    nc1 = np.abs(np.sum(gt_normals[nearest_gt] * pred_normals, axis=-1))
    nc2 = np.abs(np.sum(gt_normals * pred_normals[nearest_pred], axis=-1))
    return {
        "accuracy": float(np.mean(accuracy)),
        "accuracy_median": float(np.median(accuracy)),
        "completeness": float(np.mean(completeness)),
        "completeness_median": float(np.median(completeness)),
        "normal_consistency": float((np.mean(nc1) + np.mean(nc2)) / 2),
        "normal_consistency_median": float((np.median(nc1) + np.median(nc2)) / 2),
    }


class PointMapMetrics(Metric):
    """Acc / Comp / NC (means and medians) averaged over sequences.

    `update(pred_points, gt_points, valid)`: one sequence as (N, H, W, 3), (N, H, W, 3), (N, H, W), or a batch
    of sequences with a leading B. Predicted points are world points (pose · local points) at the GT's pixels,
    in their own dtype (float32 from a model, as officially); GT points should be float64 (the official GT).
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
                f"PointMapMetrics.update: pred_points {tuple(pred_points.shape)}, gt_points {tuple(gt_points.shape)} and "
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
        out = {name: values[i] for i, name in enumerate(POINT_MAP_METRIC_NAMES)}
        out["sequences"] = self.sequences
        out["skipped_sequences"] = self.skipped_sequences
        return out
