"""`QADataModule`: spatial-QA shards (and general VQA shards) -> token-budget `QABatch`es for joint training.

YAML (LightningCLI):

    data:
      class_path: g2vlm.datamodules.qa.datamodule.QADataModule
      init_args:
        tokenizer: weights/Qwen2-VL-2B-Instruct          # a LOCAL folder (tokenizer files of Qwen2-VL)
        train_shards: [data/spar/spar-train-{000000..000099}.tar, data/llava-ov/vqa-{000000..000049}.tar]
        train_weights: [1.0, 1.0]                          # official SPAR mix : LLaVA-OV = 1 : 1
        val_shards: [data/spar/spar-val-000000.tar]
        geometry_size: [518, 518]
        vit_size: [756, 756]
        max_tokens: 40960

Each sample goes through the chat template of `qa.template` (both image copies, labels only on answer tokens,
every turn kept). Training: shard sets drawn with replacement and mixed by weight (one stream per rank x worker
slot, seeded by (seed, restart, rank, worker, epoch), rank and world size taken from the trainer), a shuffle
buffer, then samples packed in order until the next one would pass `max_tokens` (a sample that alone passes the
budget is skipped and counted as `over_budget`); an epoch is `train_batches_per_epoch` batches on every rank.
Validation: shards split exactly by rank and worker, one pass, packed the same way. Bad samples are skipped and
counted per reason; rank and world size, the loaders, the restart count and the skip totals (`skipped_counts`,
logged as `data/skipped/<reason>`) are `ShardDataModule`'s (datamodules/shards/datamodule.py).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

from torch.utils.data import IterableDataset

from g2vlm.datamodules.qa.batch import QABatch, QASample
from g2vlm.datamodules.qa.schema import QASampleRecord
from g2vlm.datamodules.qa.shards import iter_qa_samples
from g2vlm.datamodules.qa.template import QATemplate
from g2vlm.datamodules.qa.tokenizer import load_tokenizer
from g2vlm.datamodules.shards.datamodule import ShardDataModule
from g2vlm.datamodules.shards.schema import REASON_OVER_BUDGET, SampleError
from g2vlm.datamodules.shards.skip_log import SkipLog
from g2vlm.datamodules.shards.streams import (
    FailuresInARow,
    TrainingStream,
    expand_shard_pattern,
    slot_shards,
    worker_slot,
)


def token_budget_batches(samples: Iterator[QASample], max_tokens: int, skips: SkipLog) -> Iterator[QABatch]:
    """Pack samples (each at most `max_tokens` long: `built` skips longer ones) in order into batches of at most
    `max_tokens` tokens; the last, partial batch is yielded too. Each batch carries the skips counted since the last."""
    batch: list[QASample] = []
    tokens = 0
    for sample in samples:
        if batch and tokens + sample.num_tokens > max_tokens:
            yield QABatch(batch, skips.take())
            batch, tokens = [], 0
        batch.append(sample)
        tokens += sample.num_tokens
    if batch:
        yield QABatch(batch, skips.take())


def built(records: Iterator[QASampleRecord], template: QATemplate, max_tokens: int, skips: SkipLog,
          guard: FailuresInARow | None = None) -> Iterator[QASample]:
    """The records through the chat template; a record that fails (an image that does not decode, ...) or whose
    sample is longer than `max_tokens` (never truncated) is skipped into `skips`, and counted by `guard` (training:
    too many failures in a row stop the stream)."""
    for record in records:
        try:
            sample = template.build(record)
            if sample.num_tokens > max_tokens:
                raise SampleError(REASON_OVER_BUDGET, f"{record.key}: {sample.num_tokens} tokens, more than max_tokens "
                                                      f"{max_tokens}")
        except SampleError as error:
            if guard is None:
                skips.record(error, record.url)
            else:
                guard.failed(error, record.url)
            continue
        if guard is not None:
            guard.passed()
        yield sample


class TrainQABatches(TrainingStream):
    """Resampled, mixed, shuffled (`TrainingStream`), token-budget training batches; `batches_per_epoch` per epoch
    on every rank."""

    def __init__(self, shard_sets: list[list[str]], weights: Sequence[float] | None, template: QATemplate,
                 max_tokens: int, batches_per_epoch: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle_buffer: int = 64, restart: int = 0):
        super().__init__(shard_sets, weights, rank, world_size, seed, shuffle_buffer, restart)
        self.template, self.max_tokens, self.batches_per_epoch = template, max_tokens, batches_per_epoch

    def __iter__(self) -> Iterator[QABatch]:
        records, _, skips, guard, workers = self.epoch_records(iter_qa_samples)
        samples = built(records, self.template, self.max_tokens, skips, guard)
        batches = token_budget_batches(samples, self.max_tokens, skips)
        yield from itertools.islice(batches, math.ceil(self.batches_per_epoch / workers))


class ValQABatches(IterableDataset):
    """One exact pass over this (rank, worker) slot's validation shards, token-budget batches."""

    def __init__(self, urls: list[str], template: QATemplate, max_tokens: int, rank: int = 0, world_size: int = 1):
        self.urls, self.template, self.max_tokens = urls, template, max_tokens
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[QABatch]:
        worker, workers = worker_slot()
        skips = SkipLog()
        records = iter_qa_samples(slot_shards(self.urls, self.rank, self.world_size, worker, workers), skips)
        yield from token_budget_batches(built(records, self.template, self.max_tokens, skips), self.max_tokens, skips)


