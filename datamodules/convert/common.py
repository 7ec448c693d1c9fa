"""What every raw-dataset converter (`g2vlm shard scannet|co3dv2|dl3dv`) does the same way.

A dataset module (`convert.scannet`, `convert.co3dv2`, `convert.dl3dv`) knows its raw layout and conventions
through a `RawDataset`: it lists scenes, lists a scene's frames with their OpenCV camera_to_world (bad poses
are skipped and counted there) and loads one frame onto its camera grid (RGB, K, optional depth and mask).
This module does the rest:

- keyframes: every `frame_stride`-th frame with a valid pose; a frame whose files do not load is skipped;
- clips: windows of `clip_frames` keyframes starting every `clip_step` keyframes (overlapping when
  clip_step < clip_frames); when the windows miss the last keyframes, one more window ends at the last one. A
  scene with fewer keyframes gives one shorter clip (at least MIN_CLIP_FRAMES);
- stored size: long side `long_side` px (never upscaled); colour, depth and mask are resized together by
  `augmentation.crop_resize` (box-filter + bilinear colour, nearest depth and mask) and K follows exactly;
- encoding: JPEG (quality JPEG_QUALITY) colour; depth bit for bit with one depth_scale per scene: uint16 as
  16-bit PNG, float16 as a 16-bit PNG of exact power-of-two steps (`float16_as_uint16_steps`; .npy when the
  values span too many binades), frames that differ in scale as float32 .npy; masks as 8-bit PNG;
- shards: `<out>/<dataset>-<split>-NNNNNN.tar`, closed at a scene boundary once they hold `shard_bytes`. A shard
  is written under `<out>/.partial/` and moved into place only when complete, then recorded with its scenes
  in `<dataset>-<split>-progress.json`. A re-run skips the scenes of recorded shards: an interrupted run
  resumes after its last complete shard and a finished run writes nothing. The progress file also holds the
  options; a re-run with other options is refused (start a new --out). `<dataset>-<split>-index.json` has
  the `ShardWriter` index format;
- bad input is skipped and counted per reason (SKIP_REASONS) with the first files named, never fatal; a
  summary at the end gives scenes, clips, frames and the skips;
- a root that does not look like the dataset raises `RootError` saying what was expected.

Scenes convert in `workers` processes (each scene is independent); shards are written by the main process in
scene order, so the output does not depend on `workers`.
"""

from __future__ import annotations

import collections
import json
import logging
import multiprocessing
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from g2vlm.datamodules.augmentation import CropBox, crop_resize
from g2vlm.datamodules.shards.decoding import encode_depth_npy, encode_depth_png, encode_jpeg, encode_mask_png
from g2vlm.datamodules.shards.schema import MAX_FRAMES, ClipMeta, SampleError, check_camera_to_world, clip_key
from g2vlm.datamodules.shards.writer import ShardWriter

logger = logging.getLogger("g2vlm.datamodules.convert")

JPEG_QUALITY = 90
MIN_CLIP_FRAMES = 2  # a clip needs two views to carry multi-view geometry
MAX_EXAMPLES = 5  # files named per skip reason in the progress file and the summary
PARTIAL_DIR = ".partial"

# Why something was skipped (frames unless the text says scenes); the summary prints the text.
SKIP_BAD_POSE = "bad_pose"
SKIP_BAD_INTRINSICS = "bad_intrinsics"
SKIP_UNREADABLE = "unreadable_file"
SKIP_SIZE_MISMATCH = "size_mismatch"
SKIP_MISSING_SCENE_FILES = "missing_scene_files"
SKIP_LOW_QUALITY = "low_viewpoint_quality"
SKIP_TOO_FEW_FRAMES = "too_few_frames"
SKIP_INVALID_CLIP = "invalid_clip"
SKIP_REASONS = {
    SKIP_BAD_POSE: "frames with a non-finite, non-rigid or unreadable pose",
    SKIP_BAD_INTRINSICS: "frames with missing, non-finite or unknown-format intrinsics",
    SKIP_UNREADABLE: "frames with a missing or undecodable image, depth or mask file",
    SKIP_SIZE_MISMATCH: "frames whose files disagree in size (with each other, the annotation or the scene)",
    SKIP_MISSING_SCENE_FILES: "scenes whose camera/intrinsics file or image folder is missing or unreadable",
    SKIP_LOW_QUALITY: "scenes below the viewpoint-quality threshold",
    SKIP_TOO_FEW_FRAMES: f"scenes with fewer than {MIN_CLIP_FRAMES} usable keyframes",
    SKIP_INVALID_CLIP: "clips refused by the schema check",
}


