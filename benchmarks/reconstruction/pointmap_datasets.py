"""Readers of the multi-view point-map benchmarks in their prepared layouts (reference g2vlm-official.md §5.3,
data-and-benchmarks.md §3.4 and §6).

    7scenes / 7scenes-sparse  ROOT/<scene>/TestSplit.txt ("sequenceN" lines), ROOT/<scene>/seq-NN/frame-XXXXXX.
                              {color.png, depth.proj.png (mm; 65535 invalid), pose.txt (camera_to_world)};
                              K fx = fy = 525, cx = 320, cy = 240; depth kept in [1 mm, 10 m]; stride 40 / 200
    nrgbd / nrgbd-sparse      ROOT/<scene>/images/imgN.png, depth/depthN.png (mm), poses.txt (4×4 OpenGL
                              camera_to_world per 4 lines; columns 1 and 2 negated for OpenCV); K fx = fy =
                              554.2562584220408, cx = 320, cy = 240; depth kept in [1 mm, 10 m]; stride 100 / 500
    eth3d                     ROOT/<scene>/images/custom_undistorted/*.JPG, ground_truth_depth/custom_undistorted/
                              <name> (raw float32, image size; non-finite invalid), custom_undistorted_cam/<stem>.npz
                              (intrinsics 3×3, extrinsics world-to-camera); stride 5
    dtu                       ROOT/scanN/images/XXXXXXXX.jpg, depths/XXXXXXXX.npy (mm), binary_masks/XXXXXXXX.png,
                              cams/XXXXXXXX_cam.txt (MVSNet: "extrinsic" + 4×4 world-to-camera, "intrinsic" +
                              3×3 for the depth map's size); the 22 test scans; depth × the mask (≥ 0.5, nearest-
                              resized to the depth, eroded by a 10×10 window); millimetres, so ICP uses 100; stride 5
    synthetic                 no root: the held-out synthetic set, every view, at its own resolution

GT (real datasets), as the official `datasets/utils/cropping.py: resize_image_depth_and_intrinsic` and VGGT's
`unproject_depth_map_to_point_map` compute it: depth resized with `cv2.resize(..., INTER_NEAREST)` (source pixel
floor(x · W / W'), not torch's "nearest-exact") to width 512 and height round(H·512/W/14)·14 — the protocol's GT
grid, the same for every model; K shifted by +0.5, its first two rows multiplied by ONE factor s = max(W'/W,
H'/H), shifted back; camera points (u - cx)·z / fx, (v - cy)·z / fy, z rounded to float32; world = R·X + t with
(R, t) = the closed-form inverse of the official world_to_camera; valid = depth > 1e-4. Dtypes as the official
readers: K float32 for 7-Scenes, NRGBD and DTU (float64 for ETH3D), NRGBD poses float32.
Quirks kept for comparability (the published numbers carry them):
- one K factor for both axes although the depth is resized per axis (640×480 -> 512×378 scales rows by 0.7875
  but fy by 0.8), so the GT is stretched by 1.6 % vertically against the image;
- INTER_NEAREST picks source pixel floor(x · W / W') (biased towards the top-left), not the nearest centre.
The model sees the original image through the protocol's input resize (g2vlm.inference).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from g2vlm.benchmarks.reconstruction.dataset_args import known_name, prepared_root
from g2vlm.benchmarks.reconstruction.files import (
    read_mask,
    read_matrix_text,
    read_npy_depth,
    read_png_depth,
    read_raw_float_depth,
)
from g2vlm.benchmarks.reconstruction.frame_maps import DTU_TEST_SCANS, frame_map
from g2vlm.benchmarks.reconstruction.pose_datasets import rigid_inverse
from g2vlm.inference import PROTOCOL_LOAD_WIDTH, FrameError, read_rgb

POINT_MAP_DATASET_NAMES = ("synthetic", "7scenes", "7scenes-sparse", "nrgbd", "nrgbd-sparse", "eth3d", "dtu")
GT_GRID_BASE = 14  # the official GT grid snaps the height to multiples of 14 for every model
VALID_DEPTH_MIN = 1e-4
ICP_MAX_DISTANCE = {"dtu": 100.0}  # scene units; 0.1 (metres) otherwise
SEVEN_SCENES_K = ((525.0, 0.0, 320.0), (0.0, 525.0, 240.0), (0.0, 0.0, 1.0))  # float32, as the official
NRGBD_K = ((554.2562584220408, 0.0, 320.0), (0.0, 554.2562584220408, 240.0), (0.0, 0.0, 1.0))  # float32 too
INDOOR_DEPTH_RANGE_M = (1e-3, 10.0)
DTU_EROSION = 10


@dataclass(frozen=True)
class PointMapView:
    """rgb (H0, W0, 3) uint8 (the image the model sees); depth (H, W) float (0 = invalid); K (3, 3) in the official
    reader's dtype; camera_to_world (4, 4) OpenCV, float64, as the official unprojection derives it."""

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    camera_to_world: np.ndarray


