"""What the multi-view benchmark runners (pose, point maps) share: the checkpoint-or-predictions choice, the
sequence loop with its progress bar, the reading / metric clocks, skipped frames, and the record's run fields.

    run = BenchmarkRun("evaluate_pose", dataset, predictor, predictions)   # checks the choice
    for sequence in run.sequences(f"pose {dataset.name}", progress):
        with run.timed("reading"):
            ...                    # read frames; run.skipped.append(message) for a bad one
        with run.timed("metrics"):
            metrics.update(...)    # on run.device
    record = {...metrics..., "n_images": ..., "images_per_s": run.images_per_s(), ...dataset fields...,
              **run.timing_fields()}
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from g2vlm.benchmarks.reconstruction.predictions import PredictionFolder
from g2vlm.inference import GeometryPredictor


class BenchmarkRun:
    """One evaluation of `dataset` (its `.sequences`, each with `.name` and `.frames` having `.stem`) by a
    checkpoint (`predictor`) or by saved predictions; exactly one of the two. With predictions, every frame's
    file must exist before any work (`PredictionFolder.require`). The metrics run on `device`: the model's, or
    the CPU for saved predictions."""

    def __init__(self, where: str, dataset: Any, predictor: GeometryPredictor | None,
                 predictions: PredictionFolder | None) -> None:
        if (predictor is None) == (predictions is None):
            raise ValueError(f"{where}: give exactly one of a predictor (--ckpt) or a predictions folder")
        if predictions is not None:
            predictions.require([(sequence.name, frame.stem) for sequence in dataset.sequences
                                 for frame in sequence.frames])
        self.dataset = dataset
        self.predictor = predictor
        self.device = predictor.device if predictor is not None else torch.device("cpu")
        self.skipped: list[str] = []
        self.seconds = {"reading": 0.0, "metrics": 0.0}
        self.start = time.perf_counter()

    def sequences(self, description: str, progress: bool) -> Iterator[Any]:
        """The dataset's sequences, behind a progress bar when `progress`."""
        from tqdm import tqdm

        return tqdm(self.dataset.sequences, unit="seq", desc=description, disable=not progress)

    @contextmanager
    def timed(self, clock: str) -> Iterator[None]:
        """Adds the time spent inside to `seconds[clock]` (clock: "reading" or "metrics")."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[clock] += time.perf_counter() - start

    def images_per_s(self) -> float | None:
        """The model's throughput (images per second of forward time); None for saved predictions."""
        predictor = self.predictor
        return predictor.frames / predictor.seconds if predictor is not None and predictor.seconds > 0 else None

    def timing_fields(self) -> dict[str, Any]:
        """The record's closing fields: load width, skipped frames (count and the first 10), seconds (total since
        the run started, inference, metrics, reading) and the metric time relative to the inference time."""
        predictor = self.predictor
        return {
            "load_width": predictor.load_width if predictor is not None else None,
            "skipped_frames": len(self.skipped),
            "skipped_examples": self.skipped[:10],
            "seconds": {"total": time.perf_counter() - self.start,
                        "inference": predictor.seconds if predictor is not None else None,
                        "metrics": self.seconds["metrics"], "reading": self.seconds["reading"]},
            "metric_time_vs_inference": self.seconds["metrics"] / predictor.seconds
            if predictor is not None and predictor.seconds > 0 else None,
        }
