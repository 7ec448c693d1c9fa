"""`MultiViewBatch`: the typed batch every multi-view loader yields.

The loaders ship the pixels in their stored integer form — images uint8, depth as the stored uint16 units with
a per-clip scale — less than half the bytes of float32 images, float32 metres and a bool mask through the
worker -> main process hand-off and the host -> device copy. The float forms come on demand wherever the batch
is: `depth_m` and `valid` are computed from `depth` and `depth_scale` (float32 units x float32 scale, exactly as
the stored metres are defined); `MultiViewDataModule.on_after_batch_transfer` turns the images into float32 in
[0, 1] on the device, so a LightningModule always sees float images. Outside Lightning call `with_float_images()`.

Lightning moves the batch with `.to(device)` (an object with a `to` method is transferred whole); `.pin_memory()`
is what `DataLoader(pin_memory=True)` calls.

Lightning's batch-size inference walks the fields and finds B from `images` first, but the string lists make
it ambiguous: log with `self.log(..., batch_size=batch.batch_size)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch


@dataclass
class MultiViewBatch:
    """B clips of N views each, all H x W (one N and one size per batch).

    images (B, N, 3, H, W) uint8 from the loader (stored channels-last, i.e. not contiguous), float32 in [0, 1]
    and contiguous after `with_float_images()`; depth (B, N, H, W) stored depth, 0 where invalid (masked and
    beyond z_far already zeroed): uint16 units, or float32 metres when a clip of the batch stores float depth;
    depth_scale (B,) float32 metres per unit (1 for float32 metres); K (B, N, 3, 3) float32 pixels;
    camera_to_world (B, N, 4, 4) float32 OpenCV; has_depth (B,) bool; dataset_names, keys: B strings;
    frame_ids: B lists of N source frame ids; skipped: samples skipped (per reason) while this batch was assembled.
    Derived: depth_m (B, N, H, W) float32 metres, 0 where invalid; valid (B, N, H, W) bool.
    """

    images: torch.Tensor
    depth: torch.Tensor
    depth_scale: torch.Tensor
    K: torch.Tensor
    camera_to_world: torch.Tensor
    has_depth: torch.Tensor
    dataset_names: list[str]
    keys: list[str]
    frame_ids: list[list[int]]
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.images.shape[0]

    @property
    def num_views(self) -> int:
        return self.images.shape[1]

    @property
    def depth_m(self) -> torch.Tensor:
        """(B, N, H, W) float32 metres (0 = invalid): float32(depth) * float32(depth_scale), bit for bit the product
        the stored format defines. uint16 goes through int16 -> int32, conversions every device implements."""
        depth = self.depth
        if depth.dtype == torch.uint16:
            depth = depth.view(torch.int16).to(torch.int32).bitwise_and_(0xFFFF)
        return depth.to(torch.float32) * self.depth_scale.to(torch.float32).view(-1, 1, 1, 1)

    @property
    def valid(self) -> torch.Tensor:
        """(B, N, H, W) bool: depth_m > 0 (the loader zeroed masked pixels and those at or beyond z_far)."""
        return self.depth_m > 0

    def _map_tensors(self, function) -> MultiViewBatch:
        return replace(self, **{
            f.name: function(getattr(self, f.name)) for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)
        })

    def with_float_images(self) -> MultiViewBatch:
        """The batch with images as float32 in [0, 1] (unchanged if they already are float)."""
        if self.images.is_floating_point():
            return self
        images = self.images.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
        return replace(self, images=images)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MultiViewBatch:
        return self._map_tensors(lambda tensor: tensor.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> MultiViewBatch:
        return self._map_tensors(lambda tensor: tensor.pin_memory())