@dataclass(frozen=True)
class PointMapFrame:
    stem: str
    read: Callable[[], PointMapView]


@dataclass(frozen=True)
class PointMapSequence:
    name: str
    frames: tuple[PointMapFrame, ...]


@dataclass(frozen=True)
class PointMapDataset:
    name: str
    sequences: tuple[PointMapSequence, ...]
    load_width: int
    gt_width: int | None  # None: GT at its native resolution (synthetic)
    icp_max_distance: float
    frame_map_source: str


def canonical_name(name: str) -> str:
    return known_name(name.lower().replace("7-scenes", "7scenes").replace("sevenscenes", "7scenes"),
                      POINT_MAP_DATASET_NAMES, "point-map")


def read_pointmap_dataset(name: str, root: str | Path | None) -> PointMapDataset:
    name = canonical_name(name)
    root = prepared_root("pointmap", name, root)
    if root is None:
        return _synthetic()
    frames = _frames(name, root)
    ids, source = frame_map(name, {sequence: len(items) for sequence, items in frames.items()})
    sequences = tuple(PointMapSequence(sequence, tuple(frames[sequence][i] for i in chosen))
                      for sequence, chosen in ids.items())
    return PointMapDataset(name, sequences, PROTOCOL_LOAD_WIDTH, PROTOCOL_LOAD_WIDTH,
                           ICP_MAX_DISTANCE.get(name, 0.1), source)


def sequence_lengths(name: str, root: str | Path) -> dict[str, int]:
    return {sequence: len(items) for sequence, items in _frames(canonical_name(name), prepared_root("pointmap", name, root)).items()}


