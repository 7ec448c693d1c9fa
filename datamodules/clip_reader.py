"""Read clip samples from tar shards: tar members -> raw samples -> validated `ClipRecord` -> typed `Clip`.

Reading is tolerant: a truncated shard ends that shard (its incomplete last sample is dropped), and every
sample that breaks the schema is skipped. Each skip goes to a `SkipLog`, which counts it per reason
(`schema.SKIP_REASONS`) and logs it with the shard, the key and the field at fault.

Frames decode lazily: `ClipRecord.decode(frame_indices)` decodes only the frames a loader picked.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import webdataset as wds
from g2vlm.datamodules.decoding import (
    decode_depth_npy,
    decode_depth_png,
    decode_jpeg,
    decode_mask_png,
    depth_to_metres,
)
from g2vlm.datamodules.schema import (
    META_SUFFIX,
    REASON_DECODE,
    REASON_MISSING_FRAME,
    REASON_SCHEMA,
    REASON_TRUNCATED,
    ClipMeta,
    SampleError,
    frame_member,
    validate_meta,
)

logger = logging.getLogger("g2vlm.datamodules")


class SkipLog:
    """Counts skipped samples per reason and logs each skip (the first `log_first` per reason, then every
    `log_every`-th, so a shard full of bad samples does not flood the log)."""

    def __init__(self, log_first: int = 10, log_every: int = 1000):
        self.counts: collections.Counter[str] = collections.Counter()
        self.log_first = log_first
        self.log_every = log_every

    def record(self, error: SampleError, source: str) -> None:
        self.counts[error.reason] += 1
        count = self.counts[error.reason]
        if count <= self.log_first or count % self.log_every == 0:
            logger.warning("skipped sample (%s, #%d of this reason): %s: %s", error.reason, count, source, error)

    def take(self) -> dict[str, int]:
        """Return the counts since the last call and reset them."""
        counts = dict(self.counts)
        self.counts.clear()
        return counts


@dataclass
class RawSample:
    """The members of one sample as read from the tar: suffix ('meta.json', '000.jpg', ...) -> bytes."""

    key: str
    url: str
    members: dict[str, bytes]


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset grouping: the key is the path up to the first dot of the base name; the suffix (lower-cased)
    is the rest. 'dir/clip.007.depth.png' -> ('dir/clip', '007.depth.png')."""
    directory, base = os.path.split(name)
    stem, _, suffix = base.partition(".")
    return (os.path.join(directory, stem) if directory else stem), suffix.lower()


class _CountingReader:
    """A read-only stream wrapper that counts the bytes read through it."""

    def __init__(self, stream):
        self.stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        return data


def _tar_mode(url: str) -> str:
    return "r|gz" if url.endswith((".tar.gz", ".tgz")) else "r|"


def iter_raw_samples(url: str, skips: SkipLog) -> Iterator[RawSample]:
    """Group the members of one shard into samples. A truncated shard is counted once as `truncated`, its
    incomplete last sample is dropped and reading stops there. A repeated member ends the sample as `schema`.

    Python's streaming tar reader takes a shard cut at a member boundary or inside a header for a clean end, so
    a plain tar must also hold at least one (end-of-archive) block after the last member's data, as every tar
    writer leaves; compressed shards report truncation through their decompressor."""
    key: str | None = None
    members: dict[str, bytes] = {}
    broken = False
    try:
        with wds.gopen(url, "rb") as raw:
            stream = _CountingReader(raw)
            data_end = 0
            with tarfile.open(fileobj=stream, mode=_tar_mode(url)) as tar:
                for info in tar:
                    data_end = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                    if not info.isfile():
                        continue
                    data = tar.extractfile(info).read()
                    if len(data) != info.size:
                        raise tarfile.ReadError(f"member {info.name} has {len(data)} of {info.size} bytes")
                    member_key, suffix = split_member_name(info.name)
                    if member_key != key:
                        if key is not None and not broken:
                            yield RawSample(key, url, members)
                        key, members, broken = member_key, {}, False
                    if suffix in members and not broken:
                        skips.record(SampleError(REASON_SCHEMA, f"{key}: member '{suffix}' appears twice"), url)
                        broken = True
                    members[suffix] = data
            total = stream.count + len(raw.read())
            if _tar_mode(url) == "r|" and total < data_end + tarfile.BLOCKSIZE:
                raise tarfile.ReadError(f"no end-of-archive block after byte {data_end} ({total} bytes)")
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        skips.record(SampleError(REASON_TRUNCATED, f"{key or 'first sample'}: shard ends early ({error})"), url)
        return
    if key is not None and not broken:
        yield RawSample(key, url, members)


@dataclass
class Clip:
    """Decoded frames of one clip (the frames picked by `frame_indices`, in that order).

    images (n, H, W, 3) uint8; depth_m (n, H, W) float32 metres, 0 = invalid, None without depth;
    mask (n, H, W) bool or None; K (n, 3, 3) and camera_to_world (n, 4, 4) float64 for those frames.
    """

    key: str
    meta: ClipMeta
    frame_indices: list[int]
    images: np.ndarray
    depth_m: np.ndarray | None
    mask: np.ndarray | None

    @property
    def K(self) -> np.ndarray:
        return self.meta.K[self.frame_indices]

    @property
    def camera_to_world(self) -> np.ndarray:
        return self.meta.camera_to_world[self.frame_indices]


