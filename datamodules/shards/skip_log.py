"""`SkipLog`: per-reason counts of the samples a reader or loader skipped, each skip logged with its shard."""

from __future__ import annotations

import collections
import logging

from g2vlm.datamodules.shards.schema import SampleError

logger = logging.getLogger("g2vlm.datamodules")


class SkipLog:
    """Counts skipped samples per reason (`schema.SKIP_REASONS`) and logs each skip (the first `log_first` per
    reason, then every `log_every`-th, so a shard full of bad samples does not flood the log). `counts` holds the
    skips since the last `take()`, `totals` all of them."""

    def __init__(self, log_first: int = 10, log_every: int = 1000):
        self.counts: collections.Counter[str] = collections.Counter()
        self.totals: collections.Counter[str] = collections.Counter()
        self.log_first = log_first
        self.log_every = log_every

    def record(self, error: SampleError, source: str) -> None:
        self.counts[error.reason] += 1
        self.totals[error.reason] += 1
        count = self.totals[error.reason]
        if count <= self.log_first or count % self.log_every == 0:
            logger.warning("skipped sample (%s, #%d of this reason): %s: %s", error.reason, count, source, error)

    def take(self) -> dict[str, int]:
        """Return the counts since the last call and reset them."""
        counts = dict(self.counts)
        self.counts.clear()
        return counts
