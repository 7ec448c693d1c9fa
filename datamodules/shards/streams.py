"""Shard streams, shared by the multi-view and the QA loaders: which shard files a pattern names, which of them each
(rank, DataLoader worker) slot reads, resampled / mixed / shuffled training streams and their guards.

Distributed contract (reference lightning-anchors.md §5): `rank` and `world_size` are given by the caller (the
DataModule captures them from the trainer at setup); the worker slot comes from the DataLoader
(`get_worker_info`). Environment variables are never read.
- Training: each (rank, worker) slot owns a disjoint slice of every shard set (`urls[rank::world][worker::
  workers]`) and draws shards from it with replacement (`resampled`), forever; the datasets cut the stream at
  ceil(batches_per_epoch / workers) batches per worker, so every rank runs the same number of steps. A shard set
  with fewer shards than slots is shared by all slots (streams may then overlap; logged).
- Validation: shards split exactly (`slot_shards`), one pass, every sample once. Every rank needs a batch: with
  several ranks, fewer validation shards than ranks x workers is refused (`check_validation_shards`).

Data that yields nothing stops the run instead of looping: a training stream raises `DataError` (naming the shards
and the skip counts per reason) after MAX_EMPTY_SHARD_DRAWS shard draws in a row without a readable sample
(`resampled`) or MAX_FAILED_IN_A_ROW samples in a row that fail after reading (`FailuresInARow`); a local shard
path that does not exist is reported at once (`expand_shard_pattern`).
"""

from __future__ import annotations

import glob
import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from g2vlm.datamodules.shards.schema import DataError, SampleError
from g2vlm.datamodules.shards.skip_log import SkipLog

logger = logging.getLogger("g2vlm.datamodules")

Sample = TypeVar("Sample")

MAX_EMPTY_SHARD_DRAWS = 200  # resampled shards in a row without one valid sample: the data is broken, stop
# Samples in a row that fail after reading (decoding, building): the data is broken, stop (a set with 99 % bad
# samples hits this about once in 25,000 draws of a thousand; one with 95 % bad samples practically never).
MAX_FAILED_IN_A_ROW = 1000
READ_AHEAD = 8  # training samples read and validated together (held beside the shuffle buffer)


class MissingShardError(DataError, FileNotFoundError):
    """A shard pattern that names local files which do not exist."""


def is_local_path(url: str) -> bool:
    """Whether a shard URL is a local file (not 'pipe:...', 'http://...', 's3://...' and the like)."""
    return "://" not in url and not url.startswith("pipe:")


def expand_shard_pattern(pattern: str) -> list[str]:
    """Brace patterns ('dir/x-{000000..000009}.tar', '::'-separated lists) and local globs ('dir/*.tar'). Local
    paths must exist (MissingShardError, naming them), so a typo is reported at once and not as a bad shard."""
    urls: list[str] = []
    for url in wds.shardlists.expand_urls(pattern):
        if any(char in url for char in "*?["):
            matches = sorted(glob.glob(url))
            if not matches:
                raise MissingShardError(f"expand_shard_pattern: shard pattern {url!r} matches no file")
            urls.extend(matches)
        else:
            urls.append(url)
    if not urls:
        raise MissingShardError(f"expand_shard_pattern: shard pattern {pattern!r} is empty")
    missing = [url for url in urls if is_local_path(url) and not os.path.isfile(url)]
    if missing:
        raise MissingShardError(f"expand_shard_pattern: shard pattern {pattern!r}: {len(missing)} of "
                                f"{len(urls)} files not found, e.g. {missing[:3]}")
    return urls


def describe_shards(urls: Sequence[str]) -> str:
    """'a.tar, b.tar, c.tar and 7 more' (for error messages)."""
    urls = list(urls)
    return ", ".join(urls[:3]) + (f" and {len(urls) - 3} more" if len(urls) > 3 else "")


