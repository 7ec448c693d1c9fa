"""Geometric and photometric augmentation of one clip, with exact intrinsics updates.

Geometry (DUSt3R / pi3 style, reference g2vlm-official.md §4.4): one crop box per clip, with the target aspect
ratio, scaled by a focal-crop factor (< 1 zooms in, i.e. a longer focal length), placed at random or centred on
the principal point; then a resize to the target size (bilinear with antialiasing for images, nearest-exact
for depth and masks, so depth values are never blended across edges). No flips: a mirrored image has no
rigid camera.

Image resampling is exact for the geometry (an affine intensity ramp comes out unshifted): downscales by 2x or
more first average k x k blocks (k = floor of the factor; the box is trimmed to multiples of k), then bilinear
with half-pixel centres. PIL-style antialiased filters (torch's `antialias=True`, PIL's LANCZOS) truncate their
windows asymmetrically and shift content by up to ~0.07 px; kornia's `resize` antialiases with a float Gaussian
blur at ~10x the cost. uint8 images stay uint8 (torch's fast bilinear path; the loaders ship uint8, a quarter
of the bytes of float32, and the DataModule converts to float on the device).

Intrinsics with pixel centres at integer coordinates: the crop box [left, left + width) x [top, top + height)
resized by (sx, sy) = (W / width, H / height) maps a pixel coordinate u to (u - left + 0.5) * sx - 0.5, so

    fx' = fx sx,   skew' = skew sx,   cx' = (cx - left + 0.5) sx - 0.5,
    fy' = fy sy,                      cy' = (cy - top + 0.5) sy - 0.5.

Photometry (kornia): colour jitter with one draw per clip (never shared across clips), optional greyscale.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import kornia.augmentation
import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CropBox:
    """An integer crop box in source pixels."""

    left: int
    top: int
    width: int
    height: int


def crop_box(
    source_hw: tuple[int, int],
    target_hw: tuple[int, int],
    scale: float = 1.0,
    rng: np.random.Generator | None = None,
    principal_point: tuple[float, float] | None = None,
) -> CropBox:
    """The largest box of the target's aspect ratio inside the source, times `scale` (<= 1), placed uniformly at
    random if `rng` is given, else centred on `principal_point` (cx, cy) (the image centre if None), clamped."""
    source_h, source_w = source_hw
    target_h, target_w = target_hw
    aspect = target_w / target_h
    if source_w / source_h >= aspect:
        height, width = source_h, source_h * aspect
    else:
        height, width = source_w / aspect, source_w
    width = int(min(max(round(width * scale), 1), source_w))
    height = int(min(max(round(height * scale), 1), source_h))
    if rng is not None:
        left = int(rng.integers(0, source_w - width + 1))
        top = int(rng.integers(0, source_h - height + 1))
    else:
        cx, cy = principal_point if principal_point is not None else ((source_w - 1) / 2, (source_h - 1) / 2)
        left = int(min(max(round(cx + 0.5 - width / 2), 0), source_w - width))
        top = int(min(max(round(cy + 0.5 - height / 2), 0), source_h - height))
    return CropBox(left, top, width, height)


def crop_resize_intrinsics(
    K: torch.Tensor | np.ndarray, box: CropBox, target_hw: tuple[int, int]
) -> torch.Tensor | np.ndarray:
    """K (..., 3, 3) of the source (a tensor or a numpy array) -> K of the crop `box` resized to target_hw (H, W),
    of the same kind. Exact (see module doc)."""
    scale_x = target_hw[1] / box.width
    scale_y = target_hw[0] / box.height
    updated = K.copy() if isinstance(K, np.ndarray) else K.clone()
    updated[..., 0, 0] = K[..., 0, 0] * scale_x
    updated[..., 0, 1] = K[..., 0, 1] * scale_x
    updated[..., 0, 2] = (K[..., 0, 2] - box.left + 0.5) * scale_x - 0.5
    updated[..., 1, 1] = K[..., 1, 1] * scale_y
    updated[..., 1, 2] = (K[..., 1, 2] - box.top + 0.5) * scale_y - 0.5
    return updated


def reduction_factor(box: CropBox, target_hw: tuple[int, int]) -> int:
    """Integer box-filter factor applied before the bilinear resize: floor of the downscale factor when it is
    at least 2, else 1."""
    factor = min(box.height / target_hw[0], box.width / target_hw[1])
    return int(factor) if factor >= 2 else 1


def reduction_box(box: CropBox, target_hw: tuple[int, int]) -> CropBox:
    """`box` trimmed at its right and bottom to multiples of the reduction factor, so pooling drops no pixel
    (the factor is unchanged: the trimmed box still holds factor x target pixels)."""
    factor = reduction_factor(box, target_hw)
    return CropBox(box.left, box.top, box.width - box.width % factor, box.height - box.height % factor)


@functools.lru_cache(maxsize=1024)
def nearest_source_indices(source_length: int, target_length: int) -> np.ndarray:
    """(target_length,) int64: the source pixel each output pixel takes when `source_length` pixels are resampled
    nearest-exact to `target_length`. Computed by resampling an index ramp with torch's own nearest-exact kernel
    (float32), so gathering with these indices equals `F.interpolate(..., mode="nearest-exact")`. Read-only."""
    ramp = torch.arange(source_length, dtype=torch.float32).view(1, 1, source_length)
    indices = F.interpolate(ramp, size=target_length, mode="nearest-exact")[0, 0].to(torch.int64).numpy()
    indices.flags.writeable = False
    return indices


def box_average(images: torch.Tensor, factor: int) -> torch.Tensor:
    """uint8 images (N, C, h, w), h and w multiples of `factor` -> float32 (N, C, h / factor, w / factor)
    (channels-last strides): the mean of every factor x factor block, bit for bit `F.avg_pool2d(images.float(),
    factor)` (exact integer block sums, one float division each) at a third to a half of its cost on 3-channel images:
    whole pixel rows are summed, then each row's horizontal sums are shifted whole-row adds and every
    `factor`-th pixel is kept."""
    n, channels, height, width = images.shape
    pixels = images.permute(0, 2, 3, 1).contiguous()  # (N, h, w, C); no copy for channels-last input
    rows = pixels.view(n, height // factor, factor, width * channels)
    dtype = torch.int16 if factor * factor * 255 <= torch.iinfo(torch.int16).max else torch.int32
    sums = rows[:, :, 0].to(dtype)  # (N, h / factor, w * C): sums over each block's rows
    for row in range(1, factor):
        sums += rows[:, :, row]
    # blocks[..., p] = sums over `factor` pixels from p on; every block starts at a p below `span`
    span = (width - factor + 1) * channels
    blocks = torch.empty_like(sums)
    torch.add(sums[..., :span], sums[..., channels:channels + span], out=blocks[..., :span])
    for column in range(2, factor):
        blocks[..., :span] += sums[..., column * channels:column * channels + span]
    starts = blocks.view(n, height // factor, width // factor, factor * channels)[..., :channels]
    return starts.to(torch.float32).div_(factor * factor).permute(0, 3, 1, 2)


def resample_images(
    images: torch.Tensor, target_hw: tuple[int, int], reduction: int = 1, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Cropped images (N, 3, h, w) uint8 or float -> (N, 3, H, W) in the input dtype: a box filter by the integer
    `reduction` (see `reduction_factor`), then bilinear (see the module doc); uint8 results are rounded. Written into
    `out` (N, 3, H, W) when given (a bilinear resize of uint8 goes straight from the kernel into it)."""
    uint8_input = images.dtype == torch.uint8
    if reduction > 1:  # the antialiasing step: an exact box filter by an integer factor
        images = box_average(images, reduction) if uint8_input else F.avg_pool2d(images, reduction)
    if tuple(images.shape[-2:]) != tuple(target_hw):
        # plain bilinear: what is left after the box filter shrinks by < 2 (antialiasing would blur asymmetrically,
        # see the module doc) or grows (where antialias=True is the same tent; on uint8 bit for bit)
        if out is not None and out.dtype == images.dtype:  # the kernel F.interpolate dispatches to, into `out`
            return torch.ops.aten.upsample_bilinear2d.out(images, list(target_hw), False, None, None, out=out)
        images = F.interpolate(images, target_hw, mode="bilinear", align_corners=False)
    if uint8_input and images.is_floating_point():
        images = images.round_()
        return images.to(torch.uint8) if out is None else out.copy_(images)
    return images if out is None else out.copy_(images)


