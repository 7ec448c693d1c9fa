"""Co3Dv2 -> clip shards: `g2vlm shard co3dv2 --root RAW --out DIR [--categories apple ball ...]`.

Raw layout (reference data-and-benchmarks.md §3.2; paths inside the annotations are relative to RAW):

    RAW/<category>/frame_annotations.jgz         gzipped JSON list of FrameAnnotation records
    RAW/<category>/sequence_annotations.jgz      gzipped JSON list (viewpoint_quality_score); optional here
    RAW/<category>/<sequence>/images/frameNNNNNN.jpg
    RAW/<category>/<sequence>/depths/frameNNNNNN.jpg.geometric.png     16-bit PNG holding float16 bit patterns
    RAW/<category>/<sequence>/depth_masks/frameNNNNNN.png              depth validity
    RAW/<category>/<sequence>/masks/frameNNNNNN.png                    P(foreground) * 255

One scene = one sequence, named `<category>/<sequence>`; frames in `frame_number` order. Sequences with a
`viewpoint_quality_score` <= VIEWPOINT_QUALITY_MIN are skipped (the common filter; a missing score keeps them).

Conventions:
- depth: the uint16 buffer reinterpreted as float16, times the frame's `depth.scale_adjustment`, zero where
  the depth mask is 0 or the value is not finite and positive. Stored bit for bit (the loader's depth equals
  float32(float16 value) x float32(scale_adjustment)): as a 16-bit PNG of exact power-of-two steps
  (`convert.common.float16_as_uint16_steps`), else float16 .npy, or float32 .npy when the frames of a sequence
  differ in scale. COLMAP units, so depth_is_metric is false;
- mask.png: foreground, P(foreground) >= FOREGROUND_MIN (the loader restricts depth supervision to it);
- cameras: PyTorch3D row-vector convention X_cam = X_world R + T with camera axes +x left, +y up. OpenCV
  world-to-camera is R_w2c = (R diag(-1, -1, 1))^T, t_w2c = diag(-1, -1, 1) T; camera_to_world its inverse;
- intrinsics from NDC: `ndc_isotropic` s = min(H, W) / 2 for both axes, `ndc_norm_image_bounds` (the older
  format) s_x = W / 2, s_y = H / 2; fx = f_x s_x, cx = W / 2 - p_x s_x (likewise y). Those are image
  coordinates with the origin at the top-left corner (PyTorch3D's NDC spans the image edges); with pixel
  centres at integer coordinates, as this suite uses, cx and cy are 0.5 smaller.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from g2vlm.datamodules.convert.common import (
    SKIP_BAD_INTRINSICS,
    SKIP_BAD_POSE,
    SKIP_LOW_QUALITY,
    SKIP_SIZE_MISMATCH,
    SKIP_UNREADABLE,
    FrameRef,
    RawDataset,
    RawFrame,
    RawScene,
    RootError,
    SkipFrame,
    Skips,
    check_pose,
)
from g2vlm.datamodules.shards.decoding import decode_depth_png, decode_jpeg, decode_mask_png
from g2vlm.datamodules.shards.schema import SampleError

FRAME_ANNOTATIONS = "frame_annotations.jgz"
SEQUENCE_ANNOTATIONS = "sequence_annotations.jgz"
VIEWPOINT_QUALITY_MIN = 0.5
FOREGROUND_MIN = 0.5
FLIP_XY = np.diag([-1.0, -1.0, 1.0])
EXPECTED_LAYOUT = (
    "<root>/<category>/frame_annotations.jgz with the images/, depths/, depth_masks/ and masks/ of each "
    "sequence under <root>/<category>/<sequence>/ (the Co3Dv2 release layout)"
)


def read_jgz(path: Path) -> Any:
    """A gzipped JSON file (Co3D's .jgz)."""
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        return json.load(stream)


def camera_to_world_from_pytorch3d(R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """PyTorch3D viewpoint (R (3, 3), T (3,), X_cam = X_world R + T, camera +x left, +y up) -> OpenCV
    camera_to_world (4, 4)."""
    rotation_w2c = (R @ FLIP_XY).T
    translation_w2c = FLIP_XY @ T
    camera_to_world = np.eye(4)
    camera_to_world[:3, :3] = rotation_w2c.T
    camera_to_world[:3, 3] = -rotation_w2c.T @ translation_w2c
    return camera_to_world


def intrinsics_from_ndc(
    focal_length: np.ndarray, principal_point: np.ndarray, height: int, width: int, intrinsics_format: str
) -> np.ndarray:
    """Co3D NDC focal length (2,) and principal point (2,) of an H x W image -> K (3, 3) in pixels, pixel
    centres at integer coordinates."""
    if intrinsics_format == "ndc_isotropic":
        scale_x = scale_y = min(height, width) / 2
    elif intrinsics_format == "ndc_norm_image_bounds":
        scale_x, scale_y = width / 2, height / 2
    else:
        raise ValueError(f"unknown intrinsics_format {intrinsics_format!r} (ndc_isotropic or ndc_norm_image_bounds)")
    return np.array([
        [focal_length[0] * scale_x, 0.0, width / 2 - principal_point[0] * scale_x - 0.5],
        [0.0, focal_length[1] * scale_y, height / 2 - principal_point[1] * scale_y - 0.5],
        [0.0, 0.0, 1.0],
    ])


def decode_float16_depth_png(data: bytes, member: str) -> np.ndarray:
    """Co3D depth PNG bytes -> (H, W) float16 (the 16-bit values reinterpreted as float16 bit patterns)."""
    return decode_depth_png(data, member).view(np.float16)


def _read_foreground(path: Path, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(path.read_bytes())) as image:
            probability = np.asarray(image.convert("L"))
    except (OSError, ValueError, SyntaxError) as error:
        raise SkipFrame(SKIP_UNREADABLE, f"{where}: not a readable mask ({type(error).__name__}: {error})") from None
    return probability >= round(FOREGROUND_MIN * 255)


class Co3Dv2(RawDataset):
    name = "co3dv2"
    depth_is_metric = False
    has_depth = True

    def __init__(self, root: str | Path, categories: list[str] | None = None):
        self.root = Path(root)
        self.categories = None if categories is None else sorted(categories)
        self._cached: tuple[str, dict[str, list[dict]]] | None = None  # one category's frames, per process

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cached": None}

    def options(self) -> dict[str, Any]:
        return {"viewpoint_quality_min": VIEWPOINT_QUALITY_MIN, "foreground_min": FOREGROUND_MIN}

    def _category_frames(self, category: str) -> dict[str, list[dict]]:
        """sequence name -> its frame annotations (frame_number order), for one category (cached)."""
        if self._cached is None or self._cached[0] != category:
            sequences: dict[str, list[dict]] = {}
            for annotation in read_jgz(self.root / category / FRAME_ANNOTATIONS):
                sequences.setdefault(annotation["sequence_name"], []).append(annotation)
            for frames in sequences.values():
                frames.sort(key=lambda annotation: annotation["frame_number"])
            self._cached = (category, sequences)
        return self._cached[1]

    def scenes(self, skips: Skips) -> list[RawScene]:
        if not self.root.is_dir():
            raise RootError(f"--root {self.root} is not a folder; expected {EXPECTED_LAYOUT}")
        available = sorted(p.name for p in self.root.iterdir() if (p / FRAME_ANNOTATIONS).is_file())
        if not available:
            seen = sorted(p.name for p in self.root.iterdir())[:5]
            raise RootError(f"--root {self.root} does not look like Co3Dv2: no <category>/{FRAME_ANNOTATIONS} "
                            f"(found {seen or 'nothing'}). Expected {EXPECTED_LAYOUT}")
        categories = available if self.categories is None else self.categories
        missing = sorted(set(categories) - set(available))
        if missing:
            raise RootError(f"--categories {missing} have no {FRAME_ANNOTATIONS} under {self.root} "
                            f"(available: {available})")
        scenes = []
        for category in categories:
            quality = {}
            if (self.root / category / SEQUENCE_ANNOTATIONS).is_file():
                for record in read_jgz(self.root / category / SEQUENCE_ANNOTATIONS):
                    quality[record["sequence_name"]] = record.get("viewpoint_quality_score")
            for sequence in sorted(self._category_frames(category)):
                score = quality.get(sequence)
                if score is not None and score <= VIEWPOINT_QUALITY_MIN:
                    skips.add(SKIP_LOW_QUALITY, f"{category}/{sequence}: viewpoint_quality_score {score:.3f}")
                    continue
                scenes.append(RawScene(f"{category}/{sequence}", (category, sequence)))
        return scenes

    def frames(self, scene: RawScene, skips: Skips) -> list[FrameRef]:
        category, sequence = scene.source
        refs = []
        for annotation in self._category_frames(category)[sequence]:
            where = f"{scene.name} frame {annotation['frame_number']} ({FRAME_ANNOTATIONS})"
            try:
                viewpoint = annotation["viewpoint"]
                R = np.asarray(viewpoint["R"], dtype=np.float64)
                T = np.asarray(viewpoint["T"], dtype=np.float64)
                if R.shape != (3, 3) or T.shape != (3,):
                    raise ValueError(f"R {R.shape} / T {T.shape}, expected (3, 3) / (3,)")
                camera_to_world = check_pose(camera_to_world_from_pytorch3d(R, T), f"{where} viewpoint")
            except (KeyError, TypeError, ValueError) as error:
                skips.add(SKIP_BAD_POSE, f"{where}: viewpoint unreadable ({error})")
                continue
            except SkipFrame as error:
                skips.add(error.reason, str(error))
                continue
            refs.append(FrameRef(int(annotation["frame_number"]), camera_to_world, annotation))
        return refs

    def load(self, scene: RawScene, frame: FrameRef) -> RawFrame:
        annotation = frame.source
        where = f"{scene.name} frame {frame.frame_id}"
        try:
            height, width = (int(v) for v in annotation["image"]["size"])
            viewpoint = annotation["viewpoint"]
            K = intrinsics_from_ndc(
                np.asarray(viewpoint["focal_length"], dtype=np.float64),
                np.asarray(viewpoint["principal_point"], dtype=np.float64),
                height, width, viewpoint.get("intrinsics_format", "ndc_norm_image_bounds"),
            )
            if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
                raise ValueError(f"K is not finite with positive focal lengths: {K.tolist()}")
        except (KeyError, TypeError, ValueError) as error:
            raise SkipFrame(SKIP_BAD_INTRINSICS, f"{where}: {error}") from None
        depth_info = annotation.get("depth") or {}
        if not depth_info.get("path"):
            raise SkipFrame(SKIP_UNREADABLE, f"{where}: annotation has no depth path")
        paths = {"image": annotation["image"]["path"], "depth": depth_info["path"]}
        try:
            rgb = decode_jpeg(self._read(paths["image"]), paths["image"])
            depth = decode_float16_depth_png(self._read(paths["depth"]), paths["depth"]).copy()
            depth_mask = None
            if depth_info.get("mask_path"):
                depth_mask = decode_mask_png(self._read(depth_info["mask_path"]), depth_info["mask_path"])
        except SampleError as error:
            raise SkipFrame(SKIP_UNREADABLE, str(error)) from None
        except OSError as error:
            raise SkipFrame(SKIP_UNREADABLE, f"{where}: {error}") from None
        mask = None
        if (annotation.get("mask") or {}).get("path"):
            mask_path = annotation["mask"]["path"]
            if not (self.root / mask_path).is_file():
                raise SkipFrame(SKIP_UNREADABLE, f"{mask_path}: missing")
            mask = _read_foreground(self.root / mask_path, mask_path)
        for name, array in (("image", rgb), ("depth", depth), ("depth mask", depth_mask), ("mask", mask)):
            if array is not None and array.shape[:2] != (height, width):
                raise SkipFrame(SKIP_SIZE_MISMATCH, f"{where}: {name} is {array.shape[1]}x{array.shape[0]}, the "
                                                    f"annotation says {width}x{height}")
        valid = np.isfinite(depth) & (depth > 0)
        if depth_mask is not None:
            valid &= depth_mask
        depth[~valid] = 0
        scale = depth_info.get("scale_adjustment")
        scale = 1.0 if scale is None else float(scale)
        if not np.isfinite(scale) or scale <= 0:
            raise SkipFrame(SKIP_UNREADABLE, f"{where}: depth scale_adjustment {scale} is not positive")
        return RawFrame(rgb=rgb, K=K, depth=depth, depth_scale=scale, mask=mask)

    def _read(self, relative: str) -> bytes:
        return (self.root / relative).read_bytes()