@dataclass
class ClipRecord:
    """A sample whose meta is validated and whose frame members are all present; frames not yet decoded."""

    key: str
    url: str
    meta: ClipMeta
    members: dict[str, bytes]

    def depth_member(self, index: int) -> str:
        png = frame_member(index, "depth.png")
        return png if png in self.members else frame_member(index, "depth.npy")

    def decode(self, frame_indices: Sequence[int] | None = None) -> Clip:
        """Decode the picked frames (all by default). Raises SampleError (decode, bad_depth)."""
        indices = list(range(self.meta.num_frames)) if frame_indices is None else [int(i) for i in frame_indices]
        width, height = self.meta.width, self.meta.height
        images = np.empty((len(indices), height, width, 3), dtype=np.uint8)
        depth_m = np.empty((len(indices), height, width), dtype=np.float32) if self.meta.has_depth else None
        has_mask = frame_member(0, "mask.png") in self.members
        mask = np.empty((len(indices), height, width), dtype=bool) if has_mask else None
        for slot, index in enumerate(indices):
            member = frame_member(index, "jpg")
            images[slot] = self._check_size(decode_jpeg(self.members[member], f"{self.key}.{member}"), member)
            if depth_m is not None:
                member = self.depth_member(index)
                name = f"{self.key}.{member}"
                if member.endswith("png"):
                    units = decode_depth_png(self.members[member], name)
                else:
                    units = decode_depth_npy(self.members[member], name)
                depth_to_metres(self._check_size(units, member), self.meta.depth_scale, name, out=depth_m[slot])
            if mask is not None:
                member = frame_member(index, "mask.png")
                mask[slot] = self._check_size(decode_mask_png(self.members[member], f"{self.key}.{member}"), member)
        return Clip(self.key, self.meta, indices, images, depth_m, mask)

    def _check_size(self, array: np.ndarray, member: str) -> np.ndarray:
        if array.shape[:2] != (self.meta.height, self.meta.width):
            raise SampleError(
                REASON_DECODE,
                f"{self.key}.{member}: size {array.shape[1]}x{array.shape[0]} differs from meta width x height "
                f"{self.meta.width}x{self.meta.height}",
            )
        return array


def parse_clip(raw: RawSample) -> ClipRecord:
    """Validate meta.json and the presence of every frame member. Raises SampleError (schema, bad_pose,
    missing_frame)."""
    if META_SUFFIX not in raw.members:
        raise SampleError(REASON_SCHEMA, f"{raw.key}: no '{META_SUFFIX}' member")
    try:
        record = json.loads(raw.members[META_SUFFIX])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SampleError(REASON_SCHEMA, f"{raw.key}.{META_SUFFIX}: not valid JSON ({error})") from None
    meta = validate_meta(record, f"{raw.key}.{META_SUFFIX}")
    has_mask = frame_member(0, "mask.png") in raw.members
    for index in range(meta.num_frames):
        needed = [frame_member(index, "jpg")]
        if has_mask:
            needed.append(frame_member(index, "mask.png"))
        for member in needed:
            if member not in raw.members:
                raise SampleError(REASON_MISSING_FRAME, f"{raw.key}: frame {index} has no '{member}' member")
        if meta.has_depth and not (
            frame_member(index, "depth.png") in raw.members or frame_member(index, "depth.npy") in raw.members
        ):
            raise SampleError(REASON_MISSING_FRAME, f"{raw.key}: frame {index} has no depth member (has_depth is true)")
    return ClipRecord(raw.key, raw.url, meta, raw.members)


def iter_clip_records(urls: Iterable[str], skips: SkipLog) -> Iterator[ClipRecord]:
    """Validated clip records from the shards, in order; bad samples are skipped into `skips`."""
    for url in urls:
        for raw in iter_raw_samples(url, skips):
            try:
                yield parse_clip(raw)
            except SampleError as error:
                skips.record(error, url)


def read_clips(
    urls: Iterable[str],
    skips: SkipLog | None = None,
    select_frames: Callable[[ClipRecord], Sequence[int]] | None = None,
) -> Iterator[Clip]:
    """Fully decoded clips from the shards (all frames, or those `select_frames(record)` picks)."""
    skips = SkipLog() if skips is None else skips
    for record in iter_clip_records(urls, skips):
        try:
            yield record.decode(None if select_frames is None else select_frames(record))
        except SampleError as error:
            skips.record(error, record.url)


def valid_depth_mask(depth_m: np.ndarray, z_far: float | None) -> np.ndarray:
    """depth > 0 (and < z_far when set)."""
    valid = depth_m > 0
    if z_far is not None:
        valid &= depth_m < z_far
    return valid