def gt_points(view: PointMapView, gt_width: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """GT world points (H, W, 3) float64 and validity (H, W) on the protocol's GT grid (see the module docstring;
    gt_width None: the native grid)."""
    depth = np.asarray(view.depth)
    K = np.array(view.K)  # a copy, in the reader's dtype
    height, width = depth.shape
    if gt_width is not None and gt_width != width:
        size_in = np.array([width, height], dtype=np.float32)
        size_out = np.array([gt_width, max(GT_GRID_BASE, round(size_in[1] * (gt_width / size_in[0]) / GT_GRID_BASE)
                                           * GT_GRID_BASE)])
        depth = cv2.resize(depth, (int(size_out[0]), int(size_out[1])), interpolation=cv2.INTER_NEAREST)
        K[0, 2] = K[0, 2] + 0.5
        K[1, 2] = K[1, 2] + 0.5
        K[:2, :] = K[:2, :] * np.max(size_out / size_in)
        K[0, 2] = K[0, 2] - 0.5
        K[1, 2] = K[1, 2] - 0.5
    u, v = np.meshgrid(np.arange(depth.shape[1]), np.arange(depth.shape[0]))
    camera = np.stack(((u - K[0, 2]) * depth / K[0, 0], (v - K[1, 2]) * depth / K[1, 1], depth), axis=-1)
    camera_to_world = np.asarray(view.camera_to_world, dtype=np.float64)
    world = np.dot(camera.astype(np.float32), camera_to_world[:3, :3].T) + camera_to_world[:3, 3]
    return torch.from_numpy(world), torch.from_numpy(depth > VALID_DEPTH_MIN)


def official_camera_to_world(world_to_camera: np.ndarray) -> np.ndarray:
    """(4, 4) float64: the closed-form inverse [Rᵀ, -Rᵀt] the official unprojection takes of its world_to_camera
    extrinsic (VGGT `closed_form_inverse_se3`), which the official datasets hold in float64 arrays whatever they
    were read as (float32 for NRGBD's poses and DTU's cameras)."""
    return rigid_inverse(np.asarray(world_to_camera, dtype=np.float64))


def _frames(name: str, root: Path) -> dict[str, list[PointMapFrame]]:
    """{sequence: every frame of it, in order} (before the frame map)."""
    base = name.removesuffix("-sparse")
    return {"7scenes": _seven_scenes, "nrgbd": _nrgbd, "eth3d": _eth3d, "dtu": _dtu}[base](root)


def _scene_folders(root: Path, marker: str, dataset: str) -> list[Path]:
    """The folders under `root` that hold the file `marker`, sorted; ValueError when there is none."""
    scenes = sorted(p for p in root.iterdir() if (p / marker).is_file())
    if not scenes:
        raise ValueError(f"read_pointmap_dataset: no <scene>/{marker} under the {dataset} root {root}")
    return scenes


def _indoor_depth(depth_m: np.ndarray) -> np.ndarray:
    low, high = INDOOR_DEPTH_RANGE_M
    return np.where((depth_m >= low) & (depth_m <= high), depth_m, 0).astype(np.float32)


# --------------------------------------------------------------------------------------------- 7-Scenes
def _seven_scenes(root: Path) -> dict[str, list[PointMapFrame]]:
    scenes = _scene_folders(root, "TestSplit.txt", "7-Scenes")
    out = {}
    for scene in scenes:
        for line in (scene / "TestSplit.txt").read_text().split():
            sequence = f"seq-{int(line.removeprefix('sequence')):02d}"
            folder = scene / sequence
            count = len(list(folder.glob("frame-*.color.png")))
            if count == 0:
                raise ValueError(f"read_pointmap_dataset: no frame-*.color.png in {folder}")
            out[f"{scene.name}/{sequence}"] = [PointMapFrame(f"frame-{i:06d}", partial(_read_seven_scenes, folder, i))
                                               for i in range(count)]
    return out


def _read_seven_scenes(folder: Path, index: int) -> PointMapView:
    prefix = folder / f"frame-{index:06d}"
    units = read_png_depth(f"{prefix}.depth.proj.png", 1.0)
    depth = _indoor_depth(np.where(units == 65535, 0, units) / 1000.0)
    world_to_camera = rigid_inverse(read_matrix_text(f"{prefix}.pose.txt", 4, 4))
    return PointMapView(read_rgb(f"{prefix}.color.png"), depth, np.array(SEVEN_SCENES_K, dtype=np.float32),
                        official_camera_to_world(world_to_camera))


# ------------------------------------------------------------------------------------------------ NRGBD
def _nrgbd(root: Path) -> dict[str, list[PointMapFrame]]:
    scenes = _scene_folders(root, "poses.txt", "NRGBD")
    out = {}
    for scene in scenes:
        count = len(list((scene / "images").glob("img*.png")))
        numbers = np.array((scene / "poses.txt").read_text().split(), dtype=np.float64)
        if numbers.size != 16 * count:
            raise ValueError(f"read_pointmap_dataset: {scene / 'poses.txt'} holds {numbers.size / 16:g} "
                             f"poses for {count} images")
        poses = numbers.reshape(count, 4, 4).astype(np.float32)  # float32, as the official reader
        poses[:, :, 1:3] *= -1  # OpenGL camera axes -> OpenCV
        out[scene.name] = [PointMapFrame(f"img{i}", partial(_read_nrgbd, scene, i, poses[i])) for i in range(count)]
    return out


def _read_nrgbd(scene: Path, index: int, camera_to_world: np.ndarray) -> PointMapView:
    if not np.isfinite(camera_to_world).all():
        raise FrameError(f"{scene / 'poses.txt'}: pose {index} is not finite")
    depth = _indoor_depth(read_png_depth(scene / "depth" / f"depth{index}.png", 1000.0))
    return PointMapView(read_rgb(scene / "images" / f"img{index}.png"), depth, np.array(NRGBD_K, dtype=np.float32),
                        official_camera_to_world(rigid_inverse(camera_to_world)))


# ------------------------------------------------------------------------------------------------ ETH3D
def _eth3d(root: Path) -> dict[str, list[PointMapFrame]]:
    scenes = sorted(p for p in root.iterdir() if (p / "images" / "custom_undistorted").is_dir())
    if not scenes:
        raise ValueError(f"read_pointmap_dataset: no <scene>/images/custom_undistorted/ under the ETH3D root {root}")
    return {scene.name: [PointMapFrame(image.stem, partial(_read_eth3d, scene, image.name))
                         for image in sorted((scene / "images" / "custom_undistorted").glob("*.JPG"))]
            for scene in scenes}


def _read_eth3d(scene: Path, image_name: str) -> PointMapView:
    rgb = read_rgb(scene / "images" / "custom_undistorted" / image_name)
    depth = read_raw_float_depth(scene / "ground_truth_depth" / "custom_undistorted" / image_name, *rgb.shape[:2])
    camera_path = scene / "custom_undistorted_cam" / f"{Path(image_name).stem}.npz"
    try:
        with np.load(camera_path, allow_pickle=False) as camera:
            K = np.asarray(camera["intrinsics"], dtype=np.float64)[:3, :3]
            world_to_camera = np.eye(4)
            extrinsics = np.asarray(camera["extrinsics"], dtype=np.float64)
            world_to_camera[: extrinsics.shape[0], :4] = extrinsics[:4, :4]
    except (OSError, KeyError, ValueError) as error:
        raise FrameError(f"{camera_path}: unreadable camera ({type(error).__name__}: {error})") from None
    return PointMapView(rgb, depth, K, official_camera_to_world(world_to_camera))


# -------------------------------------------------------------------------------------------------- DTU
def _dtu(root: Path) -> dict[str, list[PointMapFrame]]:
    missing = [f"scan{n}" for n in DTU_TEST_SCANS if not (root / f"scan{n}" / "images").is_dir()]
    if missing:
        raise ValueError(f"read_pointmap_dataset: the DTU root {root} lacks {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''} (scanN/images/)")
    out = {}
    for number in DTU_TEST_SCANS:
        scan = root / f"scan{number}"
        count = len(list((scan / "images").glob("*.jpg")))
        out[scan.name] = [PointMapFrame(f"{i:08d}", partial(_read_dtu, scan, i)) for i in range(count)]
    return out


def erode(mask: np.ndarray, size: int = DTU_EROSION) -> np.ndarray:
    """Binary erosion by a size×size window anchored at its centre (size // 2), pixels outside the image
    counting as set (OpenCV `erode` with its default border)."""
    before, after = size // 2, size - 1 - size // 2
    padded = F.pad(torch.from_numpy(mask.astype(np.float32))[None, None], (before, after, before, after), value=1.0)
    return (-F.max_pool2d(-padded, size, stride=1))[0, 0].numpy() > 0.5


def _read_dtu(scan: Path, index: int) -> PointMapView:
    depth = read_npy_depth(scan / "depths" / f"{index:08d}.npy")
    mask = read_mask(scan / "binary_masks" / f"{index:08d}.png")
    if mask.shape != depth.shape:
        mask = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], size=depth.shape,
                             mode="nearest")[0, 0].numpy() > 0.5
    depth = depth * erode(mask)
    camera_path = scan / "cams" / f"{index:08d}_cam.txt"
    world_to_camera = read_matrix_text(camera_path, 4, 4, skip_words=1).astype(np.float32)  # after "extrinsic"
    K = read_matrix_text(camera_path, 3, 3, skip_words=18).astype(np.float32)  # after the 4×4 and "intrinsic"
    return PointMapView(read_rgb(scan / "images" / f"{index:08d}.jpg"), depth, K,
                        official_camera_to_world(world_to_camera))


# -------------------------------------------------------------------------------------------- synthetic
def _synthetic() -> PointMapDataset:
    from g2vlm.benchmarks.reconstruction.synthetic_set import WIDTH, synthetic_clips

    sequences = tuple(
        PointMapSequence(clip.name, tuple(PointMapFrame(stem, partial(_synthetic_view, clip, view))
                                          for view, stem in enumerate(clip.frame_stems)))
        for clip in synthetic_clips())
    return PointMapDataset("synthetic", sequences, WIDTH, None, 0.1, "every view of every scene")


def _synthetic_view(clip, view: int) -> PointMapView:
    return PointMapView(clip.rgb[view], clip.depth_m[view], clip.K[view], clip.camera_to_world[view])
