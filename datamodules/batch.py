"""`MultiViewBatch`: the typed batch every multi-view loader yields.

The loaders ship images as uint8 (a quarter of the bytes of float32 through the worker -> main process hand-off
and the host -> device copy); `MultiViewDataModule.on_after_batch_transfer` turns them into float32 in [0, 1] on
the device, so a LightningModule always sees float images. Outside Lightning call `with_float_images()`.

Lightning moves it to the device by itself: its `move_data_to_device` (lightning_utilities
`apply_to_collection`) copies dataclasses field by field and moves every tensor field. `.to(device)` and
`.pin_memory()` are there for code outside Lightning and for `DataLoader(pin_memory=True)`.

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
    and contiguous after `with_float_images()`; depth_m (B, N, H, W) float32 metres, 0 where invalid;
    valid (B, N, H, W) bool; K (B, N, 3, 3) float32 pixels; camera_to_world (B, N, 4, 4) float32 OpenCV;
    has_depth (B,) bool; dataset_names, keys: B strings; frame_ids: B lists of N source frame ids;
    skipped: samples skipped (per reason) while this batch was assembled.
    """

    images: torch.Tensor
    depth_m: torch.Tensor
    valid: torch.Tensor
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
