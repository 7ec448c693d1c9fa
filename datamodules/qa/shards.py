"""Write and read spatial-QA shards (schema in `qa.schema`).

    with QAShardWriter(out_dir, "synthetic-qa-train") as writer:
        writer.write(key, record, images)                       # images: JPEG bytes, one per image
        writer.write(key, record, images, meta=meta, frames=geometry_frames)   # with the clip geometry

Shards are `<prefix>-NNNNNN.tar`, rolled by size or sample count (`tar_writer.RollingTarWriter`, shared with the
clip writer), with an index `<prefix>-index.json`
({"prefix", "shards": [{"name", "samples", "images", "bytes"}], "total_samples", "total_images", "total_bytes"}).
Reading is tolerant as for clips: truncated shards end early, bad samples are skipped into a `SkipLog`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from g2vlm.datamodules.qa.schema import QA_SUFFIX, QARecord, QASampleRecord, parse_qa_sample, validate_qa_record
from g2vlm.datamodules.shards.decoding import image_size
from g2vlm.datamodules.shards.schema import (
    META_SUFFIX,
    REASON_MISSING_FRAME,
    ClipMeta,
    SampleError,
    frame_member,
    validate_meta,
)
from g2vlm.datamodules.shards.skip_log import SkipLog
from g2vlm.datamodules.shards.tar_reader import iter_parsed_samples
from g2vlm.datamodules.shards.tar_writer import RollingTarWriter
from g2vlm.datamodules.shards.writer import validate_frames


class QAShardWriter(RollingTarWriter):
    """Context manager writing validated QA samples into size-rolled tar shards plus an index JSON."""

    sample_field, item_field = "samples", "images"

    def __init__(self, out_dir: str | Path, prefix: str, max_shard_bytes: int = 1 << 30,
                 max_samples_per_shard: int | None = None):
        super().__init__(out_dir, prefix, max_shard_bytes, max_samples_per_shard)

    def write(self, key: str, record: QARecord | Mapping[str, Any], images: list[bytes],
              meta: ClipMeta | Mapping[str, Any] | None = None, frames: list[Mapping[str, bytes]] | None = None) -> None:
        """Validate one QA sample and append it. images: encoded JPEG bytes, one per image. meta/frames: the
        optional geometry (frames: per image the depth/mask members, suffix -> bytes; the jpg comes from
        `images`). Raises SampleError (the sample is not written) or ValueError (bad key, writer closed)."""
        self._check_key(key)
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
                raise ValueError(f"QAShardWriter.write: {key}: frames given without meta")
            members += [(f"{key}.{frame_member(i, 'jpg')}", bytes(data)) for i, data in enumerate(images)]
        self._append(key, members, items=qa.num_images)


def iter_qa_samples(urls: Iterable[str], skips: SkipLog) -> Iterator[QASampleRecord]:
    """Validated QA sample records from the shards, in order; bad samples are skipped into `skips`."""
    return iter_parsed_samples(urls, skips, parse_qa_sample)
