"""Files a person looks at: colourised depth maps (PNG) and coloured point clouds (PLY)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# A perceptually ordered colour ramp (near = yellow, far = dark blue), interpolated linearly.
_RAMP = np.array([[253, 231, 37], [94, 201, 98], [33, 145, 140], [59, 82, 139], [68, 1, 84]], dtype=np.float64)


def colourise(values: np.ndarray, valid: np.ndarray | None = None, low: float | None = None,
              high: float | None = None) -> np.ndarray:
    """values (H, W) float -> (H, W, 3) uint8 on the ramp between low and high (default: the valid 2nd and
    98th percentiles); invalid pixels are black."""
    values = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(values) if valid is None else (np.asarray(valid, dtype=bool) & np.isfinite(values))
    if not valid.any():
        return np.zeros((*values.shape, 3), dtype=np.uint8)
    low = float(np.percentile(values[valid], 2)) if low is None else low
    high = float(np.percentile(values[valid], 98)) if high is None else high
    t = np.clip((values - low) / max(high - low, 1e-12), 0.0, 1.0) * (len(_RAMP) - 1)
    index = np.minimum(t.astype(int), len(_RAMP) - 2)
    fraction = (t - index)[..., None]
    rgb = _RAMP[index] * (1 - fraction) + _RAMP[index + 1] * fraction
    rgb[~valid] = 0
    return rgb.round().astype(np.uint8)


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """rgb (H, W, 3) uint8 -> PNG file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(path)
    return path


def write_ply(path: str | Path, points: np.ndarray, colours: np.ndarray) -> Path:
    """Binary little-endian PLY of M vertices: points (M, 3) float, colours (M, 3) uint8."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    colours = np.asarray(colours, dtype=np.uint8).reshape(-1, 3)
    if len(points) != len(colours):
        raise ValueError(f"write_ply {path}: {len(points)} points but {len(colours)} colours")
    vertices = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                            ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    vertices["x"], vertices["y"], vertices["z"] = points.T
    vertices["red"], vertices["green"], vertices["blue"] = colours.T
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(points)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        file.write(header.encode("ascii"))
        file.write(vertices.tobytes())
    return path


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a PLY written by `write_ply` -> points (M, 3) float32, colours (M, 3) uint8."""
    data = Path(path).read_bytes()
    marker = b"end_header\n"
    end = data.index(marker) + len(marker)
    header = data[:end].decode("ascii").splitlines()
    if header[1] != "format binary_little_endian 1.0":
        raise ValueError(f"read_ply {path}: unsupported format line {header[1]!r}")
    count = int(next(line for line in header if line.startswith("element vertex")).split()[-1])
    vertices = np.frombuffer(data[end:], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                                 ("red", "u1"), ("green", "u1"), ("blue", "u1")], count=count)
    points = np.stack([vertices["x"], vertices["y"], vertices["z"]], axis=1)
    colours = np.stack([vertices["red"], vertices["green"], vertices["blue"]], axis=1)
    return points, colours
