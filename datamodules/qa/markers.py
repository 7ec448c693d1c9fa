"""The markers a spatial question refers to ("the chair (red point)"), drawn onto an image as the data's renderer does.

A marker (`qa.schema.Marker`) is a point [x, y] or a box [x1, y1, x2, y2] on SPAR's 0-1000 scale of the image it is
drawn on, in a colour `rgb`, in one of three styles. Pixel coordinates are (value / 1000) · width (or height),
truncated towards zero where the official renderer truncates.

- `scaled` (the synthetic QA): a disc of radius s about the point, or a box outline s px wide inside the box's edge,
  with s = round(20 · max(H, W) / 768) (the official 20 px at the 768 px of the official ViT input).
- `spar` (SPAR's `datasets/draw_marker.py`, drawn with PIL; most tasks): a disc of radius 20 px about the
  truncated point (PIL's ellipse in the box ±20 px); a box grown by 17.5 px on every side, truncated, outlined by a
  20 px line inside that edge.
- `spar_cv` (SPAR's OpenCV markers of `spatial_imagination_map_mv` and the `_video` tasks with labels): the pixels
  within 20 px of the truncated point; or the pixels within 10 px of the truncated box grown by 20 px on every side
  (a 20 px line centred on that edge, round outer corners). An optional label ("object0", "objectA") is written
  next to it (`label_origin`): green text at (x + 20, y + 20) for a point; for a box at its bottom-right corner, in
  green, or, with `label_fill`, in white on a filled rectangle of the marker's colour.

Label glyphs: OpenCV's Hershey font is not reproduced; the text is PIL's bundled font (64 px, 3 px stroke) written
from the same origin: its ink lies within OpenCV's ink box grown by 6 px, and ends up to 13 px short of its right
edge (tests/fixtures/spar7m_marks.py). The label's position and its filled rectangle follow
OpenCV's text box for FONT_HERSHEY_SIMPLEX at scale 2.0, thickness 10 (`label_size`, measured with OpenCV 4.14:
"object" + one digit 242 × 47 px, each further digit 40 px, "objectA" 238 px).

Markers are drawn in list order, each with its label, so later markers cover earlier ones as in the official code.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SPAR_RADIUS_PX = 20  # point radius and box stroke of the official renderer
SPAR_BOX_GROWTH_PX = 17.5  # PIL boxes: grown by 7/8 of the stroke
SPAR_CV_BOX_GROWTH_PX = 20  # OpenCV boxes: grown by 20 px, 20 px line centred on the grown edge
SCALED_SIZE_AT_768 = 20
LABEL_HEIGHT_PX = 47
LABEL_FILL_BELOW_PX = 5  # the filled label rectangle reaches 5 px below the text's baseline
LABEL_TEXT_RGB = (0, 255, 0)
LABEL_FILLED_TEXT_RGB = (255, 255, 255)
_LABEL = re.compile(r"^object(\d+|A)$")


def label_size(text: str) -> tuple[int, int]:
    """(width, height) in px of OpenCV's text box for a label "object<digits>" or "objectA"."""
    match = _LABEL.match(text)
    if match is None:
        raise ValueError(f"label_size: marker label {text!r} is not object<digits> or objectA")
    suffix = match.group(1)
    return (238 if suffix == "A" else 202 + 40 * len(suffix)), LABEL_HEIGHT_PX


@lru_cache(maxsize=1)
def _label_font() -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=64)


def _scaled(value: float, size: int) -> float:
    """0-1000 -> pixels, in the official renderer's order of operations (value / 1000 · size)."""
    return (value / 1000) * size


def label_origin(marker, width: int, height: int) -> tuple[int, int]:
    """The left end of the label's baseline in pixels (OpenCV's text origin) of a `spar_cv` marker."""
    text_width, text_height = label_size(marker.label)
    if marker.kind == "point":
        x, y = (int(_scaled(v, s)) for v, s in zip(marker.coords, (width, height)))
        return x + SPAR_RADIUS_PX, y + SPAR_RADIUS_PX
    x2, y2 = int(_scaled(marker.coords[2], width)), int(_scaled(marker.coords[3], height))
    if marker.label_fill:
        y = y2 + text_height
        return x2 - text_width, (y if y <= height else y2 - LABEL_FILL_BELOW_PX)
    y = y2 + text_height
    return x2 - text_width, (y if y <= height else y2 - text_height)


def _segment_distance_squared(px: np.ndarray, py: np.ndarray, a: tuple[int, int], b: tuple[int, int]) -> np.ndarray:
    vx, vy = b[0] - a[0], b[1] - a[1]
    length_squared = max(vx * vx + vy * vy, 1)
    t = np.clip(((px - a[0]) * vx + (py - a[1]) * vy) / length_squared, 0.0, 1.0)
    return (px - (a[0] + t * vx)) ** 2 + (py - (a[1] + t * vy)) ** 2


