"""Encoders and decoders for the members of a clip sample.

- RGB: 8-bit sRGB JPEG (quality chosen by the writer).
- Depth: single-channel 16-bit PNG, decoded bit-exactly to uint16. WebDataset's default image handler
  converts every PIL image to 8-bit L/RGB and silently destroys 16-bit depth (reference
  data-and-benchmarks.md §4.2); this decoder reads the raw 16-bit values and refuses anything else.
- Depth alternative: `.npy` float16/float32 (no pickle).
- Mask: 8-bit PNG, nonzero = keep.

Decoders raise `SampleError` (reason `decode` or `bad_depth`) with a message naming the member.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from g2vlm.datamodules.shards.schema import REASON_BAD_DEPTH, REASON_DECODE, SampleError

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# What PIL and numpy raise on corrupt or truncated data (UnidentifiedImageError is an OSError).
_CORRUPT_DATA_ERRORS = (OSError, ValueError, SyntaxError, EOFError, TypeError, Image.DecompressionBombError)


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """rgb (H, W, 3) uint8 -> JPEG bytes (4:2:0 subsampling, as most datasets ship)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"encode_jpeg: rgb expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_depth_png(depth_units: np.ndarray, compress_level: int = 6) -> bytes:
    """depth_units (H, W) uint16 (metres / depth_scale, 0 = invalid) -> 16-bit grayscale PNG bytes."""
    if depth_units.dtype != np.uint16 or depth_units.ndim != 2:
        raise ValueError(
            f"encode_depth_png: depth_units expected (H, W) uint16, got {depth_units.shape} {depth_units.dtype}"
        )
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(depth_units)).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def encode_depth_npy(depth: np.ndarray) -> bytes:
    """depth (H, W) float16/float32 (metres / depth_scale, 0 = invalid) -> .npy bytes."""
    if depth.dtype not in (np.float16, np.float32) or depth.ndim != 2:
        raise ValueError(f"encode_depth_npy: depth expected (H, W) float16/32, got {depth.shape} {depth.dtype}")
    buffer = io.BytesIO()
    np.save(buffer, depth, allow_pickle=False)
    return buffer.getvalue()


def encode_mask_png(mask: np.ndarray) -> bytes:
    """mask (H, W) bool or uint8 -> 8-bit PNG bytes (255 = keep)."""
    values = np.where(mask.astype(bool), 255, 0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(values, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def decode_jpeg(data: bytes, member: str = "jpg") -> np.ndarray:
    """JPEG (or any other image) bytes -> (H, W, 3) uint8 RGB. A 16-bit greyscale image is scaled to 8 bits
    (value / 257, rounded; Pillow's own conversion clips everything above 255 to white)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode in _SIXTEEN_BIT_MODES or image.mode == "I":
                return _grey16_to_rgb8(np.asarray(image), member)
            if image.mode != "RGB":
                image = image.convert("RGB")
            return np.asarray(image)
    except _CORRUPT_DATA_ERRORS as error:
        raise SampleError(REASON_DECODE, f"{member}: not a decodable RGB image ({type(error).__name__}: {error})") from None


def _grey16_to_rgb8(values: np.ndarray, member: str) -> np.ndarray:
    """(H, W) 16-bit grey levels (or 32-bit integers within 0..65535) -> (H, W, 3) uint8, round(value / 257)."""
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise SampleError(REASON_DECODE, f"{member}: 32-bit integer image with values outside 0..65535")
    grey = ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def decode_depth_png(data: bytes, member: str = "depth.png") -> np.ndarray:
    """16-bit grayscale PNG bytes -> (H, W) uint16, bit-exact. 8-bit or colour PNGs are refused."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            mode = image.mode
            if mode in _SIXTEEN_BIT_MODES:
                return np.asarray(image).astype(np.uint16, copy=False)
            if mode == "I":  # some Pillow versions open 16-bit PNGs as 32-bit signed integers
                values = np.asarray(image)
                if values.min() < 0 or values.max() > 65535:
                    raise SampleError(REASON_BAD_DEPTH, f"{member}: 32-bit PNG values outside the uint16 range")
                return values.astype(np.uint16)
    except SampleError:
        raise
    except _CORRUPT_DATA_ERRORS as error:
        raise SampleError(REASON_DECODE, f"{member}: not a decodable PNG ({type(error).__name__}: {error})") from None
    raise SampleError(REASON_BAD_DEPTH, f"{member}: depth PNG has mode {mode!r}, expected 16-bit grayscale (I;16)")


def decode_depth_npy(data: bytes, member: str = "depth.npy") -> np.ndarray:
    """.npy bytes -> (H, W) float32. Only float16/float32 (H, W) arrays are accepted; no pickle."""
    try:
        values = np.load(io.BytesIO(data), allow_pickle=False)
    except _CORRUPT_DATA_ERRORS as error:
        raise SampleError(REASON_DECODE, f"{member}: not a readable .npy array ({type(error).__name__}: {error})") from None
    if values.dtype not in (np.float16, np.float32) or values.ndim != 2:
        raise SampleError(REASON_BAD_DEPTH, f"{member}: expected an (H, W) float16/float32 array, got {values.shape} {values.dtype}")
    return values.astype(np.float32)


def decode_mask_png(data: bytes, member: str = "mask.png") -> np.ndarray:
    """8-bit PNG bytes -> (H, W) bool (nonzero = keep)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("L")) > 0
    except _CORRUPT_DATA_ERRORS as error:
        raise SampleError(REASON_DECODE, f"{member}: not a decodable mask PNG ({type(error).__name__}: {error})") from None


def depth_to_metres(
    depth_units: np.ndarray, depth_scale: float, member: str = "depth", out: np.ndarray | None = None
) -> np.ndarray:
    """Stored depth (uint16 units or float) -> float32 metres (written into `out` when given, in one pass).
    Raises `bad_depth` for NaN/inf/negative values."""
    metres = np.empty(depth_units.shape, np.float32) if out is None else out
    np.copyto(metres, depth_units, casting="unsafe")  # cast, then scale in place: ~6x faster than a casting multiply
    metres *= np.float32(depth_scale)
    if depth_units.dtype != np.uint16:
        if not np.all(np.isfinite(metres)):
            raise SampleError(REASON_BAD_DEPTH, f"{member}: depth has NaN or infinite values")
        if np.any(metres < 0):
            raise SampleError(REASON_BAD_DEPTH, f"{member}: depth has negative values")
    return metres


def image_size(data: bytes, member: str) -> tuple[int, int, str]:
    """(width, height, mode) read from an image header without decoding the pixels."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.width, image.height, image.mode
    except _CORRUPT_DATA_ERRORS as error:
        raise SampleError(REASON_DECODE, f"{member}: not a readable image ({type(error).__name__}: {error})") from None