def worker_slot() -> tuple[int, int]:
    """(worker id, number of workers) of the current DataLoader worker; (0, 1) in the main process."""
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def slot_shards(urls: Sequence[str], rank: int, world_size: int, worker: int, workers: int) -> list[str]:
    """The shards of one (rank, worker) slot: rank-major split, then by worker."""
    return list(urls)[rank::world_size][worker::workers]


def mixed(sources: list[Iterator[Sample]], weights: np.ndarray, rng: np.random.Generator) -> Iterator[Sample]:
    """Draw the next record from source i with probability weights[i]: the draw of `rng.choice(len(sources),
    p=weights)` (one uniform against the normalised cumulative weights), without its per-call checks."""
    cumulative = np.asarray(weights, dtype=np.float64).cumsum()
    cumulative /= cumulative[-1]
    while True:
        yield next(sources[int(cumulative.searchsorted(rng.random(), side="right"))])


def shuffled(records: Iterator[Sample], buffer_size: int, rng: np.random.Generator) -> Iterator[Sample]:
    """Shuffle with a buffer: fill it, then emit a random element and replace it with the next record."""
    buffer: list[Sample] = []
    for record in records:
        if len(buffer) < buffer_size:
            buffer.append(record)
            continue
        slot = int(rng.integers(buffer_size))
        yield buffer[slot]
        buffer[slot] = record
    rng.shuffle(buffer)
    yield from buffer


def mixing_weights(shard_sets: Sequence[Sequence[str]], weights: Sequence[float] | None, where: str) -> np.ndarray:
    """The normalised mixing weights of the training shard sets (equal by default); ValueError naming `where` (the
    dataset and argument) for an empty shard set or weights that do not fit."""
    if not shard_sets or any(not urls for urls in shard_sets):
        raise ValueError(f"{where}: every training shard set needs at least one shard")
    weights = np.ones(len(shard_sets)) if weights is None else np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(shard_sets),) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"{where}: weights {weights.tolist()} do not fit {len(shard_sets)} shard sets")
    return weights / weights.sum()


def training_shards(urls: Sequence[str], rank: int, world_size: int, worker: int, workers: int) -> list[str]:
    """The shards one (rank, worker) slot draws from: its own slice, or all of them (logged) when the set has fewer
    shards than slots."""
    slots = world_size * workers
    if len(urls) < slots:
        if worker == 0 and rank == 0:
            logger.warning("%d shards for %d rank x worker slots: training streams overlap (%s...)", len(urls), slots,
                           urls[0])
        return list(urls)
    return slot_shards(urls, rank, world_size, worker, workers)


def check_validation_shards(patterns: Sequence[str], trainer, workers: int, where: str) -> None:
    """At setup, before any training: every rank must get validation batches, since a rank without any skips
    validation while the others wait for it in their collectives (a sharded run hangs). With several ranks, fewer
    shards than ranks x workers is refused; a missing pattern raises as `expand_shard_pattern` does. Nothing is
    checked when the run does not validate (no patterns, or the trainer's limit_val_batches is 0)."""
    if not patterns or (trainer is not None and trainer.limit_val_batches == 0):
        return
    world_size = 1 if trainer is None else trainer.world_size
    num_shards = sum(len(expand_shard_pattern(pattern)) for pattern in patterns)
    slots = world_size * max(1, workers)
    if world_size > 1 and num_shards < slots:
        raise ValueError(
            f"{where}: {num_shards} validation shards for {world_size} ranks x {max(1, workers)} workers = {slots} "
            f"loader slots: a rank would get fewer validation batches than the others (none at all with fewer shards "
            f"than ranks), and a sharded run waits for it forever. Write at least {slots} validation shards (a "
            f"multiple of {slots} with equal samples each gives every rank the same number of batches), or use "
            f"fewer workers")


