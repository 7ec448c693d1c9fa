"""Relative camera pose with the official protocol (reference g2vlm-official.md §5.4, data-and-benchmarks.md §7).

Per sequence the 10 mapped frames go through one forward; the predicted camera_to_world poses and the GT
give the errors of all 45 unordered pairs (`RelativePoseMetrics`: rotation = geodesic angle of the relative
rotations, translation = angle between relative translation directions without sign). The errors of all
pairs of all sequences are pooled; RRA@τ / RTA@τ = % of pairs below τ, AUC@τ = the mean over 1°-bins of the
fraction whose max(rotation, translation) error is below the bin's edge, τ ∈ {5, 15, 30}.
"""

from __future__ import annotations

import numpy as np
import torch

from g2vlm.benchmarks.reconstruction.pose_datasets import PoseDataset
from g2vlm.benchmarks.reconstruction.predictions import PredictionFolder
from g2vlm.benchmarks.reconstruction.runner import BenchmarkRun
from g2vlm.inference import FrameError, GeometryPredictor
from g2vlm.metrics.relative_pose import RelativePoseMetrics

THRESHOLDS = (5, 15, 30)


def evaluate_pose(dataset: PoseDataset, predictor: GeometryPredictor | None = None,
                  predictions: PredictionFolder | None = None, progress: bool = False) -> dict:
    """Score a checkpoint or saved (4, 4) camera_to_world predictions on `dataset`; returns the JSON record."""
    run = BenchmarkRun("evaluate_pose", dataset, predictor, predictions)
    metrics = RelativePoseMetrics(thresholds=THRESHOLDS).to(run.device)
    images = sequences_scored = 0
    for sequence in run.sequences(f"pose {dataset.name}", progress):
        kept, values = [], []
        with run.timed("reading"):
            for index, frame in enumerate(sequence.frames):
                try:
                    values.append(frame.read_image() if predictor is not None
                                  else predictions.load(sequence.name, frame.stem, "pose"))
                    kept.append(index)
                except FrameError as error:
                    run.skipped.append(str(error))
        if len(kept) < 2:
            run.skipped.append(f"{sequence.name}: fewer than 2 readable frames, no pairs")
            continue
        if predictor is not None:
            pred = predictor.predict(predictor.prepare(values)[None]).camera_to_world  # (1, N, 4, 4)
        else:
            pred = torch.from_numpy(np.stack(values))[None]
        with run.timed("metrics"):
            metrics.update(pred.double().to(run.device),
                           torch.from_numpy(sequence.camera_to_world[kept])[None].to(run.device))
        images += len(kept)
        sequences_scored += 1
    with run.timed("metrics"):
        values = {name: float(value) for name, value in metrics.compute().items()} if metrics.update_called else {}
    record = {f"{kind}@{tau}": values.get(f"{kind}@{tau}", float("nan"))
              for tau in THRESHOLDS for kind in ("RRA", "RTA", "AUC")}
    record.update({
        "n_sequences": sequences_scored,
        "n_pairs": int(values.get("pairs", 0)),
        "n_images": images,
        "images_per_s": run.images_per_s(),
        "frame_map": dataset.frame_map_source,
        "notes": list(dataset.notes),
        **run.timing_fields(),
    })
    return record
