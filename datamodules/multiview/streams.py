"""Iterable datasets that turn clip shards into `MultiViewBatch`es (the loader batches inside the stream;
use `DataLoader(batch_size=None)`). Which shards each rank and worker reads, resampling, mixing, shuffling and the
guards against broken data: `shards.streams`.

Budget batching: per training batch, draw N views in [views_min, views_max] and an aspect ratio; the batch holds
floor(image_budget / N) clips of N views at one size. Each batch is assembled in place (`BatchAssembler`: each
clip decoded straight into the batch tensors); images leave the workers as uint8 and depth as its stored uint16
units (photometric augmentation and the float conversions happen on the device, see `MultiViewDataModule` and
`MultiViewBatch`). Samples that fail are skipped into a `SkipLog`; the counts ride on the next batch
(`MultiViewBatch.skipped`). A validation pass that yields no clip says so in a warning.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import IterableDataset

from g2vlm.datamodules.augmentation import CropBox, crop_box
from g2vlm.datamodules.multiview.batch import MultiViewBatch
from g2vlm.datamodules.multiview.batch_assembly import BatchAssembler, ScratchBuffer
from g2vlm.datamodules.multiview.view_sampling import evenly_spaced_views, sample_training_views
from g2vlm.datamodules.shards.reader import ClipRecord, iter_clip_records
from g2vlm.datamodules.shards.schema import SampleError
from g2vlm.datamodules.shards.skip_log import SkipLog
from g2vlm.datamodules.shards.streams import (
    FailuresInARow,
    TrainingStream,
    describe_shards,
    slot_shards,
    worker_slot,
)

logger = logging.getLogger("g2vlm.datamodules")


@dataclass(frozen=True)
class BatchRecipe:
    """How clips become batches. image_size (H, W) is the validation size and, with aspect_ratio_range, sets the
    training pixel count; sizes are multiples of size_multiple (the patch size)."""

    image_size: tuple[int, int] = (224, 224)
    aspect_ratio_range: tuple[float, float] | None = None
    size_multiple: int = 14
    views_min: int = 2
    views_max: int = 8
    view_window: int | None = None
    val_views: int = 8
    image_budget: int = 32
    crop_scale_range: tuple[float, float] = (0.8, 1.0)
    random_crop: bool = True

    def __post_init__(self):
        if not 1 <= self.views_min <= self.views_max:
            raise ValueError(f"BatchRecipe: need 1 <= views_min <= views_max, got {self.views_min}, {self.views_max}")
        if self.image_budget < self.views_max or self.image_budget < self.val_views:
            raise ValueError(f"BatchRecipe: image_budget {self.image_budget} is below views_max/val_views")
        if not 0 < self.crop_scale_range[0] <= self.crop_scale_range[1] <= 1:
            raise ValueError(f"BatchRecipe: crop_scale_range {self.crop_scale_range} must lie in (0, 1]")

    def training_size(self, aspect_ratio: float) -> tuple[int, int]:
        """(H, W) with W / H close to aspect_ratio and about the pixel count of image_size."""
        area = self.image_size[0] * self.image_size[1]
        multiple = self.size_multiple
        height = max(multiple, round(math.sqrt(area / aspect_ratio) / multiple) * multiple)
        width = max(multiple, round(math.sqrt(area * aspect_ratio) / multiple) * multiple)
        return height, width


def clip_crop_box(
    record: ClipRecord, frame_indices: Sequence[int], target_hw: tuple[int, int], recipe: BatchRecipe,
    rng: np.random.Generator | None,
) -> CropBox:
    """The crop of one clip: a focal crop placed at random (training, `rng` given) or the full-scale box centred on
    the principal point of the first picked view (validation)."""
    meta = record.meta
    K = meta.K[frame_indices[0]]
    principal_point = (float(K[0, 2]), float(K[1, 2]))
    if rng is None:
        return crop_box((meta.height, meta.width), target_hw, 1.0, None, principal_point)
    scale = float(rng.uniform(*recipe.crop_scale_range))
    return crop_box((meta.height, meta.width), target_hw, scale, rng if recipe.random_crop else None, principal_point)


def _with_skips(batch: MultiViewBatch, skips: SkipLog) -> MultiViewBatch:
    batch.skipped = skips.take()
    return batch


class TrainClipBatches(TrainingStream):
    """Resampled, mixed, shuffled (`TrainingStream`), budget-batched, augmented training batches; a finite epoch
    per __iter__."""

    def __init__(
        self,
        shard_sets: list[list[str]],
        weights: Sequence[float] | None,
        recipe: BatchRecipe,
        batches_per_epoch: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle_buffer: int = 32,
        restart: int = 0,
    ):
        super().__init__(shard_sets, weights, rank, world_size, seed, shuffle_buffer, restart)
        self.recipe = recipe
        self.batches_per_epoch = batches_per_epoch

    def batches_per_worker(self, workers: int) -> int:
        return math.ceil(self.batches_per_epoch / workers)

    def __iter__(self) -> Iterator[MultiViewBatch]:
        records, rng, skips, guard, workers = self.epoch_records(iter_clip_records)
        batches = self._budget_batches(records, rng, skips, guard)
        yield from itertools.islice(batches, self.batches_per_worker(workers))  # with_epoch

    def _budget_batches(self, records: Iterator[ClipRecord], rng: np.random.Generator, skips: SkipLog,
                        guard: FailuresInARow) -> Iterator[MultiViewBatch]:
        recipe = self.recipe
        scratch = ScratchBuffer()
        while True:
            num_views = int(rng.integers(recipe.views_min, recipe.views_max + 1))
            if recipe.aspect_ratio_range is None:
                target_hw = tuple(recipe.image_size)
            else:
                target_hw = recipe.training_size(float(np.exp(rng.uniform(*np.log(recipe.aspect_ratio_range)))))
            batch = BatchAssembler(recipe.image_budget // num_views, num_views, target_hw, scratch)
            while not batch.full:
                record = next(records)
                frames = sample_training_views(record.meta.num_frames, num_views, rng, recipe.view_window)
                try:
                    batch.add(record, frames, clip_crop_box(record, frames, target_hw, recipe, rng))
                    guard.passed()
                except SampleError as error:
                    guard.failed(error, record.url)
            yield _with_skips(batch.batch(), skips)


class ValClipBatches(IterableDataset):
    """One exact pass over the validation shards of this (rank, worker) slot: evenly spaced val_views views,
    centred crop at image_size, no photometric change; the last batch may be smaller."""

    def __init__(self, urls: list[str], recipe: BatchRecipe, rank: int = 0, world_size: int = 1):
        self.urls = urls
        self.recipe = recipe
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[MultiViewBatch]:
        worker, workers = worker_slot()
        if len(self.urls) % (self.world_size * workers) and self.rank == 0 and worker == 0:
            logger.warning(
                "%d validation shards over %d ranks x %d workers: ranks may run different numbers of validation "
                "batches (FSDP needs equal counts; write a multiple of world_size x workers shards)",
                len(self.urls), self.world_size, workers,
            )
        recipe = self.recipe
        skips = SkipLog()
        scratch = ScratchBuffer()
        target_hw = tuple(recipe.image_size)
        batch_size = max(1, recipe.image_budget // recipe.val_views)
        batch: BatchAssembler | None = None
        pending: MultiViewBatch | None = None  # held back one step so skips at the end ride on the last batch
        shards = slot_shards(self.urls, self.rank, self.world_size, worker, workers)
        for record in iter_clip_records(shards, skips):
            frames = evenly_spaced_views(record.meta.num_frames, recipe.val_views)
            batch = batch or BatchAssembler(batch_size, recipe.val_views, target_hw, scratch)
            try:
                batch.add(record, frames, clip_crop_box(record, frames, target_hw, recipe, None))
            except SampleError as error:
                skips.record(error, record.url)
                continue
            if batch.full:
                if pending is not None:
                    yield _with_skips(pending, skips)
                pending, batch = batch.batch(), None
        if batch is not None and batch.count:
            if pending is not None:
                yield _with_skips(pending, skips)
            pending = batch.batch()
        if pending is not None:
            yield _with_skips(pending, skips)
        elif shards:
            logger.warning("validation shards %s gave no valid clip (skipped by reason: %s): no validation metrics "
                           "from them", describe_shards(shards), dict(skips.totals))
