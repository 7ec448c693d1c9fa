"""Multi-view point maps with the official protocol (reference g2vlm-official.md §5.3, data-and-benchmarks.md §6).

Per sequence the mapped frames go through one forward; the prediction is the world point map
(camera_to_world · local points, not the global head), resized bilinearly (antialiased) to the GT grid. On
the valid GT pixels `PointMapMetrics` aligns it by Umeyama Sim(3), then point-to-point ICP (max correspondence
distance 0.1 m; 100 mm for DTU), and scores Accuracy, Completeness and Normal Consistency (means and medians).
Sequences are averaged with equal weight. The metrics run on the model's device (the GPU when there is one).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from g2vlm.benchmarks.files import FrameError
from g2vlm.benchmarks.inference import GeometryPredictor
from g2vlm.benchmarks.pointmap_datasets import PointMapDataset, gt_points
from g2vlm.benchmarks.predictions import PredictionFolder

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
    if (predictor is None) == (predictions is None):
        raise ValueError("benchmarks/pointmap.py: give exactly one of a predictor (--ckpt) or a predictions folder")
    if predictions is not None:
        predictions.require([(sequence.name, frame.stem) for sequence in dataset.sequences for frame in sequence.frames])
    from tqdm import tqdm

    device = predictor.device if predictor is not None else torch.device("cpu")
    metrics = PointMapMetrics(icp_max_distance=dataset.icp_max_distance).to(device)
    skipped: list[str] = []
    metric_seconds = reading_seconds = 0.0
    images = 0
    start = time.perf_counter()
    for sequence in tqdm(dataset.sequences, unit="seq", desc=f"point maps {dataset.name}", disable=not progress):
        read_start = time.perf_counter()
        rgbs, gts, valids, preds = [], [], [], []
        for frame in sequence.frames:
            try:
                view = frame.read()
                points, valid = gt_points(view, dataset.gt_width)
                if gts and points.shape != gts[0].shape:
                    raise FrameError(f"{sequence.name}/{frame.stem}: GT grid {tuple(points.shape[:2])} differs from "
                                     f"the sequence's {tuple(gts[0].shape[:2])}")
                if predictions is not None:
                    pred = torch.from_numpy(predictions.load(sequence.name, frame.stem, "points"))
                    preds.append(resize_points(pred[None], points.shape[:2])[0])
            except FrameError as error:
                skipped.append(str(error))
                continue
            rgbs.append(view.rgb)
            gts.append(points)
            valids.append(valid)
        reading_seconds += time.perf_counter() - read_start
        if not gts:
            skipped.append(f"{sequence.name}: no readable frame")
            continue
        if predictor is not None:
            world = predictor.predict(predictor.prepare(rgbs)[None]).world_points[0]  # (N, h, w, 3)
            pred = resize_points(world, gts[0].shape[:2])
        else:
            pred = torch.stack(preds)
        metric_start = time.perf_counter()
        metrics.update(pred.to(device), torch.stack(gts).float().to(device), torch.stack(valids).to(device))
        metric_seconds += time.perf_counter() - metric_start
        images += len(gts)
    values = {name: float(value) for name, value in metrics.compute().items()} if metrics.update_called else {}
    record = {name: values.get(name, float("nan")) for name in POINT_MAP_METRIC_NAMES}
    record.update({
        "n_sequences": int(values.get("sequences", 0)),
        "skipped_sequences": int(values.get("skipped_sequences", 0)),
        "n_images": images,
        "images_per_s": predictor.frames / predictor.seconds if predictor is not None and predictor.seconds > 0 else None,
        "icp_max_distance": dataset.icp_max_distance,
        "gt_grid": f"width {dataset.gt_width}, height snapped to 14" if dataset.gt_width else "native",
        "frame_map": dataset.frame_map_source,
        "load_width": predictor.load_width if predictor is not None else None,
        "skipped_frames": len(skipped),
        "skipped_examples": skipped[:10],
        "seconds": {"total": time.perf_counter() - start, "inference": predictor.seconds if predictor is not None else None,
                    "metrics": metric_seconds, "reading": reading_seconds},
        "metric_time_vs_inference": metric_seconds / predictor.seconds
        if predictor is not None and predictor.seconds > 0 else None,
    })
    return record
