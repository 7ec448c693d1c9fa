"""Read clip samples from tar shards: tar members -> raw samples -> validated `ClipRecord` -> typed `Clip`.

Reading is tolerant: a truncated shard ends that shard (its incomplete last sample is dropped), and every
sample that breaks the schema is skipped. Each skip goes to a `SkipLog`, which counts it per reason
(`schema.SKIP_REASONS`) and logs it with the shard, the key and the field at fault.

Frames decode lazily: `ClipRecord.decode(frame_indices)` decodes only the frames a loader picked.
"""

from __future__ import annotations

import collections
import functools
import gzip
import json
import logging
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import webdataset as wds
from g2vlm.datamodules.shards.decoding import (
    decode_depth_npy,
    decode_depth_png,
    decode_jpeg,
    decode_mask_png,
    depth_to_metres,
    image_size,
)
from g2vlm.datamodules.shards.schema import (
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
    `log_every`-th, so a shard full of bad samples does not flood the log). `counts` holds the skips since the
    last `take()`, `totals` all of them."""

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


@dataclass
class RawSample:
    """The members of one sample as read from the tar: suffix ('meta.json', '000.jpg', ...) -> bytes."""

    key: str
    url: str
    members: dict[str, bytes]


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset grouping: the key is the path up to the first dot of the base name; the suffix (lower-cased)
    is the rest. 'dir/clip.007.depth.png' -> ('dir/clip', '007.depth.png')."""
    if "/" not in name:  # the usual flat layout
        stem, _, suffix = name.partition(".")
        return stem, suffix.lower()
    directory, base = os.path.split(name)
    stem, _, suffix = base.partition(".")
    return (os.path.join(directory, stem) if directory else stem), suffix.lower()


_BLOCK = tarfile.BLOCKSIZE
_END_BLOCK = bytes(_BLOCK)
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_SKIPPED_TYPES = (tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE)


def _header_number(field: bytes, what: str) -> int:
    """A numeric header field: NUL/space-terminated octal, or GNU base-256 (first byte 0x80 or 0xff)."""
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return value - (256 ** (len(field) - 1)) if field[:1] == b"\xff" else value
    digits = field.split(b"\0", 1)[0].strip()
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        raise tarfile.ReadError(f"{what}: not an octal number {field!r}") from None


def _checksum_matches(header: bytes) -> bool:
    """The stored header checksum equals the sum of the header bytes (the checksum field counted as eight
    spaces), over unsigned bytes or, as some old writers computed it, over signed bytes."""
    stored = _header_number(header[148:156], "header checksum")
    unsigned = sum(header) - sum(header[148:156]) + 8 * 32
    if stored == unsigned:
        return True
    return stored == unsigned - 256 * sum(1 for byte in header[:148] + header[156:] if byte > 127)


