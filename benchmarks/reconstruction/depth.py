"""Monocular and video depth with the official protocol (reference g2vlm-official.md §5.1–5.2, data §5).

- `mono` (default; the protocol of the paper's Table 1, also on the video datasets): one image per forward
  (N = 1; images of one size are batched as independent samples), depth = z of the local points; per image,
  the prediction is resized to the GT as OpenCV's INTER_CUBIC does, aligned by the IRLS-L1 scale
  (`DepthMetrics(alignment="scale")`) and scored on GT > 0 (and < the cap).
- `video`: a whole sequence in one forward; one L1 scale-and-shift per sequence fitted by Adam exactly as the
  official code (`DepthMetrics(alignment="scale_shift")`).
Quirks of the official code kept for comparability (details in g2vlm.metrics.depth):
- the resize is `cv2.resize(..., INTER_CUBIC)`, not torch's bicubic (different tap placement in float32);
- the video fit is 1000 Adam steps of lr 1e-4 from the median ratio, which cannot move the shift by more than
  about 0.1 m: sequences that need a larger shift are scored partly unaligned;
- the "median-scale" setting of the official configs is the IRLS-L1 scale, not a median;
- KITTI and NYU-v2 have no depth cap; Bonn and KITTI GT is read in float64, Sintel and NYU-v2 in float32 (the
  IRLS weights 1 / (|r| + 1e-8) make the result depend on it).
Metrics run on the model's device (the GPU when there is one), on groups of alignment units (images or
sequences) of one size, up to METRIC_PIXELS GT pixels per update: a few large tensor ops instead of many small
ones (on a busy CPU every small multi-threaded op can wait milliseconds for its threads).
Timing: `metric_time_vs_inference` = wall seconds of the metric path (grouping the queued units, every
`DepthMetrics.update`) / wall seconds of the model's forward passes on the same images (`GeometryPredictor`,
synchronised on CUDA). On the CPU the same ratio in process CPU time is reported too
(`metric_cpu_time_vs_inference`), which other jobs on a shared machine disturb less.
Caps: Sintel and Bonn count GT < 70 m only; Sintel clips the aligned prediction at 70 m. Aggregation: every
image's (mono) or sequence's (video) metrics weighted by its valid-pixel count.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from g2vlm.benchmarks.reconstruction.depth_datasets import DepthDataset, DepthFrame
from g2vlm.benchmarks.reconstruction.predictions import PredictionFolder
from g2vlm.inference import FrameError, GeometryPredictor
from g2vlm.metrics.depth import METRIC_NAMES, DepthMetrics

MODES = ("mono", "video")
METRIC_PIXELS = 1 << 22  # GT pixels of the alignment units scored per metric update (bounds its memory)


class _Run:
    """Per-run bookkeeping: metrics, skipped frames, reading and metric seconds."""

    def __init__(self, dataset: DepthDataset, mode: str, device: torch.device) -> None:
        alignment = "scale" if mode == "mono" else "scale_shift"
        self.device = device
        self.metrics = DepthMetrics(alignment=alignment, max_depth_m=dataset.max_depth_m,
                                    clip_max_m=dataset.clip_max_m).to(device)
        self.alignment = alignment
        self.skipped: list[str] = []
        self.images = 0
        self.reading_seconds = 0.0
        self.metric_seconds = 0.0
        self.metric_cpu_seconds = 0.0
        self.inference_cpu_seconds = 0.0
        self.queued: dict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.queued_pixels = 0

    def read(self, frame: DepthFrame, with_image: bool) -> tuple[np.ndarray | None, np.ndarray] | None:
        start = time.perf_counter()
        try:
            rgb = frame.read_image() if with_image else None
            depth = frame.read_depth()
            if rgb is not None and rgb.shape[:2] != depth.shape:
                raise FrameError(f"{frame.stem}: image {rgb.shape[:2]} and depth {depth.shape} sizes differ")
        except FrameError as error:
            self.skipped.append(str(error))
            return None
        finally:
            self.reading_seconds += time.perf_counter() - start
        return rgb, depth

    def predict(self, predictor: GeometryPredictor, images: torch.Tensor) -> torch.Tensor:
        """Depth (B, N, h, w) of images (B, N, 3, H, W); the predictor keeps the forward's wall seconds, this
        the process CPU seconds of the call."""
        start = time.process_time()
        depth = predictor.predict(images).depth
        self.inference_cpu_seconds += time.process_time() - start
        return depth

    def queue(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """Alignment units pred (B, ..., h, w), gt (B, ..., H, W) (images or sequences), grouped by size and
        scored once METRIC_PIXELS GT pixels are queued."""
        self.queued.setdefault((tuple(pred.shape[1:]), tuple(gt.shape[1:])), []).append((pred, gt))
        self.queued_pixels += gt.numel()
        if self.queued_pixels >= METRIC_PIXELS:
            self.flush()

    def flush(self) -> None:
        """Score every queued group (timed: the grouping and the metric updates)."""
        start, start_cpu = time.perf_counter(), time.process_time()
        for group in self.queued.values():
            pred, gt = torch.cat([p for p, _ in group]), torch.cat([g for _, g in group])
            self.metrics.update(pred.to(self.device), gt.to(self.device))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.metric_seconds += time.perf_counter() - start
        self.metric_cpu_seconds += time.process_time() - start_cpu
        self.queued.clear()
        self.queued_pixels = 0


def evaluate_depth(dataset: DepthDataset, mode: str = "mono", predictor: GeometryPredictor | None = None,
                   predictions: PredictionFolder | None = None, batch_size: int = 8, progress: bool = False) -> dict:
    """Score a checkpoint (`predictor`) or saved predictions on `dataset`; returns the JSON record."""
    if mode not in MODES:
        raise ValueError(f"evaluate_depth: unknown mode {mode!r}; choose mono or video")
    if (predictor is None) == (predictions is None):
        raise ValueError("evaluate_depth: give exactly one of a predictor (--ckpt) or a predictions folder")
    if mode == "video" and not dataset.has_sequences:
        raise ValueError(f"evaluate_depth: {dataset.name} is a set of single images; it has mono depth only")
    if predictions is not None:
        predictions.require([(sequence.name, frame.stem) for sequence in dataset.sequences for frame in sequence.frames])
    from tqdm import tqdm

    run = _Run(dataset, mode, predictor.device if predictor is not None else torch.device("cpu"))
    bar = tqdm(total=dataset.num_frames, unit="img", desc=f"depth {dataset.name} ({mode})", disable=not progress)
    start = time.perf_counter()
    for sequence in dataset.sequences:
        if mode == "mono" and predictor is not None:
            _mono_model(run, sequence.frames, predictor, batch_size)
        elif mode == "mono":
            for frame in sequence.frames:
                _mono_saved(run, sequence.name, frame, predictions)
        else:
            _video(run, sequence.name, sequence.frames, predictor, predictions)
        bar.update(len(sequence.frames))
    run.flush()
    bar.close()
    return _record(run, dataset, mode, predictor, time.perf_counter() - start)


def _mono_model(run: _Run, frames: tuple[DepthFrame, ...], predictor: GeometryPredictor, batch_size: int) -> None:
    pending: list[tuple[np.ndarray, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        images = torch.stack([predictor.prepare([rgb]) for rgb, _ in pending])  # (B, 1, 3, H, W)
        depth = run.predict(predictor, images)[:, 0]  # (B, h, w)
        run.queue(depth, torch.from_numpy(np.stack([gt for _, gt in pending])))
        run.images += len(pending)
        pending.clear()

    for frame in frames:
        item = run.read(frame, with_image=True)
        if item is None:
            continue
        if pending and (len(pending) == batch_size or item[0].shape != pending[0][0].shape
                        or item[1].shape != pending[0][1].shape):
            flush()
        pending.append(item)
    flush()


def _mono_saved(run: _Run, sequence: str | None, frame: DepthFrame, predictions: PredictionFolder) -> None:
    item = run.read(frame, with_image=False)
    if item is None:
        return
    try:
        pred = predictions.load(sequence, frame.stem, "depth")
    except FrameError as error:
        run.skipped.append(str(error))
        return
    run.queue(torch.from_numpy(pred)[None], torch.from_numpy(item[1])[None])
    run.images += 1


def _video(run: _Run, sequence: str | None, frames: tuple[DepthFrame, ...], predictor: GeometryPredictor | None,
           predictions: PredictionFolder | None) -> None:
    rgbs, gts, preds = [], [], []
    for frame in frames:
        item = run.read(frame, with_image=predictor is not None)
        if item is None:
            continue
        if gts and item[1].shape != gts[0].shape:
            run.skipped.append(f"{sequence}/{frame.stem}: GT size {item[1].shape} differs from the sequence's {gts[0].shape}")
            continue
        if predictions is not None:
            try:
                pred = predictions.load(sequence, frame.stem, "depth")
            except FrameError as error:
                run.skipped.append(str(error))
                continue
            if preds and pred.shape != preds[0].shape:
                run.skipped.append(f"{sequence}/{frame.stem}: prediction size {pred.shape} differs from the sequence's")
                continue
            preds.append(pred)
        rgbs.append(item[0])
        gts.append(item[1])
    if not gts:
        return
    if predictor is not None:
        depth = run.predict(predictor, predictor.prepare(rgbs)[None])  # (1, N, h, w)
    else:
        depth = torch.from_numpy(np.stack(preds))[None]
    run.queue(depth, torch.from_numpy(np.stack(gts))[None])
    run.images += len(gts)


def _record(run: _Run, dataset: DepthDataset, mode: str, predictor: GeometryPredictor | None, seconds: float) -> dict:
    values = run.metrics.compute() if run.metrics.update_called else {}
    cpu_timed = predictor is not None and predictor.device.type == "cpu"
    record = {name: float(values[name]) if values else float("nan") for name in METRIC_NAMES}
    record.update({
        "n_images": run.images,
        "n_pixels": int(values["valid_pixels"]) if values else 0,
        "images_per_s": predictor.frames / predictor.seconds if predictor is not None and predictor.seconds > 0 else None,
        "mode": mode,
        "alignment": {"scale": "official_irls_scale per image", "scale_shift": "adam_l1_scale_shift per sequence"}[run.alignment],
        "max_depth_m": dataset.max_depth_m,
        "clip_max_m": dataset.clip_max_m,
        "n_sequences": len(dataset.sequences) if dataset.has_sequences else None,
        "load_width": predictor.load_width if predictor is not None else None,
        "skipped_frames": len(run.skipped),
        "skipped_examples": run.skipped[:10],
        "seconds": {"total": seconds, "inference": predictor.seconds if predictor is not None else None,
                    "metrics": run.metric_seconds, "reading": run.reading_seconds,
                    "inference_cpu": run.inference_cpu_seconds if cpu_timed else None,
                    "metrics_cpu": run.metric_cpu_seconds},
        "metric_time_vs_inference": run.metric_seconds / predictor.seconds
        if predictor is not None and predictor.seconds > 0 else None,
        "metric_cpu_time_vs_inference": run.metric_cpu_seconds / run.inference_cpu_seconds
        if cpu_timed and run.inference_cpu_seconds > 0 else None,
    })
    return record
