"""`MultiViewDataModule`: multi-view clip shards -> `MultiViewBatch`es for geometry training.

YAML (LightningCLI):

    data:
      class_path: g2vlm.datamodules.multiview.datamodule.MultiViewDataModule
      init_args:
        train_shards: [data/synthetic/synthetic-train-{000000..000099}.tar]
        val_shards: [data/synthetic/synthetic-val-000000.tar]
        image_size: [64, 64]
        size_multiple: 8
        views_min: 2
        views_max: 4
        image_budget: 32

Rank and world size, the loaders (pinned only on CUDA), the restart count and the skip counting and logging
(`skipped_counts`, `data/skipped/<reason>`) are `ShardDataModule`'s (datamodules/shards/datamodule.py); worker ids
come from the DataLoader. Training epochs are `train_batches_per_epoch` batches on every rank (resampled shards,
`with_epoch` semantics); validation visits each clip once. A resumed run draws fresh training streams:
statistically equivalent, not a replay. Images travel as uint8 and become float32 in [0, 1] on the device
(`on_after_batch_transfer`), where the per-clip colour jitter runs too; a LightningModule that overrides
`on_after_batch_transfer` itself must call `batch.with_float_images()` (Lightning then uses the module's hook
instead of this one). Depth travels as its stored uint16 units; `batch.depth_m` and `batch.valid` compute metres
and validity wherever the batch is.
"""

from __future__ import annotations

import numpy as np
import torch

from g2vlm.datamodules.augmentation import ClipColorJitter
from g2vlm.datamodules.multiview.batch import MultiViewBatch
from g2vlm.datamodules.multiview.streams import BatchRecipe, TrainClipBatches, ValClipBatches
from g2vlm.datamodules.shards.datamodule import ShardDataModule
from g2vlm.datamodules.shards.streams import expand_shard_pattern


class MultiViewDataModule(ShardDataModule):
    """Multi-view clips from WebDataset shards with budget batching and exact-intrinsics augmentation.

    Args:
        train_shards: one shard pattern per training set (brace '{000..009}' or glob), mixed by train_weights.
        val_shards: validation shard patterns (all concatenated), or None for no validation.
        train_weights: mixing weights of the training sets (default: equal).
        image_size: (H, W) of validation batches; with aspect_ratio_range, the training pixel count.
        aspect_ratio_range: (min, max) W / H drawn log-uniformly per training batch; None keeps image_size.
        size_multiple: training sizes are multiples of this (the encoder's patch size).
        views_min, views_max: views per training clip, drawn per batch.
        view_window: training views lie within +-view_window stored frames of a reference frame (None: anywhere).
        val_views: views per validation clip (default views_max).
        image_budget: images per batch; batch size = image_budget // views.
        train_batches_per_epoch: batches per epoch on every rank.
        num_workers: DataLoader workers per rank (persistent when > 0, so resampling differs across epochs).
        shuffle_buffer: clips held in the training shuffle buffer per worker.
        crop_scale_range: focal-crop factor range (1 = largest crop of the target aspect).
        random_crop: place training crops at random (else centred on the principal point).
        color_jitter: per-clip colour jitter of training batches (brightness/contrast/saturation 0.5, hue 0.1,
            p 0.9), applied on the device in `on_after_batch_transfer`.
        grayscale_probability: per-clip greyscale probability (with color_jitter).
        seed: seed of view sampling, crops and shard resampling (combined with rank, worker and epoch).
    """

    def __init__(
        self,
        train_shards: list[str] | None = None,
        val_shards: list[str] | None = None,
        train_weights: list[float] | None = None,
        image_size: tuple[int, int] = (224, 224),
        aspect_ratio_range: tuple[float, float] | None = None,
        size_multiple: int = 14,
        views_min: int = 2,
        views_max: int = 8,
        view_window: int | None = None,
        val_views: int | None = None,
        image_budget: int = 32,
        train_batches_per_epoch: int = 1000,
        num_workers: int = 2,
        shuffle_buffer: int = 32,
        crop_scale_range: tuple[float, float] = (0.8, 1.0),
        random_crop: bool = True,
        color_jitter: bool = True,
        grayscale_probability: float = 0.05,
        seed: int = 0,
    ):
        super().__init__(val_shards, num_workers)
        self.save_hyperparameters()
        self.train_shards = train_shards
        self.train_weights = train_weights
        self.recipe = BatchRecipe(
            image_size=tuple(image_size), aspect_ratio_range=None if aspect_ratio_range is None else tuple(aspect_ratio_range),
            size_multiple=size_multiple, views_min=views_min, views_max=views_max, view_window=view_window,
            val_views=views_max if val_views is None else val_views, image_budget=image_budget,
            crop_scale_range=tuple(crop_scale_range), random_crop=random_crop,
        )
        self.jitter = ClipColorJitter(grayscale_probability=grayscale_probability) if color_jitter else None
        self.train_batches_per_epoch = train_batches_per_epoch
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self._jittered_batches = 0

    def train_dataset(self) -> TrainClipBatches:
        if not self.train_shards:
            raise ValueError("MultiViewDataModule: train_shards is empty; it needs at least one shard pattern to train")
        return TrainClipBatches(
            [expand_shard_pattern(pattern) for pattern in self.train_shards], self.train_weights, self.recipe,
            self.train_batches_per_epoch, self.rank, self.world_size, self.seed, self.shuffle_buffer, self.restart,
        )

    def val_dataset(self) -> ValClipBatches:
        return ValClipBatches(self.val_urls(), self.recipe, self.rank, self.world_size)

    def on_after_batch_transfer(self, batch: MultiViewBatch, dataloader_idx: int) -> MultiViewBatch:
        """On the device: uint8 images -> float32 in [0, 1], then per-clip colour jitter on training batches
        (kornia, one draw per clip). kornia draws its parameters from torch's CPU generator; it is forked and
        seeded by (seed, restart, rank, batch), so the jitter is reproducible, differs across ranks (seeding
        every rank alike would give all ranks the same draws) and leaves the training RNG untouched."""
        batch = batch.with_float_images()
        if self.jitter is not None and self.trainer is not None and self.trainer.training:
            with torch.random.fork_rng(devices=[]):
                seed = np.random.SeedSequence([self.seed, self.restart, self.rank, self._jittered_batches])
                torch.random.default_generator.manual_seed(int(seed.generate_state(1)[0]))
                batch.images = self.jitter.apply_per_clip(batch.images)
            self._jittered_batches += 1
        return batch
