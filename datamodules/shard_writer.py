"""Write clip samples into tar shards, the one writer for synthetic and real data.

The writer takes **encoded bytes** (the caller controls JPEG quality and 16-bit PNG depth; WebDataset's own
writer would re-encode arrays at JPEG quality 100 and 8-bit PNG), validates every sample against the schema
(message naming the field), writes its members contiguously, rolls to a new shard when the current one
would exceed `max_shard_bytes` (or holds `max_clips_per_shard` clips), and on close writes an index JSON:

    {"prefix": ..., "shards": [{"name": ..., "clips": n, "frames": f, "bytes": b}, ...],
     "total_clips": ..., "total_frames": ..., "total_bytes": ...}

Shards are named `<prefix>-NNNNNN.tar` (e.g. `synthetic-train-000000.tar`), the index `<prefix>-index.json`.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from g2vlm.datamodules.decoding import image_size
from g2vlm.datamodules.schema import (
    FRAME_SUFFIXES,
    META_SUFFIX,
    REASON_BAD_DEPTH,
    REASON_DECODE,
    REASON_MISSING_FRAME,
    REASON_SCHEMA,
    ClipMeta,
    SampleError,
    frame_member,
    sanitize_key,
    validate_meta,
)

TAR_BLOCK = 512


def _tar_member_bytes(size: int) -> int:
    """Bytes a member takes in a tar: one header block plus the data padded to whole blocks."""
    return TAR_BLOCK + (size + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK


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


class ShardWriter:
    """Context manager: `with ShardWriter(out_dir, "synthetic-train") as writer: writer.write(key, meta, frames)`.

    frames: one mapping per frame, suffix -> encoded bytes, suffixes from `schema.FRAME_SUFFIXES`
    ('jpg' required; 'depth.png' or 'depth.npy' when has_depth; optional 'mask.png').
    """

    def __init__(
        self,
        out_dir: str | Path,
        prefix: str,
        max_shard_bytes: int = 1 << 30,
        max_clips_per_shard: int | None = None,
    ):
        if "." in prefix or "/" in prefix:
            raise ValueError(f"datamodules/shard_writer.py: prefix {prefix!r} must not contain '.' or '/'")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.max_shard_bytes = max_shard_bytes
        self.max_clips_per_shard = max_clips_per_shard
        self.shards: list[dict[str, Any]] = []
        self._tar: tarfile.TarFile | None = None
        self._keys: set[str] = set()
        self._index: dict[str, Any] | None = None

    @property
    def index_path(self) -> Path:
        return self.out_dir / f"{self.prefix}-index.json"

    def shard_path(self, number: int) -> Path:
        return self.out_dir / f"{self.prefix}-{number:06d}.tar"

    def write(self, key: str, meta: ClipMeta | Mapping[str, Any], frames: list[Mapping[str, bytes]]) -> None:
        """Validate one clip and append it. Raises SampleError (the clip is not written) or ValueError (bad key)."""
        if key != sanitize_key(key):
            raise ValueError(f"datamodules/shard_writer.py: key {key!r} is not sanitised (use schema.sanitize_key / clip_key)")
        if self._index is not None:
            raise ValueError("datamodules/shard_writer.py: write() after close()")
        if key in self._keys:
            raise ValueError(f"datamodules/shard_writer.py: key {key!r} written twice")
        record = meta.to_json() if isinstance(meta, ClipMeta) else dict(meta)
        typed = validate_meta(record, f"{key}.{META_SUFFIX}")
        validate_frames(typed, frames, key)
        members = [(f"{key}.{META_SUFFIX}", json.dumps(record, separators=(",", ":")).encode())]
        for index, frame in enumerate(frames):
            for suffix in FRAME_SUFFIXES:
                if suffix in frame:
                    members.append((f"{key}.{frame_member(index, suffix)}", bytes(frame[suffix])))
        size = sum(_tar_member_bytes(len(data)) for _, data in members)
        current = self.shards[-1] if self._tar is not None else None
        if current is None or (current["clips"] > 0 and (
            current["bytes"] + size > self.max_shard_bytes
            or (self.max_clips_per_shard is not None and current["clips"] >= self.max_clips_per_shard)
        )):
            self._open_next_shard()
            current = self.shards[-1]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            self._tar.addfile(info, io.BytesIO(data))
        current["clips"] += 1
        current["frames"] += typed.num_frames
        current["bytes"] += size
        self._keys.add(key)

    def _open_next_shard(self) -> None:
        if self._tar is not None:
            self._tar.close()
        path = self.shard_path(len(self.shards))
        self._tar = tarfile.open(path, "w")  # noqa: SIM115 (open across write() calls; closed in close())
        self.shards.append({"name": path.name, "clips": 0, "frames": 0, "bytes": 0})

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
            "total_clips": sum(s["clips"] for s in self.shards),
            "total_frames": sum(s["frames"] for s in self.shards),
            "total_bytes": sum(s["bytes"] for s in self.shards),
        }
        self.index_path.write_text(json.dumps(index, indent=1))
        self._index = index
        return index

    def __enter__(self) -> ShardWriter:  # noqa: PYI034 (python 3.10 has no typing.Self)
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_index(path: str | Path) -> dict[str, Any]:
    """Load a `<prefix>-index.json` written by ShardWriter."""
    return json.loads(Path(path).read_text())