class RootError(ValueError):
    """--root does not look like the dataset; the message says what was expected."""


class OutputError(ValueError):
    """--out holds a conversion this run cannot continue (other options, a recorded shard missing)."""


class SkipFrame(Exception):
    """A frame (or, raised from `RawDataset.frames`, a whole scene) that cannot be converted."""

    def __init__(self, reason: str, message: str):
        if reason not in SKIP_REASONS:
            raise ValueError(f"SkipFrame: unknown skip reason {reason!r}")
        super().__init__(message)
        self.reason = reason


class Skips:
    """Skip counts per reason, with the first MAX_EXAMPLES messages (naming the file) of each.

    `reasons`: the reasons a caller may add (the scene converters' SKIP_REASONS, a programming error otherwise), or
    None for converters whose reasons come from the records' own errors (SPAR, SPAR-Bench), where an unforeseen
    reason must be counted, not end the run."""

    def __init__(self, counts: dict[str, int] | None = None, examples: dict[str, list[str]] | None = None,
                 reasons: Collection[str] | None = tuple(SKIP_REASONS)):
        self.counts: collections.Counter[str] = collections.Counter(counts or {})
        self.examples: dict[str, list[str]] = {reason: list(messages) for reason, messages in (examples or {}).items()}
        self.reasons = reasons

    def add(self, reason: str, message: str) -> None:
        if self.reasons is not None and reason not in self.reasons:
            raise ValueError(f"Skips.add: unknown skip reason {reason!r}")
        self.counts[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(message)
        logger.info("skipped (%s): %s", reason, message)

    def update(self, other: Skips) -> None:
        self.counts.update(other.counts)
        for reason, messages in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(messages[: MAX_EXAMPLES - len(mine)])

    def to_json(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "examples": self.examples}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Skips:
        return cls(record.get("counts"), record.get("examples"))


@dataclass(frozen=True)
class ClipOptions:
    """How scenes become clips: keyframe stride, clip length and window step (keyframes), stored long side."""

    clip_frames: int = 24
    clip_step: int = 12
    frame_stride: int = 1
    long_side: int = 640

    def __post_init__(self):
        if not MIN_CLIP_FRAMES <= self.clip_frames <= MAX_FRAMES:
            raise ValueError(f"clip_frames must lie in [{MIN_CLIP_FRAMES}, {MAX_FRAMES}], got {self.clip_frames}")
        if self.clip_step < 1 or self.frame_stride < 1 or self.long_side < 1:
            raise ValueError(
                f"clip_step, frame_stride and long_side must be >= 1, got {self.clip_step}, {self.frame_stride}, "
                f"{self.long_side}"
            )


@dataclass
class RawScene:
    """One scene of the raw dataset: its name (unique in the dataset) and what its RawDataset needs to read it."""

    name: str
    source: Any


@dataclass
class FrameRef:
    """One frame of a scene before loading: source frame number, checked OpenCV camera_to_world (4, 4) and the
    dataset's own handle (paths, annotation)."""

    frame_id: int
    camera_to_world: np.ndarray
    source: Any


@dataclass
class RawFrame:
    """One loaded frame on its camera grid. rgb (H, W, 3) uint8; K (3, 3) pixels for that grid; depth (H, W)
    uint16 or float16/float32 in units of depth_scale, 0 = invalid, or None; mask (H, W) bool or None."""

    rgb: np.ndarray
    K: np.ndarray
    depth: np.ndarray | None = None
    depth_scale: float = 1.0
    mask: np.ndarray | None = None


class RawDataset(ABC):
    """A raw dataset on disk. Instances are pickled to the worker processes: keep them small."""

    name: str
    depth_is_metric: bool
    has_depth: bool

    @abstractmethod
    def scenes(self, skips: Skips) -> list[RawScene]:
        """All scenes under the root, sorted by name. Raises RootError when the root is not this dataset.
        Scenes dropped while listing (e.g. low quality) are counted in `skips`."""

    @abstractmethod
    def frames(self, scene: RawScene, skips: Skips) -> list[FrameRef]:
        """The scene's frames in capture order, without those whose pose is bad (counted in `skips`).
        Raises SkipFrame for a scene that cannot be read at all."""

    @abstractmethod
    def load(self, scene: RawScene, frame: FrameRef) -> RawFrame:
        """Load one frame. Raises SkipFrame (reason, message naming the file)."""

    def options(self) -> dict[str, Any]:
        """Dataset-specific options that change the output (recorded in the progress file)."""
        return {}


def check_pose(camera_to_world: np.ndarray, where: str) -> np.ndarray:
    """camera_to_world (4, 4) -> itself as float64, or SkipFrame(bad_pose) if non-finite or not rigid."""
    camera_to_world = np.asarray(camera_to_world, dtype=np.float64)
    if camera_to_world.shape != (4, 4):
        raise SkipFrame(SKIP_BAD_POSE, f"{where}: pose has shape {camera_to_world.shape}, expected (4, 4)")
    try:
        check_camera_to_world(camera_to_world[None], where)
    except SampleError as error:
        raise SkipFrame(SKIP_BAD_POSE, str(error)) from None
    return camera_to_world


def clip_windows(count: int, clip_frames: int, clip_step: int) -> list[range]:
    """Keyframe index windows of one scene with `count` keyframes (see module doc)."""
    if count < MIN_CLIP_FRAMES:
        return []
    if count <= clip_frames:
        return [range(count)]
    starts = list(range(0, count - clip_frames + 1, clip_step))
    if starts[-1] + clip_frames < count:
        starts.append(count - clip_frames)
    return [range(start, start + clip_frames) for start in starts]


def stored_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(H, W) with the long side at most `long_side` (aspect kept up to rounding; never upscaled)."""
    longest = max(height, width)
    if longest <= long_side:
        return height, width
    scale = long_side / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(rgb: np.ndarray, target_hw: tuple[int, int]) -> np.ndarray:
    """rgb (H, W, 3) uint8 -> (h, w, 3) uint8 over the same field of view (the full frame), resampled as the
    loaders do. Use it to bring colour onto another grid (ScanNet: colour onto the depth grid)."""
    if rgb.shape[:2] == tuple(target_hw):
        return rgb
    images = torch.from_numpy(np.require(rgb, requirements=["C", "W"])).permute(2, 0, 1)[None]
    box = CropBox(0, 0, rgb.shape[1], rgb.shape[0])
    images, _, _, _ = crop_resize(images, None, None, torch.eye(3, dtype=torch.float64)[None], box, target_hw)
    return images[0].permute(1, 2, 0).contiguous().numpy()


def resize_frame(frame: RawFrame, target_hw: tuple[int, int]) -> RawFrame:
    """The frame at target_hw (H, W): colour resampled, depth and mask nearest (values kept bit for bit), K
    updated exactly. Depth and mask must lie on the colour grid."""
    height, width = frame.rgb.shape[:2]
    if (height, width) == tuple(target_hw):
        return frame
    images = torch.from_numpy(np.require(frame.rgb, requirements=["C", "W"])).permute(2, 0, 1)[None]
    # float32 holds every uint16 and float16 value exactly, and nearest sampling only copies values
    depth = None if frame.depth is None else torch.from_numpy(frame.depth.astype(np.float32))[None]
    mask = None if frame.mask is None else torch.from_numpy(frame.mask)[None]
    K = torch.from_numpy(np.asarray(frame.K, dtype=np.float64))[None]
    images, depth, mask, K = crop_resize(images, depth, mask, K, CropBox(0, 0, width, height), target_hw)
    return RawFrame(
        rgb=images[0].permute(1, 2, 0).contiguous().numpy(), K=K[0].numpy(),
        depth=None if depth is None else depth[0].numpy().astype(frame.depth.dtype),
        depth_scale=frame.depth_scale, mask=None if mask is None else mask[0].numpy(),
    )


@dataclass
class StoredFrame:
    """A keyframe at the stored size, colour and mask encoded; depth still an array (encoded per scene)."""

    frame_id: int
    camera_to_world: np.ndarray
    K: np.ndarray
    jpg: bytes
    mask_png: bytes | None
    depth: np.ndarray | None
    depth_scale: float


@dataclass
class SceneResult:
    """What converting one scene gave: clips ready for ShardWriter.write, keyframes used, skips."""

    name: str
    clips: list[tuple[str, dict[str, Any], list[dict[str, bytes]]]] = field(default_factory=list)
    keyframes: int = 0
    skips: Skips = field(default_factory=Skips)


def float16_as_uint16_steps(depths: list[np.ndarray]) -> tuple[list[np.ndarray], float] | None:
    """float16 depth maps (0 = invalid, else positive) -> (uint16 maps, step) with value = units x step exactly,
    step a power of two; None when the values span too many binades for 16 bits.

    A float16 in [2^e, 2^(e+1)) is a multiple of 2^(e-10) (subnormals of 2^-24), so every value of the set is a
    multiple of the step of the smallest one; multiplying by a power of two is exact, so the loader's
    float32(units) x float32(step x scale) reproduces float32(value) x float32(scale) bit for bit. A 16-bit PNG
    of the units compresses about 4x better than the raw float16 .npy (reference data-and-benchmarks.md §4.4)."""
    positive = [depth[depth > 0] for depth in depths]
    smallest = min((float(values.min()) for values in positive if values.size), default=1.0)
    exponent = int(np.frexp(np.float32(smallest))[1])  # smallest = m 2^exponent, m in [0.5, 1)
    step = np.float32(2.0 ** max(exponent - 11, -24))
    units = [depth.astype(np.float32) / step for depth in depths]
    if max(float(u.max()) for u in units) > np.iinfo(np.uint16).max:
        return None
    return [u.astype(np.uint16) for u in units], float(step)


def _encode_depths(frames: list[StoredFrame]) -> tuple[list[bytes | None], str | None, float]:
    """(encoded depth per frame, member suffix, depth_scale) with one depth_scale for the whole scene: uint16 as
    16-bit PNG; float16 as 16-bit PNG of exact power-of-two steps when the values allow it, else as float16 .npy;
    frames that differ in scale as float32 .npy of value x scale (scale 1). Bit for bit in every case."""
    if frames[0].depth is None:
        return [None] * len(frames), None, 1.0
    scales = {frame.depth_scale for frame in frames}
    if frames[0].depth.dtype == np.uint16:
        if len(scales) != 1:
            raise ValueError(f"convert_scene: uint16 depth with several scales {sorted(scales)}")
        return [encode_depth_png(frame.depth) for frame in frames], "depth.png", scales.pop()
    if len(scales) > 1:
        encoded = [encode_depth_npy(frame.depth.astype(np.float32) * np.float32(frame.depth_scale)) for frame in frames]
        return encoded, "depth.npy", 1.0
    scale = scales.pop()
    if frames[0].depth.dtype == np.float16:
        stepped = float16_as_uint16_steps([frame.depth for frame in frames])
        if stepped is not None:
            units, step = stepped
            return [encode_depth_png(u) for u in units], "depth.png", step * scale
    return [encode_depth_npy(frame.depth) for frame in frames], "depth.npy", scale


def convert_scene(dataset: RawDataset, scene: RawScene, options: ClipOptions) -> SceneResult:
    """Load the scene's keyframes, store them at the configured size and cut them into clips."""
    result = SceneResult(scene.name)
    try:
        refs = dataset.frames(scene, result.skips)
    except SkipFrame as error:
        result.skips.add(error.reason, str(error))
        return result
    stored: list[StoredFrame] = []
    size: tuple[int, int] | None = None
    for ref in refs[:: options.frame_stride]:
        try:
            frame = dataset.load(scene, ref)
        except SkipFrame as error:
            result.skips.add(error.reason, str(error))
            continue
        target = stored_size(*frame.rgb.shape[:2], options.long_side)
        if size is None:
            size = target
        elif target != size:
            result.skips.add(SKIP_SIZE_MISMATCH, f"{scene.name} frame {ref.frame_id}: stored size {target} differs "
                                                 f"from the scene's {size}")
            continue
        frame = resize_frame(frame, size)
        stored.append(StoredFrame(
            frame_id=ref.frame_id, camera_to_world=ref.camera_to_world, K=frame.K,
            jpg=encode_jpeg(frame.rgb, JPEG_QUALITY), mask_png=None if frame.mask is None else encode_mask_png(frame.mask),
            depth=frame.depth, depth_scale=frame.depth_scale,
        ))
    windows = clip_windows(len(stored), options.clip_frames, options.clip_step)
    if not windows:
        result.skips.add(SKIP_TOO_FEW_FRAMES, f"{scene.name}: {len(stored)} usable keyframes")
        return result
    result.keyframes = len(stored)
    with_mask = all(frame.mask_png is not None for frame in stored)
    depths, depth_suffix, depth_scale = _encode_depths(stored)
    for clip_index, window in enumerate(windows):
        members = []
        for index in window:
            frame = {"jpg": stored[index].jpg}
            if depth_suffix is not None:
                frame[depth_suffix] = depths[index]
            if with_mask:
                frame["mask.png"] = stored[index].mask_png
            members.append(frame)
        meta = ClipMeta(
            dataset=dataset.name, scene=scene.name, frame_ids=[stored[i].frame_id for i in window],
            width=size[1], height=size[0], K=np.stack([stored[i].K for i in window]),
            camera_to_world=np.stack([stored[i].camera_to_world for i in window]), depth_scale=depth_scale,
            depth_is_metric=dataset.depth_is_metric, has_depth=dataset.has_depth,
        )
        result.clips.append((clip_key(dataset.name, scene.name, clip_index), meta.to_json(), members))
    return result


_worker_dataset: RawDataset | None = None
_worker_options: ClipOptions | None = None


def _init_worker(dataset: RawDataset, options: ClipOptions) -> None:
    global _worker_dataset, _worker_options
    _worker_dataset, _worker_options = dataset, options


def _convert_in_worker(scene: RawScene) -> SceneResult:
    return convert_scene(_worker_dataset, scene, _worker_options)


def _scene_results(dataset: RawDataset, scenes: list[RawScene], options: ClipOptions, workers: int) -> Iterator[SceneResult]:
    if workers <= 1 or len(scenes) <= 1:
        for scene in scenes:
            yield convert_scene(dataset, scene, options)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(dataset, options)) as pool:
        yield from pool.imap(_convert_in_worker, scenes)


