"""Readers of the relative-pose benchmarks in their prepared layouts (reference g2vlm-official.md §5.4, data §7).

    co3dv2     ROOT/co3d_v2_annotations/<category>_test.jgz (the official preparation's output: gzipped JSON
               {sequence: [{filepath, R, T, focal_length, principal_point}, ...]}) and ROOT/data/<filepath>
               (the Co3Dv2 download: <category>/<sequence>/images/frameNNNNNN.jpg). All 51 categories; a
               sequence with fewer than 50 frames, or a frame whose T_x + T_y + T_z > 1e5, is left out.
    re10k      ROOT/<sequence>/annotations.json ([{filepath, extrinsics (world-to-camera, OpenCV, 3×4 or 4×4)},
               ...]; filepath relative to ROOT); the 1,719 test sequences of the official list, shipped as
               benchmarks/reconstruction/frame_maps/re10k_test_1719.txt (G2VLM `eval_code/recons/datasets/sequences/`), in its
               order (sorted); other folders under ROOT are ignored, a listed sequence missing there is an error.
    synthetic  no root: the held-out synthetic set, every view.

Frames: 10 per sequence by the seed-42 map (benchmarks/reconstruction/frame_maps.py); full images, uncropped. Co3Dv2's
PyTorch3D cameras (X_cam = X_world·R + T, +x left, +y up) become OpenCV world-to-camera by negating the first
two columns of R and the first two entries of T, then transposing R; camera_to_world is its inverse.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from g2vlm.benchmarks.reconstruction.dataset_args import known_name, prepared_root
from g2vlm.benchmarks.reconstruction.frame_maps import frame_map
from g2vlm.inference import PROTOCOL_LOAD_WIDTH, read_rgb

POSE_DATASET_NAMES = ("synthetic", "co3dv2", "re10k")
POSE_ALIASES = {"co3d": "co3dv2", "realestate10k": "re10k"}
CO3D_TRAINING_CATEGORIES = (
    "apple", "backpack", "banana", "baseballbat", "baseballglove", "bench", "bicycle", "bottle", "bowl", "broccoli",
    "cake", "car", "carrot", "cellphone", "chair", "cup", "donut", "hairdryer", "handbag", "hydrant", "keyboard",
    "laptop", "microwave", "motorcycle", "mouse", "orange", "parkingmeter", "pizza", "plant", "stopsign", "teddybear",
    "toaster", "toilet", "toybus", "toyplane", "toytrain", "toytruck", "tv", "umbrella", "vase", "wineglass")
CO3D_TEST_CATEGORIES = ("ball", "book", "couch", "frisbee", "hotdog", "kite", "remote", "sandwich", "skateboard",
                        "suitcase")
CO3D_MIN_FRAMES = 50
CO3D_MAX_TRANSLATION_SUM = 1e5
RE10K_SEQUENCE_LIST = Path(__file__).resolve().parent / "frame_maps" / "re10k_test_1719.txt"


@dataclass(frozen=True)
class PoseFrame:
    stem: str
    read_image: Callable[[], np.ndarray]


@dataclass(frozen=True)
class PoseSequence:
    """The sampled frames, in map order, and their GT camera_to_world (N, 4, 4) float64 (OpenCV)."""

    name: str
    frames: tuple[PoseFrame, ...]
    camera_to_world: np.ndarray


@dataclass(frozen=True)
class PoseDataset:
    name: str
    sequences: tuple[PoseSequence, ...]
    load_width: int
    frame_map_source: str
    notes: tuple[str, ...] = ()


def canonical_name(name: str) -> str:
    return known_name(name, POSE_DATASET_NAMES, "pose", POSE_ALIASES)


def opencv_world_to_camera_from_pytorch3d(R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """PyTorch3D (R (3, 3), T (3,)) with X_cam = X_world·R + T -> OpenCV world-to-camera (4, 4)."""
    rotation = np.array(R, dtype=np.float64)
    translation = np.array(T, dtype=np.float64)
    rotation[:, :2] *= -1
    translation[:2] *= -1
    world_to_camera = np.eye(4)
    world_to_camera[:3, :3] = rotation.T
    world_to_camera[:3, 3] = translation
    return world_to_camera


def rigid_inverse(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms (..., 4, 4)."""
    inverse = np.zeros_like(T)
    rotation_t = np.swapaxes(T[..., :3, :3], -1, -2)
    inverse[..., :3, :3] = rotation_t
    inverse[..., :3, 3] = -(rotation_t @ T[..., :3, 3:4])[..., 0]
    inverse[..., 3, 3] = 1.0
    return inverse


