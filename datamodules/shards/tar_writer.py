"""Size- and count-rolled tar shards with an index JSON: the part the clip and QA shard writers share.

Its subclasses, `shards.writer.ShardWriter` (clips) and `qa.shards.QAShardWriter`, set the index's count fields
(`sample_field`, `item_field`) and validate their own sample schema in `write`, then check the key (`_check_key`)
and hand the sample's members to `_append(key, [(name, data), ...], items=...)`.

Shards are `<prefix>-NNNNNN.tar`, the index `<prefix>-index.json`:

    {"prefix": ..., "shards": [{"name": ..., <sample_field>: n, <item_field>: f, "bytes": b}, ...],
     "total_<sample_field>": ..., "total_<item_field>": ..., "total_bytes": ...}

A sample's members are written contiguously, in the order given, with mode 0o644 and mtime 0, so the same samples
always give the same bytes. A new shard starts when the current one holds a sample and the next sample would take
it past `max_shard_bytes` (counted as one 512-byte header plus the padded data per member), or when it already
holds `max_samples_per_shard` samples. The index records each shard's real file size.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from g2vlm.datamodules.shards.schema import sanitize_key

TAR_BLOCK = 512


def tar_member_bytes(size: int) -> int:
    """Bytes a member of `size` data bytes takes in a tar: one header block plus the data padded to whole blocks."""
    return TAR_BLOCK + (size + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK


class RollingTarWriter:
    """Base of the shard writers (context manager); subclasses set `sample_field` and `item_field`."""

    sample_field: str
    item_field: str

    def __init__(self, out_dir: str | Path, prefix: str, max_shard_bytes: int, max_samples_per_shard: int | None):
        if "." in prefix or "/" in prefix:
            raise ValueError(f"{type(self).__name__}: prefix {prefix!r} must not contain '.' or '/'")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.max_shard_bytes = max_shard_bytes
        self.max_samples_per_shard = max_samples_per_shard
        self.shards: list[dict[str, Any]] = []
        self._tar: tarfile.TarFile | None = None
        self._keys: set[str] = set()
        self._index: dict[str, Any] | None = None

    @property
    def index_path(self) -> Path:
        return self.out_dir / f"{self.prefix}-index.json"

    def shard_path(self, number: int) -> Path:
        return self.out_dir / f"{self.prefix}-{number:06d}.tar"

    def _check_key(self, key: str) -> None:
        """Raise ValueError for a key that is not sanitised, already written, or arrives after close()."""
        if key != sanitize_key(key):
            raise ValueError(f"{type(self).__name__}: key {key!r} is not sanitised (use schema.sanitize_key / clip_key)")
        if self._index is not None:
            raise ValueError(f"{type(self).__name__}: write() after close()")
        if key in self._keys:
            raise ValueError(f"{type(self).__name__}: key {key!r} written twice")

    def _append(self, key: str, members: list[tuple[str, bytes]], items: int) -> None:
        """Write one validated sample's members (name, data), rolling to a new shard first when needed."""
        size = sum(tar_member_bytes(len(data)) for _, data in members)
        current = self.shards[-1] if self._tar is not None else None
        samples = self.sample_field
        if current is None or (current[samples] > 0 and (
            current["bytes"] + size > self.max_shard_bytes
            or (self.max_samples_per_shard is not None and current[samples] >= self.max_samples_per_shard)
        )):
            self._open_next_shard()
            current = self.shards[-1]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            self._tar.addfile(info, io.BytesIO(data))
        current[samples] += 1
        current[self.item_field] += items
        current["bytes"] += size
        self._keys.add(key)

    def _open_next_shard(self) -> None:
        if self._tar is not None:
            self._tar.close()
        path = self.shard_path(len(self.shards))
        self._tar = tarfile.open(path, "w")  # noqa: SIM115 (open across write() calls; closed in close())
        self.shards.append({"name": path.name, self.sample_field: 0, self.item_field: 0, "bytes": 0})

    def close(self) -> dict[str, Any]:
        """Close the last shard and write the index JSON; returns the index. Closing twice is harmless."""
        if self._index is not None:
            return self._index
        if self._tar is not None:
            self._tar.close()
            self._tar = None
        for shard in self.shards:
            shard["bytes"] = (self.out_dir / shard["name"]).stat().st_size
        index = {
            "prefix": self.prefix,
            "shards": self.shards,
            f"total_{self.sample_field}": sum(s[self.sample_field] for s in self.shards),
            f"total_{self.item_field}": sum(s[self.item_field] for s in self.shards),
            "total_bytes": sum(s["bytes"] for s in self.shards),
        }
        self.index_path.write_text(json.dumps(index, indent=1))
        self._index = index
        return index

    def __enter__(self) -> RollingTarWriter:  # noqa: PYI034 (python 3.10 has no typing.Self)
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

