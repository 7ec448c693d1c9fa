"""The multi-view clip schema: one WebDataset sample = one clip of one scene.

Members of a sample with key KEY (no dots; see `sanitize_key`) and frame index FFF (000, 001, ...):

    KEY.meta.json        the clip record (`ClipMeta`)
    KEY.FFF.jpg          RGB, 8-bit sRGB JPEG
    KEY.FFF.depth.png    uint16, metres = value * depth_scale, 0 = invalid (only when has_depth)
    KEY.FFF.depth.npy    alternative to depth.png: float16/float32 metres * depth_scale, 0 = invalid
    KEY.FFF.mask.png     optional 8-bit mask (nonzero = keep)

Fields of KEY.meta.json (reference data-and-benchmarks.md §4.3):
    dataset, scene (str); frame_ids (N source frame numbers); width, height (stored resolution, px);
    camera_convention = "opencv_c2w"; K (N x 3 x 3, pixels, pixel centres at integer coordinates);
    camera_to_world (N x 4 x 4, OpenCV axes); depth_scale (metres per stored unit, > 0);
    depth_is_metric, has_depth (bool); optional z_far (metres), objects (list of annotation dicts), room.

Every problem is raised as `SampleError` with a `reason` (the counter a loader increments when it skips the
sample) and a message that names the member or field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CAMERA_CONVENTION = "opencv_c2w"
FRAME_DIGITS = 3
MAX_FRAMES = 10 ** FRAME_DIGITS
FRAME_SUFFIXES = ("jpg", "depth.png", "depth.npy", "mask.png")
META_SUFFIX = "meta.json"

# Reasons a sample is skipped; loaders count skips per reason.
REASON_TRUNCATED = "truncated"  # a tar member cut short (incomplete shard)
REASON_MISSING_FRAME = "missing_frame"  # meta lists a frame whose jpg/depth member is absent
REASON_BAD_DEPTH = "bad_depth"  # NaN, inf or negative depth, or a depth map that is not 16-bit / float
REASON_BAD_POSE = "bad_pose"  # non-finite or non-rigid camera_to_world
REASON_SCHEMA = "schema"  # meta.json missing, unparsable, or a field of the wrong type/shape/value
REASON_DECODE = "decode"  # an image that does not decode, or whose size disagrees with meta
REASON_OVER_BUDGET = "over_budget"  # a QA sample longer than the loader's token budget (never truncated)
SKIP_REASONS = (
    REASON_TRUNCATED, REASON_MISSING_FRAME, REASON_BAD_DEPTH, REASON_BAD_POSE, REASON_SCHEMA, REASON_DECODE,
    REASON_OVER_BUDGET,
)

RIGID_TOLERANCE = 1e-4  # |R^T R - I| and |det R - 1| above this make a pose non-rigid
# The largest frame a sample may declare (8192 x 8192): what a loader allocates per frame follows the meta's
# width x height, so a hostile or broken meta.json must not be able to ask for more (checked before decoding).
MAX_FRAME_PIXELS = 8192 * 8192

_KEY_FORBIDDEN = re.compile(r"[^A-Za-z0-9_\-]")


class DataError(RuntimeError):
    """The data as a whole is unusable (shards missing, or no valid clip among many drawn): the run stops with this
    one message, which names the shards and the skip counts."""


class SampleError(ValueError):
    """A sample that violates the schema. `reason` is one of SKIP_REASONS."""

    def __init__(self, reason: str, message: str):
        if reason not in SKIP_REASONS:
            raise ValueError(f"SampleError: unknown skip reason {reason!r}")
        super().__init__(message)
        self.reason = reason


def sanitize_key(text: str) -> str:
    """Make a WebDataset-safe key part: dots, slashes, spaces and other symbols become '_'."""
    cleaned = _KEY_FORBIDDEN.sub("_", str(text))
    if not cleaned:
        raise ValueError("sanitize_key: text gives an empty key")
    return cleaned


def clip_key(dataset: str, scene: str, clip_index: int) -> str:
    """`<dataset>__<scene>__clipNNNNN`, sanitised (reference §4.3)."""
    return f"{sanitize_key(dataset)}__{sanitize_key(scene)}__clip{clip_index:05d}"


def frame_member(frame_index: int, suffix: str) -> str:
    """Suffix of a frame member inside a sample, e.g. (3, 'jpg') -> '003.jpg'."""
    if not 0 <= frame_index < MAX_FRAMES:
        raise ValueError(f"frame_member: frame_index {frame_index} outside [0, {MAX_FRAMES})")
    return f"{frame_index:0{FRAME_DIGITS}d}.{suffix}"


@dataclass
class ClipMeta:
    """The validated KEY.meta.json of one clip. K (N, 3, 3) and camera_to_world (N, 4, 4) are float64."""

    dataset: str
    scene: str
    frame_ids: list[int]
    width: int
    height: int
    K: np.ndarray
    camera_to_world: np.ndarray
    depth_scale: float
    depth_is_metric: bool
    has_depth: bool
    z_far: float | None = None
    objects: list[dict[str, Any]] = field(default_factory=list)
    room: dict[str, Any] | None = None

    @property
    def num_frames(self) -> int:
        return len(self.frame_ids)

    def to_json(self) -> dict[str, Any]:
        """The JSON record written as KEY.meta.json."""
        record: dict[str, Any] = {
            "dataset": self.dataset,
            "scene": self.scene,
            "frame_ids": [int(i) for i in self.frame_ids],
            "width": int(self.width),
            "height": int(self.height),
            "camera_convention": CAMERA_CONVENTION,
            "K": np.asarray(self.K, dtype=np.float64).tolist(),
            "camera_to_world": np.asarray(self.camera_to_world, dtype=np.float64).tolist(),
            "depth_scale": float(self.depth_scale),
            "depth_is_metric": bool(self.depth_is_metric),
            "has_depth": bool(self.has_depth),
        }
        if self.z_far is not None:
            record["z_far"] = float(self.z_far)
        if self.objects:
            record["objects"] = self.objects
        if self.room is not None:
            record["room"] = self.room
        return record


def _require(record: dict, name: str, types: tuple[type, ...], where: str) -> Any:
    if name not in record:
        raise SampleError(REASON_SCHEMA, f"{where}: missing field '{name}'")
    value = record[name]
    if isinstance(value, bool) and bool not in types:
        raise SampleError(REASON_SCHEMA, f"{where}: field '{name}' must be {_names(types)}, got bool")
    if not isinstance(value, types):
        raise SampleError(REASON_SCHEMA, f"{where}: field '{name}' must be {_names(types)}, got {type(value).__name__}")
    return value


def _names(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


def _matrix_field(record: dict, name: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    value = _require(record, name, (list,), where)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise SampleError(REASON_SCHEMA, f"{where}: field '{name}' is not a numeric array ({error})") from None
    if array.shape != shape:
        raise SampleError(REASON_SCHEMA, f"{where}: field '{name}' has shape {array.shape}, expected {shape}")
    return array


_FOCAL_ENTRIES = [0, 4]  # K[0, 0], K[1, 1] in K.reshape(N, 9)
_LOWER_ENTRIES = [3, 6, 7, 8]  # K[1, 0], K[2, 0], K[2, 1], K[2, 2]
_LOWER_VALUES = np.array([0.0, 0.0, 0.0, 1.0])


def check_intrinsics(K: np.ndarray, where: str) -> None:
    """K (N, 3, 3): finite, positive focal lengths, zero skew terms below the diagonal, K[2] = (0, 0, 1)."""
    entries = K.reshape(len(K), 9)
    if (np.isfinite(entries).all() and (entries[:, _FOCAL_ENTRIES] > 0).all()
            and (entries[:, _LOWER_ENTRIES] == _LOWER_VALUES).all()):
        return  # the usual case in three vectorised tests; otherwise find the rule broken, in order, for the message
    if not np.isfinite(K).all():
        raise SampleError(REASON_SCHEMA, f"{where}: field 'K' has non-finite entries")
    if np.any(K[:, 0, 0] <= 0) or np.any(K[:, 1, 1] <= 0):
        raise SampleError(REASON_SCHEMA, f"{where}: field 'K' has a non-positive focal length")
    raise SampleError(REASON_SCHEMA, f"{where}: field 'K' is not an upper-triangular pinhole matrix with K[2] = (0, 0, 1)")


_LAST_ROW = np.array([0.0, 0.0, 0.0, 1.0])
_IDENTITY = np.eye(3)


def check_camera_to_world(camera_to_world: np.ndarray, where: str) -> None:
    """camera_to_world (N, 4, 4): finite, last row (0, 0, 0, 1), rotation orthonormal with det +1."""
    if not np.isfinite(camera_to_world).all():
        raise SampleError(REASON_BAD_POSE, f"{where}: field 'camera_to_world' has non-finite entries")
    if np.abs(camera_to_world[:, 3] - _LAST_ROW).max() > RIGID_TOLERANCE:
        raise SampleError(REASON_BAD_POSE, f"{where}: field 'camera_to_world' last row is not (0, 0, 0, 1)")
    rotation = camera_to_world[:, :3, :3]
    gram_error = np.abs(rotation.transpose(0, 2, 1) @ rotation - _IDENTITY).max()
    det_error = np.abs(np.linalg.det(rotation) - 1.0).max()
    if gram_error > RIGID_TOLERANCE or det_error > RIGID_TOLERANCE:
        raise SampleError(
            REASON_BAD_POSE,
            f"{where}: field 'camera_to_world' is not rigid (|R^T R - I| = {gram_error:.2e}, |det R - 1| = {det_error:.2e})",
        )


def validate_meta(record: Any, where: str = "meta.json") -> ClipMeta:
    """Validate a decoded KEY.meta.json record and return it typed. Raises SampleError naming the field."""
    if not isinstance(record, dict):
        raise SampleError(REASON_SCHEMA, f"{where}: expected a JSON object, got {type(record).__name__}")
    dataset = _require(record, "dataset", (str,), where)
    scene = _require(record, "scene", (str,), where)
    frame_ids = _require(record, "frame_ids", (list,), where)
    if not frame_ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in frame_ids):
        raise SampleError(REASON_SCHEMA, f"{where}: field 'frame_ids' must be a non-empty list of integers")
    num_frames = len(frame_ids)
    if num_frames > MAX_FRAMES:
        raise SampleError(REASON_SCHEMA, f"{where}: field 'frame_ids' lists {num_frames} frames (at most {MAX_FRAMES})")
    width = _require(record, "width", (int,), where)
    height = _require(record, "height", (int,), where)
    if width <= 0 or height <= 0:
        raise SampleError(REASON_SCHEMA, f"{where}: fields 'width'/'height' must be positive, got {width}x{height}")
    if width * height > MAX_FRAME_PIXELS:
        raise SampleError(REASON_SCHEMA, f"{where}: fields 'width' x 'height' {width}x{height} exceed the "
                                         f"{MAX_FRAME_PIXELS:,} pixels a frame may have")
    convention = record.get("camera_convention", CAMERA_CONVENTION)
    if convention != CAMERA_CONVENTION:
        raise SampleError(REASON_SCHEMA, f"{where}: field 'camera_convention' is {convention!r}, expected {CAMERA_CONVENTION!r}")
    K = _matrix_field(record, "K", (num_frames, 3, 3), where)
    check_intrinsics(K, where)
    camera_to_world = _matrix_field(record, "camera_to_world", (num_frames, 4, 4), where)
    depth_scale = float(_require(record, "depth_scale", (int, float), where))
    if not math.isfinite(depth_scale) or depth_scale <= 0:
        raise SampleError(REASON_SCHEMA, f"{where}: field 'depth_scale' must be finite and > 0, got {depth_scale}")
    depth_is_metric = _require(record, "depth_is_metric", (bool,), where)
    has_depth = _require(record, "has_depth", (bool,), where)
    z_far = record.get("z_far")
    if z_far is not None:
        if isinstance(z_far, bool) or not isinstance(z_far, (int, float)) or not z_far > 0:
            raise SampleError(REASON_SCHEMA, f"{where}: field 'z_far' must be a positive number, got {z_far!r}")
        z_far = float(z_far)
    objects = record.get("objects", [])
    if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
        raise SampleError(REASON_SCHEMA, f"{where}: field 'objects' must be a list of objects")
    room = record.get("room")
    if room is not None and not isinstance(room, dict):
        raise SampleError(REASON_SCHEMA, f"{where}: field 'room' must be an object")
    # Pose last: a well-formed record with a broken camera is a pose problem, not a schema problem.
    check_camera_to_world(camera_to_world, where)
    return ClipMeta(
        dataset=dataset, scene=scene, frame_ids=list(frame_ids), width=width, height=height, K=K,
        camera_to_world=camera_to_world, depth_scale=depth_scale, depth_is_metric=depth_is_metric,
        has_depth=has_depth, z_far=z_far, objects=objects, room=room,
    )
