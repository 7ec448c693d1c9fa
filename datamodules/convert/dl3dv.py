"""DL3DV-10K -> clip shards (cameras only): `g2vlm shard dl3dv --root RAW --out DIR [--images-dir images_4]`.

Raw layout (reference data-and-benchmarks.md §3.3): one folder per scene, directly under RAW or one level
deeper (the release groups scenes in subsets such as `1K/`):

    RAW/[<subset>/]<scene>/transforms.json       Nerfstudio format: w, h, fl_x, fl_y, cx, cy (top level or per
                                                 frame), frames[].file_path, frames[].transform_matrix
    RAW/[<subset>/]<scene>/images_4/frame_NNNNN.png   the 960P images (`--images-dir`; `images` = full size)

The image of a frame is `<scene>/<images-dir>/<file name of frames[].file_path>`; the scene name is its path
under RAW. Frames are ordered by the number in their file name.

Conventions:
- `transform_matrix` is an OpenGL/Blender camera-to-world (y up, looking down -z): OpenCV camera_to_world =
  transform_matrix diag(1, -1, -1, 1);
- the intrinsics refer to a w x h image (the 4K frames in the release); they are scaled to the stored image
  by (W / w, H / h). Nerfstudio and COLMAP put the image origin at the top-left corner (pixel centres at
  +0.5); with pixel centres at integer coordinates, as this suite uses, cx' = cx W / w - 0.5 (likewise y);
- distortion terms (k1, k2, p1, p2) are not applied;
- no ground-truth depth: has_depth and depth_is_metric are false (the loss uses the cameras only).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from g2vlm.datamodules.convert.common import (
    SKIP_BAD_INTRINSICS,
    SKIP_BAD_POSE,
    SKIP_MISSING_SCENE_FILES,
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
from g2vlm.datamodules.shards.decoding import decode_jpeg
from g2vlm.datamodules.shards.schema import SampleError

TRANSFORMS = "transforms.json"
DEFAULT_IMAGES_DIR = "images_4"
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
INTRINSIC_KEYS = ("w", "h", "fl_x", "fl_y", "cx", "cy")
EXPECTED_LAYOUT = (
    "<root>/[<subset>/]<scene>/transforms.json with the images in <root>/[<subset>/]<scene>/<images-dir>/ "
    "(the DL3DV-10K release layout, e.g. 1K/<hash>/transforms.json and 1K/<hash>/images_4/frame_00001.png)"
)
_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def camera_to_world_from_opengl(transform_matrix: np.ndarray) -> np.ndarray:
    """OpenGL/Blender camera_to_world (4, 4) -> OpenCV camera_to_world (4, 4)."""
    return transform_matrix @ OPENGL_TO_OPENCV


def intrinsics_for_image(intrinsics: dict[str, float], height: int, width: int) -> np.ndarray:
    """Nerfstudio intrinsics of a w x h image (corner origin) -> K (3, 3) of an H x W image of the same view,
    pixel centres at integer coordinates."""
    scale_x, scale_y = width / intrinsics["w"], height / intrinsics["h"]
    return np.array([
        [intrinsics["fl_x"] * scale_x, 0.0, intrinsics["cx"] * scale_x - 0.5],
        [0.0, intrinsics["fl_y"] * scale_y, intrinsics["cy"] * scale_y - 0.5],
        [0.0, 0.0, 1.0],
    ])


class DL3DV(RawDataset):
    name = "dl3dv"
    depth_is_metric = False
    has_depth = False

    def __init__(self, root: str | Path, images_dir: str = DEFAULT_IMAGES_DIR):
        self.root = Path(root)
        self.images_dir = images_dir

    def options(self) -> dict[str, Any]:
        return {"images_dir": self.images_dir}

    def scenes(self, skips: Skips) -> list[RawScene]:
        if not self.root.is_dir():
            raise RootError(f"--root {self.root} is not a folder; expected {EXPECTED_LAYOUT}")
        files = sorted([*self.root.glob(f"*/{TRANSFORMS}"), *self.root.glob(f"*/*/{TRANSFORMS}")])
        if not files:
            seen = sorted(p.name for p in self.root.iterdir())[:5]
            raise RootError(f"--root {self.root} does not look like DL3DV: no <scene>/{TRANSFORMS} one or two levels "
                            f"down (found {seen or 'nothing'}). Expected {EXPECTED_LAYOUT}")
        return [RawScene(path.parent.relative_to(self.root).as_posix(), path.parent) for path in files]

    def frames(self, scene: RawScene, skips: Skips) -> list[FrameRef]:
        folder: Path = scene.source
        if not (folder / self.images_dir).is_dir():
            raise SkipFrame(SKIP_MISSING_SCENE_FILES, f"{scene.name}: no image folder {self.images_dir}/ "
                                                      "(choose another with --images-dir)")
        try:
            transforms = json.loads((folder / TRANSFORMS).read_text())
            frames = transforms["frames"]
            if not isinstance(frames, list):
                raise TypeError("'frames' is not a list")
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SkipFrame(SKIP_MISSING_SCENE_FILES, f"{scene.name}/{TRANSFORMS}: unreadable ({error})") from None
        refs = []
        for position, frame in enumerate(frames):
            try:
                file_name = Path(frame["file_path"]).name
            except (KeyError, TypeError):
                skips.add(SKIP_BAD_POSE, f"{scene.name}/{TRANSFORMS} frames[{position}]: no file_path")
                continue
            where = f"{scene.name}/{TRANSFORMS} frames[{position}] ({file_name})"
            try:
                matrix = np.asarray(frame["transform_matrix"], dtype=np.float64)
                camera_to_world = check_pose(camera_to_world_from_opengl(matrix), where)
            except (KeyError, TypeError, ValueError) as error:
                skips.add(SKIP_BAD_POSE, f"{where}: transform_matrix unreadable ({error})")
                continue
            except SkipFrame as error:
                skips.add(error.reason, str(error))
                continue
            intrinsics = {key: frame.get(key, transforms.get(key)) for key in INTRINSIC_KEYS}
            number = _LAST_NUMBER.search(Path(file_name).stem)
            frame_id = int(number.group(1)) if number else position
            refs.append(FrameRef(frame_id, camera_to_world, (file_name, intrinsics)))
        refs.sort(key=lambda ref: ref.frame_id)
        return refs

    def load(self, scene: RawScene, frame: FrameRef) -> RawFrame:
        file_name, intrinsics = frame.source
        where = f"{scene.name}/{self.images_dir}/{file_name}"
        try:
            values = {key: float(intrinsics[key]) for key in INTRINSIC_KEYS}
        except (TypeError, ValueError) as error:
            raise SkipFrame(SKIP_BAD_INTRINSICS, f"{where}: intrinsics {intrinsics} incomplete ({error})") from None
        if not all(np.isfinite(v) for v in values.values()) or min(values["w"], values["h"], values["fl_x"], values["fl_y"]) <= 0:
            raise SkipFrame(SKIP_BAD_INTRINSICS, f"{where}: intrinsics {values} are not finite and positive")
        try:
            rgb = decode_jpeg((scene.source / self.images_dir / file_name).read_bytes(), where)
        except SampleError as error:
            raise SkipFrame(SKIP_UNREADABLE, str(error)) from None
        except OSError as error:
            raise SkipFrame(SKIP_UNREADABLE, f"{where}: {error}") from None
        return RawFrame(rgb=rgb, K=intrinsics_for_image(values, *rgb.shape[:2]))