def _write_json_atomic(path: Path, record: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(record, indent=1))
    os.replace(temporary, path)


class ShardProgress:
    """The `<prefix>-progress.json` record: options and the committed chunks (a shard, or None when its scenes
    gave no clip, with the scenes it covers, counts and skips)."""

    def __init__(self, path: Path, options: dict[str, Any]):
        self.path = path
        self.options = options
        self.chunks: list[dict[str, Any]] = []
        if path.exists():
            record = json.loads(path.read_text())
            if record.get("options") != options:
                raise OutputError(
                    f"{path} was written with other options ({record.get('options')}); now {options}. "
                    "Convert into a new --out folder, or re-run with the same options to resume."
                )
            self.chunks = record["chunks"]
            for chunk in self.chunks:
                if chunk["shard"] is not None:
                    shard = path.parent / chunk["shard"]
                    if not shard.exists() or shard.stat().st_size != chunk["bytes"]:
                        raise OutputError(
                            f"{path} records {chunk['shard']} ({chunk['bytes']} bytes) but the file is missing or "
                            "has another size; delete the progress file and the shards to start over"
                        )

    @property
    def done_scenes(self) -> set[str]:
        return {scene for chunk in self.chunks for scene in chunk["scenes"]}

    @property
    def shards(self) -> list[dict[str, Any]]:
        return [chunk for chunk in self.chunks if chunk["shard"] is not None]

    def commit(self, chunk: dict[str, Any]) -> None:
        self.chunks.append(chunk)
        _write_json_atomic(self.path, {"options": self.options, "chunks": self.chunks})


