"""Write and read spatial-QA shards (schema in `qa_schema`).

    with QAShardWriter(out_dir, "synthetic-qa-train") as writer:
        writer.write(key, record, images)                       # images: JPEG bytes, one per image
        writer.write(key, record, images, meta=meta, frames=geometry_frames)   # with the clip geometry

Shards are `<prefix>-NNNNNN.tar`, rolled by size or sample count, with an index `<prefix>-index.json`
({"prefix", "shards": [{"name", "samples", "images", "bytes"}], "total_samples", "total_images", "total_bytes"}).
Reading is tolerant as for clips: truncated shards end early, bad samples are skipped into a `SkipLog`.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from g2vlm.datamodules.clip_reader import SkipLog, iter_raw_samples
from g2vlm.datamodules.decoding import image_size
from g2vlm.datamodules.qa_schema import QA_SUFFIX, QARecord, QASampleRecord, parse_qa_sample, validate_qa_record
from g2vlm.datamodules.schema import (
    META_SUFFIX,
    REASON_MISSING_FRAME,
    ClipMeta,
    SampleError,
    frame_member,
    sanitize_key,
    validate_meta,
)
from g2vlm.datamodules.shard_writer import validate_frames

TAR_BLOCK = 512


class QAShardWriter:
    """Context manager writing validated QA samples into size-rolled tar shards plus an index JSON."""

    def __init__(self, out_dir: str | Path, prefix: str, max_shard_bytes: int = 1 << 30,
                 max_samples_per_shard: int | None = None):
        if "." in prefix or "/" in prefix:
            raise ValueError(f"datamodules/qa_shards.py: prefix {prefix!r} must not contain '.' or '/'")
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

    def write(self, key: str, record: QARecord | Mapping[str, Any], images: list[bytes],
              meta: ClipMeta | Mapping[str, Any] | None = None, frames: list[Mapping[str, bytes]] | None = None) -> None:
        """Validate one QA sample and append it. images: encoded JPEG bytes, one per image. meta/frames: the
        optional geometry (frames: per image the depth/mask members, suffix -> bytes; the jpg comes from
        `images`). Raises SampleError (the sample is not written) or ValueError (bad key, writer closed)."""
        if key != sanitize_key(key):
            raise ValueError(f"datamodules/qa_shards.py: key {key!r} is not sanitised (use schema.sanitize_key)")
        if self._index is not None:
            raise ValueError("datamodules/qa_shards.py: write() after close()")
        if key in self._keys:
            raise ValueError(f"datamodules/qa_shards.py: key {key!r} written twice")
        qa_json = record.to_json() if isinstance(record, QARecord) else dict(record)
        qa = validate_qa_record(qa_json, f"{key}.{QA_SUFFIX}")
        if len(images) != qa.num_images:
            raise SampleError(REASON_MISSING_FRAME, f"{key}: {len(images)} images given, 'num_images' is {qa.num_images}")
        for index, data in enumerate(images):
            image_size(data, f"{key}.{frame_member(index, 'jpg')}")  # readable image header
        members = [(f"{key}.{QA_SUFFIX}", json.dumps(qa_json, separators=(",", ":")).encode())]
        if meta is not None:
            meta_json = meta.to_json() if isinstance(meta, ClipMeta) else dict(meta)
            typed = validate_meta(meta_json, f"{key}.{META_SUFFIX}")
            geometry = [{**(frames[i] if frames else {}), "jpg": images[i]} for i in range(len(images))]
            validate_frames(typed, geometry, key)
            members.append((f"{key}.{META_SUFFIX}", json.dumps(meta_json, separators=(",", ":")).encode()))
            for index, frame in enumerate(geometry):
                for suffix, data in frame.items():
                    members.append((f"{key}.{frame_member(index, suffix)}", bytes(data)))
        else:
            if frames:
                raise ValueError(f"datamodules/qa_shards.py: {key}: geometry frames given without meta")
            members += [(f"{key}.{frame_member(i, 'jpg')}", bytes(data)) for i, data in enumerate(images)]
        size = sum(TAR_BLOCK + -(-len(data) // TAR_BLOCK) * TAR_BLOCK for _, data in members)
        current = self.shards[-1] if self._tar is not None else None
        if current is None or (current["samples"] > 0 and (
            current["bytes"] + size > self.max_shard_bytes
            or (self.max_samples_per_shard is not None and current["samples"] >= self.max_samples_per_shard)
        )):
            self._open_next_shard()
            current = self.shards[-1]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            self._tar.addfile(info, io.BytesIO(data))
        current["samples"] += 1
        current["images"] += qa.num_images
        current["bytes"] += size
        self._keys.add(key)

    def _open_next_shard(self) -> None:
        if self._tar is not None:
            self._tar.close()
        path = self.out_dir / f"{self.prefix}-{len(self.shards):06d}.tar"
        self._tar = tarfile.open(path, "w")  # noqa: SIM115 (open across write() calls; closed in close())
        self.shards.append({"name": path.name, "samples": 0, "images": 0, "bytes": 0})

    def close(self) -> dict[str, Any]:
        """Close the last shard and write the index JSON; returns the index. Closing twice is harmless."""
        if self._index is not None:
            return self._index
        if self._tar is not None:
            self._tar.close()
            self._tar = None
        for shard in self.shards:
            shard["bytes"] = (self.out_dir / shard["name"]).stat().st_size
        self._index = {
            "prefix": self.prefix, "shards": self.shards,
            "total_samples": sum(s["samples"] for s in self.shards),
            "total_images": sum(s["images"] for s in self.shards),
            "total_bytes": sum(s["bytes"] for s in self.shards),
        }
        self.index_path.write_text(json.dumps(self._index, indent=1))
        return self._index

    def __enter__(self) -> QAShardWriter:  # noqa: PYI034
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def iter_qa_samples(urls: Iterable[str], skips: SkipLog) -> Iterator[QASampleRecord]:
    """Validated QA sample records from the shards, in order; bad samples are skipped into `skips`."""
    for url in urls:
        for raw in iter_raw_samples(url, skips):
            try:
                yield parse_qa_sample(raw)
            except SampleError as error:
                skips.record(error, url)