def _paste(canvas: Image.Image, rgb: tuple[int, int, int], left: int, top: int, mask: np.ndarray) -> None:
    """Colour the pixels of `mask` (rows from `top`, columns from `left`, inside the canvas)."""
    if mask.any():
        canvas.paste(rgb, (left, top), Image.fromarray(mask.astype(np.uint8) * 255))


def _cv_disc(canvas: Image.Image, rgb, x: int, y: int, radius: int) -> None:
    width, height = canvas.size
    left, top = max(x - radius, 0), max(y - radius, 0)
    right, bottom = min(x + radius, width - 1), min(y + radius, height - 1)
    if left > right or top > bottom:
        return
    py, px = np.mgrid[top : bottom + 1, left : right + 1]
    _paste(canvas, rgb, left, top, (px - x) ** 2 + (py - y) ** 2 <= radius * radius)


def _cv_box(canvas: Image.Image, rgb, x1: int, y1: int, x2: int, y2: int, half_width: int) -> None:
    """The pixels within `half_width` of the rectangle path through (x1, y1) and (x2, y2)."""
    width, height = canvas.size
    left, top = max(min(x1, x2) - half_width, 0), max(min(y1, y2) - half_width, 0)
    right, bottom = min(max(x1, x2) + half_width, width - 1), min(max(y1, y2) + half_width, height - 1)
    if left > right or top > bottom:
        return
    py, px = np.mgrid[top : bottom + 1, left : right + 1].astype(np.float64)
    corners = ((x1, y1), (x2, y1), (x2, y2), (x1, y2))
    distance = np.minimum.reduce([_segment_distance_squared(px, py, corners[i], corners[(i + 1) % 4])
                                  for i in range(4)])
    _paste(canvas, rgb, left, top, distance <= half_width * half_width)


def _draw_scaled(canvas: Image.Image, draw: ImageDraw.ImageDraw, marker, rgb) -> None:
    width, height = canvas.size
    size = max(1, round(SCALED_SIZE_AT_768 * max(height, width) / 768))
    if marker.kind == "point":
        x, y = marker.coords[0] * width / 1000, marker.coords[1] * height / 1000
        draw.ellipse([x - size, y - size, x + size, y + size], fill=rgb)
    else:
        x1, y1, x2, y2 = (v * s / 1000 for v, s in zip(marker.coords, (width, height, width, height)))
        draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=rgb, width=size)


def _draw_spar(canvas: Image.Image, draw: ImageDraw.ImageDraw, marker, rgb) -> None:
    width, height = canvas.size
    r = SPAR_RADIUS_PX
    if marker.kind == "point":
        x, y = int(_scaled(marker.coords[0], width)), int(_scaled(marker.coords[1], height))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=rgb)
        return
    x1, y1, x2, y2 = (_scaled(v, s) for v, s in zip(marker.coords, (width, height, width, height)))
    g = SPAR_BOX_GROWTH_PX
    box = [int(x1 - g), int(y1 - g), int(x2 + g), int(y2 + g)]
    draw.rectangle([min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])],
                   outline=rgb, width=r)


def _draw_spar_cv(canvas: Image.Image, draw: ImageDraw.ImageDraw, marker, rgb) -> None:
    width, height = canvas.size
    if marker.kind == "point":
        x, y = int(_scaled(marker.coords[0], width)), int(_scaled(marker.coords[1], height))
        _cv_disc(canvas, rgb, x, y, SPAR_RADIUS_PX)
    else:
        x1, y1, x2, y2 = (int(_scaled(v, s)) for v, s in zip(marker.coords, (width, height, width, height)))
        g = SPAR_CV_BOX_GROWTH_PX
        _cv_box(canvas, rgb, x1 - g, y1 - g, x2 + g, y2 + g, SPAR_RADIUS_PX // 2)
    if marker.label is None:
        return
    x, y = label_origin(marker, width, height)
    text_rgb = LABEL_TEXT_RGB
    if marker.label_fill:
        text_width, text_height = label_size(marker.label)
        left, top, right, bottom = x, y - text_height, x + text_width, y + LABEL_FILL_BELOW_PX
        if left <= right and top <= bottom:
            draw.rectangle([left, top, right, bottom], fill=rgb)
        text_rgb = LABEL_FILLED_TEXT_RGB
    draw.text((x, y), marker.label, fill=text_rgb, font=_label_font(), anchor="ls", stroke_width=3,
              stroke_fill=text_rgb)


_STYLES = {"scaled": _draw_scaled, "spar": _draw_spar, "spar_cv": _draw_spar_cv}
MARKER_STYLES = tuple(_STYLES)


def draw_markers(image: np.ndarray, markers) -> np.ndarray:
    """image (H, W, 3) uint8 -> a copy with the markers drawn in order (the image itself when there are none)."""
    if not markers:
        return image
    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    for marker in markers:
        _STYLES[marker.style](canvas, draw, marker, tuple(marker.drawn_rgb))
    return np.asarray(canvas)