def crop_resize(
    images: torch.Tensor,
    depth_m: torch.Tensor | None,
    mask: torch.Tensor | None,
    K: torch.Tensor,
    box: CropBox,
    target_hw: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Crop every view to `box` (trimmed by `reduction_box`) and resize to target_hw; K follows exactly.

    images (N, 3, H0, W0) uint8 or float; depth_m (N, H0, W0) or None; mask (N, H0, W0) bool or None; K (N, 3, 3).
    Returns images (N, 3, H, W) in the input dtype (uint8 results are rounded; possibly channels-last strides),
    depth_m (N, H, W), mask (N, H, W), K (N, 3, 3).
    """
    box = reduction_box(box, target_hw)
    rows = slice(box.top, box.top + box.height)
    cols = slice(box.left, box.left + box.width)
    same_size = (box.height, box.width) == tuple(target_hw)
    images = images[..., rows, cols]
    if not same_size:
        images = resample_images(images, target_hw, reduction_factor(box, target_hw))
        row_indices = torch.from_numpy(nearest_source_indices(box.height, target_hw[0]) + box.top)
        col_indices = torch.from_numpy(nearest_source_indices(box.width, target_hw[1]) + box.left)
    resampled = []
    for values in (depth_m, mask):  # nearest: values are picked, never blended
        if values is not None:
            if same_size:
                values = values[..., rows, cols]
            else:
                values = values.index_select(-2, row_indices).index_select(-1, col_indices)
        resampled.append(values)
    return images, resampled[0], resampled[1], crop_resize_intrinsics(K, box, target_hw)


class ClipColorJitter:
    """Colour jitter (official: brightness, contrast, saturation 0.5, hue 0.1, p 0.9) and random greyscale
    (p 0.05), each drawn once per clip and applied to all of its views.

    `__call__`: images (N, 3, H, W) float in [0, 1], one clip. `apply_per_clip`: (B, N, 3, H, W), a draw per clip,
    applied to the B·N images in one kornia call per augmentation (the order of the four jitter operations is
    drawn once per batch, as kornia does for any batch). Runs wherever the tensors are (the DataModule applies it
    on the training device)."""

    def __init__(
        self,
        brightness: float = 0.5,
        contrast: float = 0.5,
        saturation: float = 0.5,
        hue: float = 0.1,
        probability: float = 0.9,
        grayscale_probability: float = 0.05,
    ):
        self.augmentations = [kornia.augmentation.ColorJitter(brightness, contrast, saturation, hue, p=probability)]
        if grayscale_probability > 0:
            self.augmentations.append(kornia.augmentation.RandomGrayscale(p=grayscale_probability))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.apply_per_clip(images[None])[0]

    def apply_per_clip(self, images: torch.Tensor) -> torch.Tensor:
        clips, views = images.shape[:2]
        flat = images.flatten(0, 1)
        for augmentation in self.augmentations:
            params = augmentation.forward_parameters(torch.Size((clips, *images.shape[2:])))
            for name, value in params.items():  # per-clip draws -> per-view draws
                if name == "forward_input_shape":
                    params[name] = torch.tensor(flat.shape)
                elif name != "order":
                    params[name] = value.repeat_interleave(views, dim=0)
            flat = augmentation(flat, params=params)
        return flat.clamp_(0.0, 1.0).reshape(images.shape)