def _pax_records(data: bytes) -> dict[str, str]:
    """'LENGTH KEY=VALUE\\n' records of a pax extended header."""
    records, position = {}, 0
    while position < len(data) and data[position:position + 1] != b"\0":
        length_text, _, _ = data[position:position + 20].partition(b" ")
        try:
            length = int(length_text)
        except ValueError:
            raise tarfile.ReadError(f"bad pax record at byte {position}") from None
        key, _, value = data[position + len(length_text) + 1:position + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        position += length
    return records


def iter_tar_members(stream) -> Iterator[tuple[str, bytes]]:
    """(name, data) of the regular files of an (uncompressed) tar stream, in order: ustar, GNU (long names) and pax
    (path, size) headers; directories and links are passed over. Two reads per member (its data, then its padding
    together with the next header), which costs a fraction of `tarfile`'s streaming reader. Raises
    `tarfile.ReadError` for a cut or corrupt archive, also for one cut at a member boundary (a tar ends with an
    all-zero end-of-archive block; a missing one means the end was lost)."""
    long_name: str | None = None
    pax: dict[str, str] = {}
    header = stream.read(_BLOCK)
    while True:
        if len(header) != _BLOCK:
            raise tarfile.ReadError("no end-of-archive block" if not header else f"a header cut at {len(header)} bytes")
        if header == _END_BLOCK:
            return
        if not _checksum_matches(header):
            raise tarfile.ReadError("bad header checksum")
        name = header[:100].split(b"\0", 1)[0]
        if header[257:262] == b"ustar" and header[345:346] != b"\0":
            name = header[345:500].split(b"\0", 1)[0] + b"/" + name
        name = name.decode("utf-8", "surrogateescape")
        size = int(pax["size"]) if "size" in pax else _header_number(header[124:136], f"{name}: size")
        kind = header[156:157]
        data = stream.read(size)
        if len(data) != size:
            raise tarfile.ReadError(f"member {name}: {len(data)} of {size} bytes")
        padding = -size % _BLOCK
        header = stream.read(padding + _BLOCK)  # the padding, then the next header
        if len(header) < padding:
            raise tarfile.ReadError(f"member {name} padding: {len(header)} of {padding} bytes")
        header = header[padding:]
        if kind == tarfile.GNUTYPE_LONGNAME:
            long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif kind == tarfile.XHDTYPE:
            pax = _pax_records(data)
        elif kind in (tarfile.XGLTYPE, tarfile.GNUTYPE_LONGLINK):
            continue
        else:
            name = pax.get("path", long_name or name)
            long_name, pax = None, {}
            if kind in _FILE_TYPES:
                yield name, data
            elif kind not in _SKIPPED_TYPES:
                raise tarfile.ReadError(f"member {name}: unsupported tar member type {kind!r}")


def _tar_stream(raw, url: str):
    return gzip.GzipFile(fileobj=raw, mode="rb") if url.endswith((".tar.gz", ".tgz")) else raw


def iter_raw_samples(url: str, skips: SkipLog) -> Iterator[RawSample]:
    """Group the members of one shard into samples. A truncated shard is counted once as `truncated`, its
    incomplete last sample is dropped and reading stops there. A repeated member ends the sample as `schema`.
    A shard cut at a member boundary is truncated too (`iter_tar_members`)."""
    key: str | None = None
    members: dict[str, bytes] = {}
    broken = False
    try:
        with wds.gopen(url, "rb") as raw:
            for name, data in iter_tar_members(_tar_stream(raw, url)):
                member_key, suffix = split_member_name(name)
                if member_key != key:
                    if key is not None and not broken:
                        yield RawSample(key, url, members)
                    key, members, broken = member_key, {}, False
                if suffix in members and not broken:
                    skips.record(SampleError(REASON_SCHEMA, f"{key}: member '{suffix}' appears twice"), url)
                    broken = True
                members[suffix] = data
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
            images[slot] = self.checked_size(decode_jpeg(self.members[member], f"{self.key}.{member}"), member)
            if depth_m is not None:
                member = self.depth_member(index)
                name = f"{self.key}.{member}"
                if member.endswith("png"):
                    units = decode_depth_png(self.members[member], name)
                else:
                    units = decode_depth_npy(self.members[member], name)
                depth_to_metres(self.checked_size(units, member), self.meta.depth_scale, name, out=depth_m[slot])
            if mask is not None:
                member = frame_member(index, "mask.png")
                mask[slot] = self.checked_size(decode_mask_png(self.members[member], f"{self.key}.{member}"), member)
        return Clip(self.key, self.meta, indices, images, depth_m, mask)

    def checked_size(self, array: np.ndarray, member: str) -> np.ndarray:
        """`array` (H, W, ...) decoded from `member`, if its size is the meta's; else SampleError (decode)."""
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
    _check_declared_size(raw, meta)
    has_mask = frame_member(0, "mask.png") in raw.members
    present = raw.members.keys()
    if (_frame_members(meta.num_frames, "jpg") <= present
            and (not has_mask or _frame_members(meta.num_frames, "mask.png") <= present)
            and (not meta.has_depth or _frame_members(meta.num_frames, "depth.png") <= present)):
        return ClipRecord(raw.key, raw.url, meta, raw.members)  # the usual case: one set test per member kind
    for index in range(meta.num_frames):  # the first frame at fault, or depth stored as .npy
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


def _check_declared_size(raw: RawSample, meta: ClipMeta) -> None:
    """The first frame's image header must give the meta's width x height: loaders allocate by the meta's size
    before decoding, so it is checked against the data first (every decoded frame is checked again)."""
    member = frame_member(0, "jpg")
    if member not in raw.members:
        return  # reported as a missing frame
    width, height, _ = image_size(raw.members[member], f"{raw.key}.{member}")
    if (width, height) != (meta.width, meta.height):
        raise SampleError(REASON_DECODE, f"{raw.key}.{META_SUFFIX}: declares width x height {meta.width}x{meta.height} "
                                         f"but {member} is {width}x{height}")


@functools.lru_cache(maxsize=256)
def _frame_members(num_frames: int, suffix: str) -> frozenset[str]:
    """The member suffixes of `suffix` for frames 0 .. num_frames - 1."""
    return frozenset(frame_member(index, suffix) for index in range(num_frames))


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