class QADataModule(ShardDataModule):
    """Spatial-QA / VQA shards with the joint-training chat template, packed to a token budget.

    Args:
        tokenizer: LOCAL folder holding the tokenizer (a Qwen2-VL model folder, or one written by
            `qa.tokenizer.build_character_tokenizer` for the tiny presets). Nothing is downloaded.
        train_shards: one shard pattern per training set (brace or glob), mixed by train_weights.
        val_shards: validation shard patterns, or None.
        train_weights: mixing weights of the training sets (default equal).
        geometry_size, vit_size: (H, W) of the geometric (DINO) and semantic (ViT) image copies.
        geometry_patch_size, vit_patch_size, vit_merge_size: the encoders' patching (token counts, size checks).
        max_tokens: token budget of one packed batch (official 40,960 per GPU).
        train_batches_per_epoch: batches per epoch on every rank.
        draw_markers: draw the question's markers on the ViT copies (SPAR); the geometry copy stays clean.
        markers_on_geometry: draw them on the geometry copies too (not official; for models trained from scratch).
        num_workers, shuffle_buffer, seed: loader workers per rank, training shuffle buffer, stream seed.
    """

    def __init__(
        self,
        tokenizer: str,
        train_shards: list[str] | None = None,
        val_shards: list[str] | None = None,
        train_weights: list[float] | None = None,
        geometry_size: tuple[int, int] = (518, 518),
        vit_size: tuple[int, int] = (756, 756),
        geometry_patch_size: int = 14,
        vit_patch_size: int = 14,
        vit_merge_size: int = 2,
        max_tokens: int = 40960,
        train_batches_per_epoch: int = 1000,
        draw_markers: bool = True,
        markers_on_geometry: bool = False,
        num_workers: int = 2,
        shuffle_buffer: int = 64,
        seed: int = 0,
    ):
        super().__init__(val_shards, num_workers)
        self.save_hyperparameters()
        self.tokenizer_folder = tokenizer
        self.train_shards, self.train_weights = train_shards, train_weights
        self.template_args = dict(geometry_size=tuple(geometry_size), vit_size=tuple(vit_size),
                                  geometry_patch_size=geometry_patch_size, vit_patch_size=vit_patch_size,
                                  vit_merge_size=vit_merge_size, draw_markers=draw_markers,
                                  markers_on_geometry=markers_on_geometry)
        self.max_tokens = max_tokens
        self.train_batches_per_epoch = train_batches_per_epoch
        self.shuffle_buffer, self.seed = shuffle_buffer, seed
        self._template: QATemplate | None = None

    @property
    def template(self) -> QATemplate:
        if self._template is None:
            self._template = QATemplate(load_tokenizer(self.tokenizer_folder), **self.template_args)
        return self._template

    @property
    def tokenizer(self):
        return self.template.tokenizer

    def train_dataset(self) -> TrainQABatches:
        if not self.train_shards:
            raise ValueError("QADataModule: train_shards is empty; it needs at least one shard pattern to train")
        return TrainQABatches([expand_shard_pattern(p) for p in self.train_shards], self.train_weights, self.template,
                              self.max_tokens, self.train_batches_per_epoch, self.rank, self.world_size, self.seed,
                              self.shuffle_buffer, self.restart)

    def val_dataset(self) -> ValQABatches:
        return ValQABatches(self.val_urls(), self.template, self.max_tokens, self.rank, self.world_size)
