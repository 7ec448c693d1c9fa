"""ScanNet v2 (the SensReader export) -> clip shards: `g2vlm shard scannet --root RAW --out DIR`.

Raw layout (one folder per scene, as `SensReader/python/reader.py --export_color_images --export_depth_images
--export_poses --export_intrinsics` writes it; reference data-and-benchmarks.md §3.1):

    RAW/<scene>/color/<i>.jpg                    colour, 1296 x 968
    RAW/<scene>/depth/<i>.png                    uint16 millimetres, 640 x 480, 0 = invalid
    RAW/<scene>/pose/<i>.txt                     4 x 4 camera_to_world (OpenCV axes), whitespace text
    RAW/<scene>/intrinsic/intrinsic_depth.txt    4 x 4, top-left 3 x 3 = K of the depth grid

Conventions, as the DUSt3R / CUT3R / G2VLM family handles them:
- colour is resized onto the depth grid and K is `intrinsic_depth` (the colour<->depth extrinsic is taken as
  identity); the pair is then stored at the long side (640 by default: the depth grid itself, depth untouched);
- depth_scale 0.001 (the PNG values are kept bit for bit), depth_is_metric true;
- frames whose pose has -inf/NaN (or is not rigid) are skipped and counted; a scene whose intrinsics are
  missing or not finite is skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

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
    resize_image,
)
from g2vlm.datamodules.shards.decoding import decode_depth_png, decode_jpeg
from g2vlm.datamodules.shards.schema import SampleError

DEPTH_SCALE_M = 0.001  # the export's millimetres
SCENE_FOLDERS = ("color", "depth", "pose")
INTRINSICS_FILE = Path("intrinsic") / "intrinsic_depth.txt"
EXPECTED_LAYOUT = (
    "<root>/<scene>/color/<i>.jpg, <root>/<scene>/depth/<i>.png (uint16 mm), <root>/<scene>/pose/<i>.txt "
    "(4x4 camera-to-world) and <root>/<scene>/intrinsic/intrinsic_depth.txt, as ScanNet's SensReader exports "
    "each .sens file"
)
_FRAME_FILE = re.compile(r"^(\d+)\.txt$")


def _read_matrix(path: Path, where: str, reason: str) -> np.ndarray:
    try:
        matrix = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as error:
        raise SkipFrame(reason, f"{where}: not a readable 4x4 text matrix ({error})") from None
    if matrix.shape != (4, 4):
        raise SkipFrame(reason, f"{where}: holds shape {matrix.shape}, expected 4x4")
    return matrix


class ScanNet(RawDataset):
    name = "scannet"
    depth_is_metric = True
    has_depth = True

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def scenes(self, skips: Skips) -> list[RawScene]:
        if not self.root.is_dir():
            raise RootError(f"--root {self.root} is not a folder; expected {EXPECTED_LAYOUT}")
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and all((p / f).is_dir() for f in SCENE_FOLDERS))
        if not folders:
            seen = sorted(p.name for p in self.root.iterdir())[:5]
            raise RootError(
                f"--root {self.root} does not look like an exported ScanNet: no scene folder with color/, depth/ "
                f"and pose/ (found {seen or 'nothing'}). Expected {EXPECTED_LAYOUT}"
            )
        return [RawScene(folder.name, folder) for folder in folders]

    def frames(self, scene: RawScene, skips: Skips) -> list[FrameRef]:
        folder: Path = scene.source
        intrinsics = _read_matrix(folder / INTRINSICS_FILE, f"{scene.name}/{INTRINSICS_FILE}", SKIP_MISSING_SCENE_FILES)
        K = intrinsics[:3, :3].copy()
        if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise SkipFrame(SKIP_BAD_INTRINSICS, f"{scene.name}/{INTRINSICS_FILE}: K is not finite and positive")
        K[2] = (0.0, 0.0, 1.0)
        numbered = []
        for path in (folder / "pose").iterdir():
            match = _FRAME_FILE.match(path.name)
            if match:
                numbered.append((int(match.group(1)), path))
        refs = []
        for frame_id, path in sorted(numbered):
            where = f"{scene.name}/pose/{path.name}"
            try:
                camera_to_world = check_pose(_read_matrix(path, where, SKIP_BAD_POSE), where)
            except SkipFrame as error:
                skips.add(error.reason, str(error))
                continue
            refs.append(FrameRef(frame_id, camera_to_world, K))
        return refs

    def load(self, scene: RawScene, frame: FrameRef) -> RawFrame:
        folder: Path = scene.source
        color_path = folder / "color" / f"{frame.frame_id}.jpg"
        depth_path = folder / "depth" / f"{frame.frame_id}.png"
        try:
            rgb = decode_jpeg(color_path.read_bytes(), f"{scene.name}/color/{color_path.name}")
            depth_mm = decode_depth_png(depth_path.read_bytes(), f"{scene.name}/depth/{depth_path.name}")
        except SampleError as error:
            raise SkipFrame(SKIP_UNREADABLE, str(error)) from None
        except OSError as error:
            raise SkipFrame(SKIP_UNREADABLE, f"{scene.name} frame {frame.frame_id}: {error}") from None
        return RawFrame(rgb=resize_image(rgb, depth_mm.shape), K=frame.source, depth=depth_mm, depth_scale=DEPTH_SCALE_M)