def resampled(
    urls: Sequence[str], read: Callable[[Iterable[str], SkipLog], Iterator[Sample]], rng: np.random.Generator,
    skips: SkipLog, where: str,
) -> Iterator[Sample]:
    """Valid samples from shards drawn with replacement, forever; `read(urls, skips)` reads shards into validated
    samples. Samples are read READ_AHEAD at a time: the tar and meta parsing code then runs warm instead of once
    between two samples' decoding. Skips are therefore counted up to READ_AHEAD samples early; the samples, their
    order and the random draws are those of reading one at a time. DataError (naming `where`, the shards and the
    skip counts) after MAX_EMPTY_SHARD_DRAWS draws in a row without a valid sample."""
    empty_draws = 0
    while True:
        url = urls[int(rng.integers(len(urls)))]
        produced = False
        samples = read([url], skips)
        while chunk := list(itertools.islice(samples, READ_AHEAD)):
            produced = True
            yield from chunk
        empty_draws = 0 if produced else empty_draws + 1
        if empty_draws >= MAX_EMPTY_SHARD_DRAWS:
            raise DataError(f"{where}: {empty_draws} shard draws in a row gave no valid sample; shards: "
                            f"{describe_shards(urls)}; skipped so far by reason: {dict(skips.totals)}")


class FailuresInARow:
    """The guard of a training stream against samples that read and validate but fail later (decoding, building):
    after MAX_FAILED_IN_A_ROW failures in a row the data is taken for broken, a DataError naming `where`, the shards
    and the skip counts. `failed` records the skip too."""

    def __init__(self, urls: Sequence[str], skips: SkipLog, where: str, limit: int = MAX_FAILED_IN_A_ROW):
        self.urls, self.skips, self.where, self.limit = urls, skips, where, limit
        self.count = 0

    def passed(self) -> None:
        self.count = 0

    def failed(self, error: SampleError, url: str) -> None:
        self.skips.record(error, url)
        self.count += 1
        if self.count >= self.limit:
            raise DataError(
                f"{self.where}: {self.count} samples in a row were skipped (none decoded, or none fit), no valid sample; shards: "
                f"{describe_shards(self.urls)}; skipped so far by reason: {dict(self.skips.totals)}; last: {error}"
            ) from None


class TrainingStream(IterableDataset):
    """Base of the training datasets (multi-view `TrainClipBatches`, QA `TrainQABatches`): every shard set
    `resampled` on this (rank, worker) slot's shards, the sets `mixed` by weight and `shuffled`, a fresh draw each
    epoch. Randomness is seeded by (seed, restart, rank, worker, epoch): a resumed run (restart + 1) continues with
    fresh draws, statistically equivalent to an uninterrupted run (WebDataset streams have no exact position).
    Errors name the subclass."""

    def __init__(self, shard_sets: list[list[str]], weights: Sequence[float] | None, rank: int, world_size: int,
                 seed: int, shuffle_buffer: int, restart: int):
        self.shard_sets = shard_sets
        self.weights = mixing_weights(shard_sets, weights, f"{type(self).__name__} shard_sets")
        self.rank, self.world_size, self.seed, self.restart = rank, world_size, seed, restart
        self.shuffle_buffer = shuffle_buffer
        self._epochs_started = 0  # per process copy: persistent workers count their own epochs

    def epoch_records(
        self, read: Callable[[Iterable[str], SkipLog], Iterator[Sample]],
    ) -> tuple[Iterator[Sample], np.random.Generator, SkipLog, FailuresInARow, int]:
        """Start an epoch: (the shuffled, mixed samples that `read` gives, the epoch's rng, its skip log, the guard
        against failures after reading, the number of DataLoader workers)."""
        worker, workers = worker_slot()
        epoch = self._epochs_started
        self._epochs_started += 1
        rng = np.random.default_rng([self.seed, self.restart, self.rank, worker, epoch])
        skips = SkipLog()
        where = type(self).__name__
        sources = [resampled(training_shards(urls, self.rank, self.world_size, worker, workers), read, rng, skips,
                             where) for urls in self.shard_sets]
        records = shuffled(mixed(sources, self.weights, rng), self.shuffle_buffer, rng)
        guard = FailuresInARow([url for urls in self.shard_sets for url in urls], skips, where)
        return records, rng, skips, guard, workers
