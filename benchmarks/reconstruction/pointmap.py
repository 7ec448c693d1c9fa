"""Multi-view point maps with the official protocol (reference g2vlm-official.md §5.3, data-and-benchmarks.md §6).

Per sequence the mapped frames go through one forward; the prediction is the world point map
(camera_to_world · local points, not the global head), resized bilinearly (antialiased) to the GT grid. On
the valid GT pixels `PointMapMetrics` aligns it by Umeyama Sim(3), then point-to-point ICP (max correspondence
distance 0.1 m; 100 mm for DTU), and scores Accuracy, Completeness and Normal Consistency (means and medians),
in the official evaluation's steps and dtypes (g2vlm.metrics.point_map). Sequences are averaged with equal
weight. The GT grid and its quirks (OpenCV nearest resize, one K factor for both axes): see
g2vlm.benchmarks.reconstruction.pointmap_datasets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from g2vlm.benchmarks.reconstruction.pointmap_datasets import PointMapDataset, gt_points
from g2vlm.benchmarks.reconstruction.predictions import PredictionFolder
from g2vlm.benchmarks.reconstruction.runner import BenchmarkRun
from g2vlm.inference import FrameError, GeometryPredictor
from g2vlm.metrics.point_map import POINT_MAP_METRIC_NAMES, PointMapMetrics


def resize_points(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w, 3) -> (N, H, W, 3), bilinear with antialiasing (as the official evaluation)."""
    if points.shape[1:3] == tuple(size):
        return points
    channels_first = points.permute(0, 3, 1, 2)
    return F.interpolate(channels_first, size=size, mode="bilinear", align_corners=False, antialias=True).permute(0, 2, 3, 1)


def evaluate_pointmap(dataset: PointMapDataset, predictor: GeometryPredictor | None = None,
                      predictions: PredictionFolder | None = None, progress: bool = False) -> dict:
    """Score a checkpoint or saved (h, w, 3) world point maps on `dataset`; returns the JSON record."""
    run = BenchmarkRun("evaluate_pointmap", dataset, predictor, predictions)
    metrics = PointMapMetrics(icp_max_distance=dataset.icp_max_distance).to(run.device)
    images = 0
    for sequence in run.sequences(f"point maps {dataset.name}", progress):
        rgbs, gts, valids, preds = [], [], [], []
        with run.timed("reading"):
            for frame in sequence.frames:
                try:
                    view = frame.read()
                    points, valid = gt_points(view, dataset.gt_width)
                    if gts and points.shape != gts[0].shape:
                        raise FrameError(f"{sequence.name}/{frame.stem}: GT grid {tuple(points.shape[:2])} differs "
                                         f"from the sequence's {tuple(gts[0].shape[:2])}")
                    if predictions is not None:
                        pred = torch.from_numpy(predictions.load(sequence.name, frame.stem, "points"))
                        preds.append(resize_points(pred[None], points.shape[:2])[0])
                except FrameError as error:
                    run.skipped.append(str(error))
                    continue
                rgbs.append(view.rgb)
                gts.append(points)
                valids.append(valid)
        if not gts:
            run.skipped.append(f"{sequence.name}: no readable frame")
            continue
        if predictor is not None:
            world = predictor.predict(predictor.prepare(rgbs)[None]).world_points[0]  # (N, h, w, 3)
            pred = resize_points(world, gts[0].shape[:2])
        else:
            pred = torch.stack(preds)
        with run.timed("metrics"):
            metrics.update(pred.to(run.device), torch.stack(gts).to(run.device), torch.stack(valids).to(run.device))
        images += len(gts)
    values = {name: float(value) for name, value in metrics.compute().items()} if metrics.update_called else {}
    record = {name: values.get(name, float("nan")) for name in POINT_MAP_METRIC_NAMES}
    record.update({
        "n_sequences": int(values.get("sequences", 0)),
        "skipped_sequences": int(values.get("skipped_sequences", 0)),
        "n_images": images,
        "images_per_s": run.images_per_s(),
        "icp_max_distance": dataset.icp_max_distance,
        "gt_grid": f"width {dataset.gt_width}, height snapped to 14" if dataset.gt_width else "native",
        "frame_map": dataset.frame_map_source,
        **run.timing_fields(),
    })
    return record
