"""Readers for the files of the evaluation datasets: RGB images, depth in its many encodings, camera files.

Every reader returns numpy arrays (RGB (H, W, 3) uint8, depth (H, W) float metres with 0 = invalid) and
raises `FrameError` with the file's path in the message when a file is missing or does not decode; the
benchmark runners skip such a frame, count it and name it in the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from g2vlm.datamodules.shards.decoding import decode_depth_png
from g2vlm.datamodules.shards.schema import SampleError
from g2vlm.inference import FrameError, read_file_bytes

SINTEL_DPT_TAG = 202021.25  # first float32 of every Sintel .dpt file


def read_png_depth(path: str | Path, units_per_metre: float, dtype: type = np.float32) -> np.ndarray:
    """16-bit PNG depth -> (H, W) metres = value / units_per_metre computed in `dtype` (0 stays 0 = invalid).

    The official readers divide in float64 for Bonn (÷ 5000) and KITTI (÷ 256) and in float32 for 7-Scenes and
    NRGBD (÷ 1000); the metrics follow the GT's dtype, so the readers pass the same."""
    try:
        units = decode_depth_png(read_file_bytes(path), member=str(path))
    except SampleError as error:
        raise FrameError(str(error)) from None
    return units.astype(dtype) / dtype(units_per_metre)


def read_npy_depth(path: str | Path, metres_per_unit: float = 1.0) -> np.ndarray:
    """(H, W) float .npy depth -> float32 metres; non-finite and negative values become 0 (invalid)."""
    path = Path(path)
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise FrameError(f"{path}: not a readable .npy array ({type(error).__name__}: {error})") from None
    values = np.squeeze(values)
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.number):
        raise FrameError(f"{path}: expected an (H, W) numeric depth array, got shape {values.shape} {values.dtype}")
    depth = values.astype(np.float32) * np.float32(metres_per_unit)
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0))


def read_sintel_dpt(path: str | Path) -> np.ndarray:
    """Sintel .dpt: float32 tag 202021.25, int32 width, int32 height, then H×W float32 depth -> (H, W) float32."""
    path = Path(path)
    data = read_file_bytes(path)
    if len(data) < 12:
        raise FrameError(f"{path}: too short for a Sintel .dpt header ({len(data)} bytes)")
    tag = np.frombuffer(data, dtype="<f4", count=1)[0]
    width, height = (int(v) for v in np.frombuffer(data, dtype="<i4", count=2, offset=4))
    if tag != np.float32(SINTEL_DPT_TAG):
        raise FrameError(f"{path}: not a Sintel .dpt file (tag {tag!r}, expected {SINTEL_DPT_TAG})")
    if not (0 < width < 100_000 and 0 < height < 100_000) or len(data) != 12 + 4 * width * height:
        raise FrameError(f"{path}: .dpt header says {width}×{height} but the file holds {len(data) - 12} data bytes")
    depth = np.frombuffer(data, dtype="<f4", offset=12).reshape(height, width).astype(np.float32)
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0))


def write_sintel_dpt(path: str | Path, depth: np.ndarray) -> Path:
    """The inverse of `read_sintel_dpt` (used to build miniature datasets in tests)."""
    depth = np.asarray(depth, dtype="<f4")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = np.array([SINTEL_DPT_TAG], dtype="<f4").tobytes() + np.array(depth.shape[::-1], dtype="<i4").tobytes()
    path.write_bytes(header + depth.tobytes())
    return path


def read_raw_float_depth(path: str | Path, height: int, width: int) -> np.ndarray:
    """ETH3D ground truth: headerless little-endian float32, H×W -> (H, W) float32; non-finite -> 0 (invalid)."""
    path = Path(path)
    data = read_file_bytes(path)
    if len(data) != 4 * height * width:
        raise FrameError(f"{path}: {len(data)} bytes, expected {4 * height * width} for a {width}×{height} float32 depth map")
    depth = np.frombuffer(data, dtype="<f4").reshape(height, width).astype(np.float32)
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0))


def read_mask(path: str | Path) -> np.ndarray:
    """8-bit mask image -> (H, W) bool, True where the value is at least half of 255 (DTU's binarisation)."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"), dtype=np.float32) / 255.0 >= 0.5
    except (OSError, ValueError, SyntaxError) as error:
        raise FrameError(f"{path}: not a readable mask image ({type(error).__name__}: {error})") from None


def read_matrix_text(path: str | Path, rows: int, cols: int, skip_words: int = 0) -> np.ndarray:
    """The first rows×cols numbers of a whitespace-separated text file (after `skip_words` words) -> float64."""
    path = Path(path)
    words = read_file_bytes(path).decode("utf-8", errors="replace").split()[skip_words:]
    try:
        values = np.array([float(word) for word in words[: rows * cols]], dtype=np.float64)
    except ValueError as error:
        raise FrameError(f"{path}: expected {rows}×{cols} numbers ({error})") from None
    if values.size != rows * cols:
        raise FrameError(f"{path}: expected {rows}×{cols} numbers, found {values.size}")
    return values.reshape(rows, cols)
