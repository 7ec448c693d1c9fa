"""Read clip samples from tar shards: raw samples (`tar_reader`) -> validated `ClipRecord` -> typed `Clip`.

Reading is tolerant: a truncated shard ends that shard (its incomplete last sample is dropped), and every
sample that breaks the schema is skipped. Each skip goes to a `SkipLog`, which counts it per reason
(`schema.SKIP_REASONS`) and logs it with the shard, the key and the field at fault.

Frames decode lazily: `ClipRecord.decode(frame_indices)` decodes only the frames a loader picked.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

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
    ClipMeta,
    SampleError,
    frame_member,
    validate_meta,
)
from g2vlm.datamodules.shards.skip_log import SkipLog
from g2vlm.datamodules.shards.tar_reader import RawSample, iter_parsed_samples


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
    return iter_parsed_samples(urls, skips, parse_clip)


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