def convert_dataset(
    dataset: RawDataset,
    out_dir: str | Path,
    options: ClipOptions,
    split: str = "train",
    scene_names: list[str] | None = None,
    shard_bytes: int = 1 << 30,
    workers: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Convert the dataset's scenes (all, or those named in `scene_names`) into shards under `out_dir`,
    resuming after the shards a previous run recorded. Returns the summary (see `format_summary`)."""
    out_dir = Path(out_dir)
    prefix = f"{dataset.name}-{split}"
    listing_skips = Skips()
    scenes = dataset.scenes(listing_skips)
    if scene_names is not None:
        known = {scene.name for scene in scenes}
        unknown = sorted(set(scene_names) - known)
        if unknown:
            raise RootError(f"{dataset.name}: scenes {unknown[:5]} from the scene list are not under the root "
                            f"({len(known)} scenes there, e.g. {sorted(known)[:3]})")
        wanted = set(scene_names)
        scenes = [scene for scene in scenes if scene.name in wanted]
    out_dir.mkdir(parents=True, exist_ok=True)
    record_options = {"dataset": dataset.name, "split": split, "clip_frames": options.clip_frames,
                      "clip_step": options.clip_step, "frame_stride": options.frame_stride,
                      "long_side": options.long_side, **dataset.options()}
    state = ShardProgress(out_dir / f"{prefix}-progress.json", record_options)
    done = state.done_scenes
    pending = [scene for scene in scenes if scene.name not in done]
    partial_dir = out_dir / PARTIAL_DIR
    shutil.rmtree(partial_dir, ignore_errors=True)  # an interrupted run's unfinished shard

    written_now = clips_now = skipped_now = 0
    if pending:
        results = _scene_results(dataset, pending, options, workers)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(pending), unit="scene", desc=f"{dataset.name} {split}")
        writer: ShardWriter | None = None
        chunk = new_chunk()
        for result in results:
            if writer is None:
                writer = ShardWriter(partial_dir, prefix, max_shard_bytes=1 << 62)
            clip_skips = Skips()
            for key, meta, frames in result.clips:
                try:
                    writer.write(key, meta, frames)
                except SampleError as error:
                    clip_skips.add(SKIP_INVALID_CLIP, f"{key}: {error}")
                    continue
                chunk["clips"] += 1
                chunk["frames"] += len(frames)
            result.skips.update(clip_skips)
            chunk["scenes"].append(result.name)
            chunk["keyframes"] += result.keyframes
            _add_skips(chunk, result.skips)
            clips_now += len(result.clips)
            skipped_now += sum(result.skips.counts.values())
            if progress:
                results.set_postfix(clips=clips_now, skipped=skipped_now, refresh=False)
            if writer.shards and writer.shards[-1]["bytes"] >= shard_bytes:
                written_now += commit_shard(state, writer, chunk, out_dir, prefix)
                writer, chunk = None, new_chunk()
        if chunk["scenes"]:
            written_now += commit_shard(state, writer, chunk, out_dir, prefix)
    shutil.rmtree(partial_dir, ignore_errors=True)
    write_index(out_dir / f"{prefix}-index.json", prefix, state.shards)
    skips = Skips()
    for chunk in state.chunks:
        skips.update(Skips.from_json(chunk["skips"]))
    skips.update(listing_skips)
    converted = {scene for chunk in state.chunks for scene in chunk["scenes"]}
    return {
        "dataset": dataset.name, "split": split, "out": str(out_dir),
        "scenes_found": len(scenes), "scenes_converted_now": len(pending),
        "scenes_already_done": len([scene for scene in scenes if scene.name in done]),
        "scenes": len(converted), "clips": sum(c["clips"] for c in state.chunks),
        "keyframes": sum(c["keyframes"] for c in state.chunks), "frames": sum(c["frames"] for c in state.chunks),
        "shards": len(state.shards), "shards_written_now": written_now,
        "bytes": sum(c["bytes"] for c in state.shards), "skipped": skips.to_json(),
    }


def new_chunk() -> dict[str, Any]:
    return {"shard": None, "scenes": [], "clips": 0, "frames": 0, "keyframes": 0, "bytes": 0,
            "skips": Skips().to_json()}


def _add_skips(chunk: dict[str, Any], skips: Skips) -> None:
    merged = Skips.from_json(chunk["skips"])
    merged.update(skips)
    chunk["skips"] = merged.to_json()


def commit_shard(state: ShardProgress, writer: ShardWriter, chunk: dict[str, Any], out_dir: Path, prefix: str) -> int:
    """Close the chunk's shard, move it into place and record it. Returns the number of shards written (0/1)."""
    index = writer.close()
    written = 0
    if chunk["clips"] > 0:
        name = f"{prefix}-{len(state.shards):06d}.tar"
        os.replace(writer.out_dir / index["shards"][0]["name"], out_dir / name)
        chunk["shard"] = name
        chunk["bytes"] = (out_dir / name).stat().st_size
        written = 1
    state.commit(chunk)
    return written


def write_index(path: Path, prefix: str, shards: list[dict[str, Any]]) -> dict[str, Any]:
    """The ShardWriter index format, written atomically (returned); the file is left untouched when its content
    would not change."""
    index = {
        "prefix": prefix,
        "shards": [{"name": s["shard"], "clips": s["clips"], "frames": s["frames"], "bytes": s["bytes"]} for s in shards],
        "total_clips": sum(s["clips"] for s in shards),
        "total_frames": sum(s["frames"] for s in shards),
        "total_bytes": sum(s["bytes"] for s in shards),
    }
    text = json.dumps(index, indent=1)
    if not (path.exists() and path.read_text() == text):
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(text)
        os.replace(temporary, path)
    return index


def format_summary(summary: dict[str, Any]) -> str:
    """The end-of-run report: scenes, clips, frames, shards, and every skip reason with example files."""
    lines = [
        f"{summary['dataset']} {summary['split']} -> {summary['out']}",
        f"  scenes: {summary['scenes_found']} found, {summary['scenes_converted_now']} converted now, "
        f"{summary['scenes_already_done']} already done",
        f"  clips: {summary['clips']}, keyframes: {summary['keyframes']}, stored frames: {summary['frames']} "
        f"(overlapping clips share keyframes)",
        f"  shards: {summary['shards']} ({summary['shards_written_now']} written now), "
        f"{summary['bytes'] / 2**20:.1f} MiB",
    ]
    counts = summary["skipped"]["counts"]
    if not counts:
        lines.append("  skipped: nothing")
    for reason, count in sorted(counts.items()):
        lines.append(f"  skipped {count} {SKIP_REASONS[reason]} [{reason}]")
        for example in summary["skipped"]["examples"].get(reason, []):
            lines.append(f"    e.g. {example}")
    return "\n".join(lines)
