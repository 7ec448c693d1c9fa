"""Assemble a `MultiViewBatch` in place: each clip is decoded, cropped and resized straight into its slot of the
batch's tensors (plain torch tensors, allocated once per batch).

The tensors hold only what the model needs in its stored form: images uint8 (B, N, H, W, 3), depth uint16 units
(B, N, H, W) with a per-clip scale, K and camera_to_world float32, has_depth. From a DataLoader worker they cross
to the main process through shared memory, as any tensor does; uint8 and uint16 are less than half the bytes of
float32 images and metres. Masked pixels and those at or beyond z_far are zeroed in the units, so validity is
`depth_m > 0` (see `MultiViewBatch`). A clip that stores float depth (.npy) switches the batch to float32 metres
(scale 1): exact for every clip.

Per frame: JPEG and depth PNG decoded once; the crop is copied into the batch (no resize needed) or into a
reused contiguous scratch buffer that the resize kernel reads for all views at once and writes into the batch;
depth and masks are gathered nearest-exact with cached indices (`augmentation.nearest_source_indices`). The
result equals `augmentation.crop_resize` of the decoded clip, bit for bit (images, depth, K).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from g2vlm.datamodules.augmentation import (
    CropBox,
    crop_resize_intrinsics,
    nearest_source_indices,
    reduction_box,
    reduction_factor,
    resample_images,
)
from g2vlm.datamodules.multiview.batch import MultiViewBatch
from g2vlm.datamodules.shards.decoding import (
    decode_depth_npy,
    decode_depth_png,
    decode_jpeg,
    decode_mask_png,
    depth_to_metres,
)
from g2vlm.datamodules.shards.reader import ClipRecord
from g2vlm.datamodules.shards.schema import frame_member


@functools.lru_cache(maxsize=256)
def _units_below(depth_scale: float, z_far: float) -> int:
    """The number of uint16 units u whose metres float32(u) * float32(depth_scale) lie below z_far: the units at
    or above it are beyond z_far (metres grow with u, so the valid units are a prefix)."""
    metres = np.arange(65536, dtype=np.float32) * np.float32(depth_scale)
    return int(np.count_nonzero(torch.from_numpy(metres) < z_far))


class ScratchBuffer:
    """A reusable, growing uint8 buffer for the contiguous crops the resize reads (one per stream: reused pages
    cost nothing, fresh ones are faulted in by the kernel)."""

    def __init__(self):
        self._buffer = np.empty(0, dtype=np.uint8)

    def array(self, shape: tuple[int, ...], dtype: np.dtype = np.uint8) -> np.ndarray:
        """A C-contiguous array of `shape` and `dtype` over the buffer (its contents are left as they were)."""
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if self._buffer.size < nbytes:
            self._buffer = np.empty(nbytes, dtype=np.uint8)
        return self._buffer[:nbytes].view(dtype).reshape(shape)


class BatchAssembler:
    """Up to `capacity` clips of `num_views` views at `target_hw` (H, W), decoded straight into the batch tensors.

    `add` raises `SampleError` (decode, bad_depth) for a bad clip; its slot stays free for the next clip.
    `batch()` returns the clips added so far as a `MultiViewBatch` (views into the tensors)."""

    def __init__(self, capacity: int, num_views: int, target_hw: tuple[int, int], scratch: ScratchBuffer):
        height, width = target_hw
        self.capacity, self.num_views, self.target_hw = capacity, num_views, (int(height), int(width))
        self.scratch = scratch
        views = (capacity, num_views)
        self.tensors = {
            "images": torch.empty((*views, *self.target_hw, 3), dtype=torch.uint8),
            "depth": torch.empty((*views, *self.target_hw), dtype=torch.uint16),
            "K": torch.empty((*views, 3, 3), dtype=torch.float32),
            "camera_to_world": torch.empty((*views, 4, 4), dtype=torch.float32),
            "depth_scale": torch.empty((capacity,), dtype=torch.float32),
            "has_depth": torch.empty((capacity,), dtype=torch.bool),
        }
        self.arrays = {name: tensor.numpy() for name, tensor in self.tensors.items()}  # the same memory, to write
        self.metres: torch.Tensor | None = None  # float32 (capacity, N, H, W) once a clip stores float depth
        self.count = 0
        self.dataset_names: list[str] = []
        self.keys: list[str] = []
        self.frame_ids: list[list[int]] = []

    @property
    def full(self) -> bool:
        return self.count == self.capacity

    def add(self, record: ClipRecord, frame_indices: Sequence[int], box: CropBox) -> None:
        """Decode the frames `frame_indices` of `record`, crop them to `box` (trimmed by `reduction_box`) and
        resize to the target size into the next slot, K updated exactly. Raises SampleError."""
        if self.full:
            raise ValueError("BatchAssembler.add: the batch is full")
        meta, slot, target, arrays = record.meta, self.count, self.target_hw, self.arrays
        frame_indices = [int(index) for index in frame_indices]
        if len(frame_indices) != self.num_views:
            raise ValueError(f"BatchAssembler.add: frame_indices has {len(frame_indices)} frames for {self.num_views} views")
        box = reduction_box(box, target)
        same_size = (box.height, box.width) == target
        rows = slice(box.top, box.top + box.height)
        cols = slice(box.left, box.left + box.width)
        # colour first, then depth: one decoder at a time keeps its code and tables warm
        images = arrays["images"][slot]  # (N, H, W, 3)
        crops = images if same_size else self.scratch.array((self.num_views, box.height, box.width, 3))
        for view, index in enumerate(frame_indices):
            member = frame_member(index, "jpg")
            rgb = decode_jpeg(record.members[member], f"{record.key}.{member}")
            crops[view] = record.checked_size(rgb, member)[rows, cols]
        if not same_size:  # all views in one call, written straight into the batch (NCHW views of NHWC memory)
            resample_images(torch.from_numpy(crops.transpose(0, 3, 1, 2)), target, reduction_factor(box, target),
                            out=torch.from_numpy(images.transpose(0, 3, 1, 2)))
        float_depth = False
        if meta.has_depth:
            depth_members = [record.depth_member(index) for index in frame_indices]
            float_depth = any(not member.endswith("png") for member in depth_members)
            self._add_depth(record, slot, frame_indices, depth_members, float_depth, box, same_size)
        self._finish_depth(slot, meta.has_depth, float_depth, meta.depth_scale, meta.z_far)
        arrays["K"][slot] = crop_resize_intrinsics(meta.K[frame_indices], box, target)
        arrays["camera_to_world"][slot] = meta.camera_to_world[frame_indices]
        arrays["has_depth"][slot] = meta.has_depth
        self.dataset_names.append(meta.dataset)
        self.keys.append(record.key)
        self.frame_ids.append([meta.frame_ids[index] for index in frame_indices])
        self.count += 1

    def _add_depth(
        self, record: ClipRecord, slot: int, frame_indices: list[int], depth_members: list[str], float_depth: bool,
        box: CropBox, same_size: bool,
    ) -> None:
        """Depth of the picked frames into the slot: uint16 units, or float32 metres when a frame of the clip
        stores float depth (its 16-bit frames then converted exactly); masked pixels zeroed."""
        meta, target = record.meta, self.target_hw
        rows = slice(box.top, box.top + box.height)
        cols = slice(box.left, box.left + box.width)
        row_indices = None if same_size else nearest_source_indices(box.height, target[0]) + box.top
        col_indices = None if same_size else nearest_source_indices(box.width, target[1]) + box.left
        out = self._metres().numpy()[slot] if float_depth else self.arrays["depth"][slot]
        members = record.members
        if not (float_depth or same_size or any(frame_member(index, "mask.png") in members for index in frame_indices)):
            # the usual case (16-bit PNGs, no masks, resampled): the same gathers as `_resampled`, one row buffer
            picked_rows = self.scratch.array((target[0], meta.width), np.uint16)
            for view, member in enumerate(depth_members):
                stored = record.checked_size(decode_depth_png(members[member], f"{record.key}.{member}"), member)
                stored.take(row_indices, axis=0, out=picked_rows, mode="clip")
                picked_rows.take(col_indices, axis=1, out=out[view], mode="clip")
            return
        for view, (index, member) in enumerate(zip(frame_indices, depth_members)):
            name = f"{record.key}.{member}"
            if member.endswith("png"):
                stored = decode_depth_png(record.members[member], name)
                if float_depth:
                    stored = depth_to_metres(stored, meta.depth_scale, name)
            else:
                stored = depth_to_metres(decode_depth_npy(record.members[member], name), meta.depth_scale, name)
            self._resampled(record.checked_size(stored, member), rows, cols, row_indices, col_indices, out[view])
            member = frame_member(index, "mask.png")
            if member in record.members:
                keep = record.checked_size(decode_mask_png(record.members[member], f"{record.key}.{member}"), member)
                out[view][~self._resampled(keep, rows, cols, row_indices, col_indices)] = 0

    def batch(self) -> MultiViewBatch:
        count, tensors = self.count, self.tensors

        def added(tensor: torch.Tensor) -> torch.Tensor:
            return tensor if count == self.capacity else tensor[:count]

        return MultiViewBatch(
            images=added(tensors["images"]).permute(0, 1, 4, 2, 3),
            depth=added(tensors["depth"] if self.metres is None else self.metres),
            depth_scale=added(tensors["depth_scale"]),
            K=added(tensors["K"]),
            camera_to_world=added(tensors["camera_to_world"]),
            has_depth=added(tensors["has_depth"]),
            dataset_names=self.dataset_names,
            keys=self.keys,
            frame_ids=self.frame_ids,
        )

    def _finish_depth(
        self, slot: int, has_depth: bool, float_depth: bool, depth_scale: float, z_far: float | None
    ) -> None:
        """Zero the depth beyond z_far, set the slot's scale; a clip without depth gets zeros."""
        units = self.arrays["depth"][slot]
        scales = self.arrays["depth_scale"]
        if float_depth:  # float32 metres (a clip of the batch stores .npy depth), compared in float32
            metres = self.metres[slot]
            if z_far is not None:
                metres.masked_fill_(~(metres < z_far), 0.0)
            scales[slot] = 1.0
            return
        if not has_depth:
            units.fill(0)
        elif z_far is not None:
            units[units >= _units_below(depth_scale, z_far)] = 0
        scales[slot] = depth_scale
        if self.metres is not None:  # the batch holds float32 metres: convert this clip's units exactly
            depth_to_metres(units, depth_scale, out=self.metres[slot].numpy())
            scales[slot] = 1.0

    def _metres(self) -> torch.Tensor:
        """The float32 metres of the batch, created (with the slots so far converted exactly) on first use."""
        if self.metres is None:
            self.metres = torch.empty(self.tensors["depth"].shape, dtype=torch.float32)
            scales = self.arrays["depth_scale"]
            for slot in range(self.count):
                depth_to_metres(self.arrays["depth"][slot], float(scales[slot]), out=self.metres[slot].numpy())
                scales[slot] = 1.0
        return self.metres

    def _resampled(
        self, values: np.ndarray, rows: slice, cols: slice, row_indices, col_indices, out=None
    ) -> np.ndarray:
        """(H0, W0) values cropped to rows x cols, resampled nearest-exact when indices are given (into `out`)."""
        if row_indices is None:
            cropped = values[rows, cols]
            if out is None:
                return cropped
            np.copyto(out, cropped)
            return out
        if out is None:
            return values.take(row_indices, axis=0).take(col_indices, axis=1)
        picked_rows = self.scratch.array((len(row_indices), values.shape[1]), values.dtype)
        values.take(row_indices, axis=0, out=picked_rows, mode="clip")
        return picked_rows.take(col_indices, axis=1, out=out, mode="clip")
