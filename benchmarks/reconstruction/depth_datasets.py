"""Readers of the depth benchmarks in their prepared layouts (reference data-and-benchmarks.md §3.4 and §5).

    nyu (alias nyu-v2)  ROOT/nyu_images/*.png, ROOT/nyu_depths/*.npy (metres); the 654 validation images; mono only
    sintel              ROOT/final/<seq>/*.png, ROOT/depth/<seq>/*.dpt; the 14 sequences of SINTEL_SEQUENCES
    bonn                ROOT/<seq>/rgb_110/*.png, ROOT/<seq>/depth_110/*.png (÷ 5000); the 5 sequences of
                        BONN_SEQUENCES (folders `rgbd_bonn_<name>` as the official preparation writes, or `<name>`)
    kitti               ROOT/image_gathered/<seq>/*.png, ROOT/groundtruth_depth_gathered/<seq>/*.png (÷ 256);
                        every drive folder present
    synthetic           no root: the held-out synthetic set (benchmarks/reconstruction/synthetic_set.py)

Images and depth maps of a sequence are paired in sorted file-name order, as the official evaluation does
(Bonn's RGB and depth time stamps differ); the counts must agree. A frame is named by its image's stem; that
is the name its prediction file takes. Invalid GT depth is 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from g2vlm.benchmarks.reconstruction.dataset_args import known_name, prepared_root
from g2vlm.benchmarks.reconstruction.files import (
    read_npy_depth,
    read_png_depth,
    read_sintel_dpt,
)
from g2vlm.inference import PROTOCOL_LOAD_WIDTH, read_rgb
from g2vlm.metrics.depth import DEPTH_CAPS_M

SINTEL_SEQUENCES = ("alley_2", "ambush_4", "ambush_5", "ambush_6", "cave_2", "cave_4", "market_2", "market_5",
                    "market_6", "shaman_3", "sleeping_1", "sleeping_2", "temple_2", "temple_3")
BONN_SEQUENCES = ("balloon2", "crowd2", "crowd3", "person_tracking2", "synchronous")
BONN_UNITS_PER_METRE = 5000.0
KITTI_UNITS_PER_METRE = 256.0
DEPTH_DATASET_NAMES = ("synthetic", "nyu", "sintel", "bonn", "kitti")
DATASET_ALIASES = {"nyu-v2": "nyu", "nyuv2": "nyu"}


@dataclass(frozen=True)
class DepthFrame:
    """One GT frame: `stem` names its prediction file; the readers return (H, W, 3) uint8 and (H, W) metres."""

    stem: str
    read_image: Callable[[], np.ndarray]
    read_depth: Callable[[], np.ndarray]


@dataclass(frozen=True)
class DepthSequence:
    """Frames in order. `name` is None for datasets that are a set of images (NYU-v2)."""

    name: str | None
    frames: tuple[DepthFrame, ...]


@dataclass(frozen=True)
class DepthDataset:
    name: str
    sequences: tuple[DepthSequence, ...]
    load_width: int
    max_depth_m: float | None
    clip_max_m: float | None
    has_sequences: bool

    @property
    def num_frames(self) -> int:
        return sum(len(sequence.frames) for sequence in self.sequences)


def canonical_name(name: str) -> str:
    return known_name(name, DEPTH_DATASET_NAMES, "depth", DATASET_ALIASES)


def read_depth_dataset(name: str, root: str | Path | None) -> DepthDataset:
    """The dataset `name` from its prepared layout under `root` (synthetic: no root)."""
    name = canonical_name(name)
    root = prepared_root("depth", name, root)
    if root is None:
        return _synthetic()
    sequences = {"nyu": _nyu, "sintel": _sintel, "bonn": _bonn, "kitti": _kitti}[name](root)
    max_depth_m, clip_max_m = DEPTH_CAPS_M[name]
    return DepthDataset(name, tuple(sequences), PROTOCOL_LOAD_WIDTH, max_depth_m, clip_max_m, name != "nyu")


def _paired(sequence: str | None, image_dir: Path, image_pattern: str, depth_dir: Path, depth_pattern: str,
            read_depth: Callable[[Path], np.ndarray]) -> DepthSequence:
    for folder in (image_dir, depth_dir):
        if not folder.is_dir():
            raise ValueError(f"read_depth_dataset: missing folder {folder}")
    images = sorted(image_dir.glob(image_pattern))
    depths = sorted(depth_dir.glob(depth_pattern))
    if not images:
        raise ValueError(f"read_depth_dataset: no {image_pattern} images in {image_dir}")
    if len(images) != len(depths):
        raise ValueError(f"read_depth_dataset: {len(images)} images in {image_dir} but {len(depths)} "
                         f"depth maps in {depth_dir}")
    frames = tuple(DepthFrame(image.stem, partial(read_rgb, image), partial(read_depth, depth))
                   for image, depth in zip(images, depths))
    return DepthSequence(sequence, frames)


def _nyu(root: Path) -> list[DepthSequence]:
    return [_paired(None, root / "nyu_images", "*.png", root / "nyu_depths", "*.npy", read_npy_depth)]


def _sintel(root: Path) -> list[DepthSequence]:
    missing = [seq for seq in SINTEL_SEQUENCES if not (root / "final" / seq).is_dir()]
    if missing:
        raise ValueError(f"read_depth_dataset: Sintel root {root} lacks final/<seq> for {', '.join(missing)}")
    return [_paired(seq, root / "final" / seq, "*.png", root / "depth" / seq, "*.dpt", read_sintel_dpt)
            for seq in SINTEL_SEQUENCES]


def _bonn(root: Path) -> list[DepthSequence]:
    sequences = []
    for name in BONN_SEQUENCES:
        folder = next((root / candidate for candidate in (f"rgbd_bonn_{name}", name) if (root / candidate).is_dir()), None)
        if folder is None:
            raise ValueError(f"read_depth_dataset: Bonn root {root} lacks rgbd_bonn_{name}/ (or {name}/)")
        sequences.append(_paired(folder.name, folder / "rgb_110", "*.png", folder / "depth_110", "*.png",
                                 partial(read_png_depth, units_per_metre=BONN_UNITS_PER_METRE, dtype=np.float64)))
    return sequences


def _kitti(root: Path) -> list[DepthSequence]:
    image_root = root / "image_gathered"
    drives = sorted(path.name for path in image_root.iterdir() if path.is_dir()) if image_root.is_dir() else []
    if not drives:
        raise ValueError(f"read_depth_dataset: KITTI root {root} has no image_gathered/<drive>/ folders")
    return [_paired(drive, image_root / drive, "*.png", root / "groundtruth_depth_gathered" / drive, "*.png",
                    partial(read_png_depth, units_per_metre=KITTI_UNITS_PER_METRE, dtype=np.float64)) for drive in drives]


def _synthetic() -> DepthDataset:
    from g2vlm.benchmarks.reconstruction.synthetic_set import WIDTH, synthetic_clips

    sequences = []
    for clip in synthetic_clips():
        frames = tuple(DepthFrame(stem, partial(_index, clip.rgb, view), partial(_index, clip.depth_m, view))
                       for view, stem in enumerate(clip.frame_stems))
        sequences.append(DepthSequence(clip.name, frames))
    return DepthDataset("synthetic", tuple(sequences), WIDTH, None, None, True)


def _index(array: np.ndarray, index: int) -> np.ndarray:
    return array[index]
