"""Write clip samples into tar shards, the one writer for synthetic and real data.

The writer takes **encoded bytes** (the caller controls JPEG quality and 16-bit PNG depth; WebDataset's own
writer would re-encode arrays at JPEG quality 100 and 8-bit PNG), validates every sample against the schema
(message naming the field), and hands it to `tar_writer.RollingTarWriter`, which writes its members contiguously,
rolls to a new shard when the current one would exceed `max_shard_bytes` (or holds `max_clips_per_shard` clips),
and on close writes an index JSON:

    {"prefix": ..., "shards": [{"name": ..., "clips": n, "frames": f, "bytes": b}, ...],
     "total_clips": ..., "total_frames": ..., "total_bytes": ...}

Shards are named `<prefix>-NNNNNN.tar` (e.g. `synthetic-train-000000.tar`), the index `<prefix>-index.json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from g2vlm.datamodules.shards.decoding import image_size
from g2vlm.datamodules.shards.schema import (
    FRAME_SUFFIXES,
    META_SUFFIX,
    REASON_BAD_DEPTH,
    REASON_DECODE,
    REASON_MISSING_FRAME,
    REASON_SCHEMA,
    ClipMeta,
    SampleError,
    frame_member,
    validate_meta,
)
from g2vlm.datamodules.shards.tar_writer import RollingTarWriter


def validate_frames(meta: ClipMeta, frames: list[Mapping[str, bytes]], where: str) -> None:
    """Check the encoded frames against the meta: one entry per frame, allowed suffixes, a jpg each, depth iff
    has_depth (16-bit PNG or .npy), sizes equal to meta width x height, masks on every frame or none."""
    if len(frames) != meta.num_frames:
        raise SampleError(REASON_MISSING_FRAME, f"{where}: {len(frames)} frames given, meta 'frame_ids' lists {meta.num_frames}")
    with_mask = ["mask.png" in frame for frame in frames]
    if any(with_mask) and not all(with_mask):
        raise SampleError(REASON_MISSING_FRAME, f"{where}: 'mask.png' given for some frames only")
    for index, frame in enumerate(frames):
        unknown = set(frame) - set(FRAME_SUFFIXES)
        if unknown:
            raise SampleError(REASON_SCHEMA, f"{where}: frame {index} has unknown members {sorted(unknown)}; allowed {FRAME_SUFFIXES}")
        if "jpg" not in frame:
            raise SampleError(REASON_MISSING_FRAME, f"{where}: frame {index} has no 'jpg'")
        depth_suffixes = [s for s in ("depth.png", "depth.npy") if s in frame]
        if meta.has_depth and len(depth_suffixes) != 1:
            raise SampleError(REASON_MISSING_FRAME, f"{where}: frame {index} needs exactly one of depth.png/depth.npy (has_depth is true)")
        if not meta.has_depth and depth_suffixes:
            raise SampleError(REASON_SCHEMA, f"{where}: frame {index} has depth but meta 'has_depth' is false")
        for suffix in ("jpg", "depth.png", "mask.png"):
            if suffix not in frame:
                continue
            width, height, mode = image_size(frame[suffix], f"{where}.{frame_member(index, suffix)}")
            if (width, height) != (meta.width, meta.height):
                raise SampleError(
                    REASON_DECODE,
                    f"{where}.{frame_member(index, suffix)}: size {width}x{height} differs from meta 'width' x 'height' "
                    f"{meta.width}x{meta.height}",
                )
            if suffix == "depth.png" and not mode.startswith("I"):
                raise SampleError(REASON_BAD_DEPTH, f"{where}.{frame_member(index, suffix)}: PNG mode {mode!r}, expected 16-bit (I;16)")


class ShardWriter(RollingTarWriter):
    """Context manager: `with ShardWriter(out_dir, "synthetic-train") as writer: writer.write(key, meta, frames)`.

    frames: one mapping per frame, suffix -> encoded bytes, suffixes from `schema.FRAME_SUFFIXES`
    ('jpg' required; 'depth.png' or 'depth.npy' when has_depth; optional 'mask.png').
    """

    sample_field, item_field = "clips", "frames"

    def __init__(
        self,
        out_dir: str | Path,
        prefix: str,
        max_shard_bytes: int = 1 << 30,
        max_clips_per_shard: int | None = None,
    ):
        super().__init__(out_dir, prefix, max_shard_bytes, max_clips_per_shard)

    def write(self, key: str, meta: ClipMeta | Mapping[str, Any], frames: list[Mapping[str, bytes]]) -> None:
        """Validate one clip and append it. Raises SampleError (the clip is not written) or ValueError (bad key)."""
        self._check_key(key)
        record = meta.to_json() if isinstance(meta, ClipMeta) else dict(meta)
        typed = validate_meta(record, f"{key}.{META_SUFFIX}")
        validate_frames(typed, frames, key)
        members = [(f"{key}.{META_SUFFIX}", json.dumps(record, separators=(",", ":")).encode())]
        for index, frame in enumerate(frames):
            for suffix in FRAME_SUFFIXES:
                if suffix in frame:
                    members.append((f"{key}.{frame_member(index, suffix)}", bytes(frame[suffix])))
        self._append(key, members, items=typed.num_frames)


def read_index(path: str | Path) -> dict[str, Any]:
    """Load a `<prefix>-index.json` written by ShardWriter (or QAShardWriter)."""
    return json.loads(Path(path).read_text())
