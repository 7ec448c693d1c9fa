"""Shard sources: which shard files a pattern names, which of them each (rank, DataLoader worker) slot reads, and
the mixing and shuffling of sample streams (shared by the multi-view and QA streams).

Splitting is bound to the rank and world size given by the caller and the loader's worker id
(`get_worker_info`); environment variables are never read.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np
import webdataset as wds
from g2vlm.datamodules.shards.schema import DataError
from torch.utils.data import get_worker_info

Sample = TypeVar("Sample")


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
                raise MissingShardError(f"datamodules/clip_streams.py: shard pattern {url!r} matches no file")
            urls.extend(matches)
        else:
            urls.append(url)
    if not urls:
        raise MissingShardError(f"datamodules/clip_streams.py: shard pattern {pattern!r} is empty")
    missing = [url for url in urls if is_local_path(url) and not os.path.isfile(url)]
    if missing:
        raise MissingShardError(f"datamodules/clip_streams.py: shard pattern {pattern!r}: {len(missing)} of "
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