def read_pose_dataset(name: str, root: str | Path | None) -> PoseDataset:
    name = canonical_name(name)
    root = prepared_root("pose", name, root)
    if root is None:
        return _synthetic()
    annotations, notes = _annotations(name, root)
    ids, source = frame_map(name, {sequence: len(frames) for sequence, frames in annotations.items()})
    sequences = []
    for sequence, chosen in ids.items():
        records = [annotations[sequence][i] for i in chosen]
        frames = tuple(PoseFrame(Path(record["path"]).stem, partial(read_rgb, record["path"])) for record in records)
        sequences.append(PoseSequence(sequence, frames, np.stack([record["camera_to_world"] for record in records])))
    return PoseDataset(name, tuple(sequences), PROTOCOL_LOAD_WIDTH, source, tuple(notes))


def sequence_lengths(name: str, root: str | Path) -> dict[str, int]:
    """{sequence: frame count} in the reader's order (what the frame map is drawn from)."""
    annotations, _ = _annotations(canonical_name(name), prepared_root("pose", name, root))
    return {sequence: len(frames) for sequence, frames in annotations.items()}


def _annotations(name: str, root: Path) -> tuple[dict[str, list[dict]], list[str]]:
    """{sequence: [{"path", "camera_to_world"}]} in the reader's order, and notes on what was left out."""
    return _co3d(root) if name == "co3dv2" else _re10k(root)


def _co3d(root: Path) -> tuple[dict[str, list[dict]], list[str]]:
    annotation_dir = root / "co3d_v2_annotations"
    categories = CO3D_TRAINING_CATEGORIES + CO3D_TEST_CATEGORIES
    present = [c for c in categories if (annotation_dir / f"{c}_test.jgz").is_file()]
    if not present:
        raise ValueError(f"read_pose_dataset: no <category>_test.jgz in {annotation_dir} "
                         "(prepare Co3Dv2 with the official prepare_co3dv2 script)")
    notes = []
    if len(present) < len(categories):
        notes.append(f"{len(categories) - len(present)} of 51 categories missing: "
                     f"{', '.join(c for c in categories if c not in present)}")
    sequences, short, far = {}, 0, 0
    for category in present:
        path = annotation_dir / f"{category}_test.jgz"
        try:
            with gzip.open(path, "rt") as file:
                annotation = json.load(file)
        except (OSError, ValueError) as error:
            raise ValueError(f"read_pose_dataset: {path}: not a gzipped JSON annotation ({error})") from None
        for sequence, frames in annotation.items():
            if len(frames) < CO3D_MIN_FRAMES:
                short += 1
                continue
            if any(sum(frame["T"]) > CO3D_MAX_TRANSLATION_SUM for frame in frames):
                far += 1
                continue
            sequences[f"{category}/{sequence}"] = [
                {"path": root / "data" / frame["filepath"],
                 "camera_to_world": rigid_inverse(opencv_world_to_camera_from_pytorch3d(frame["R"], frame["T"]))}
                for frame in frames]
    notes.append(f"left out: {short} sequences with < {CO3D_MIN_FRAMES} frames, {far} with T sum > 1e5")
    return sequences, notes


def re10k_test_sequences() -> list[str]:
    """The official RealEstate10K test sequences, in the list's order."""
    return [line.strip() for line in RE10K_SEQUENCE_LIST.read_text().splitlines() if line.strip()]


def _re10k(root: Path) -> tuple[dict[str, list[dict]], list[str]]:
    names = re10k_test_sequences()
    missing = [name for name in names if not (root / name / "annotations.json").is_file()]
    if missing:
        raise ValueError(f"read_pose_dataset: {len(missing)} of the {len(names)} test sequences of "
                         f"{RE10K_SEQUENCE_LIST.name} have no <sequence>/annotations.json under {root} "
                         f"(first: {', '.join(missing[:3])})")
    sequences = {}
    for sequence in names:
        path = root / sequence / "annotations.json"
        try:
            records = json.loads(path.read_text())
            frames = []
            for record in records:
                world_to_camera = np.eye(4)
                matrix = np.asarray(record["extrinsics"], dtype=np.float64)
                world_to_camera[: matrix.shape[0], :4] = matrix
                frames.append({"path": root / record["filepath"], "camera_to_world": rigid_inverse(world_to_camera)})
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"read_pose_dataset: {path}: unreadable annotations ({type(error).__name__}: {error})") from None
        sequences[sequence] = frames
    return sequences, [f"sequence list: {RE10K_SEQUENCE_LIST.name} ({len(names)} sequences)"]


def _synthetic() -> PoseDataset:
    from g2vlm.benchmarks.reconstruction.synthetic_set import WIDTH, synthetic_clips

    sequences = tuple(
        PoseSequence(clip.name, tuple(PoseFrame(stem, partial(_index, clip.rgb, view))
                                      for view, stem in enumerate(clip.frame_stems)), clip.camera_to_world)
        for clip in synthetic_clips())
    return PoseDataset("synthetic", sequences, WIDTH, "every view of every scene")


def _index(array: np.ndarray, index: int) -> np.ndarray:
    return array[index]
