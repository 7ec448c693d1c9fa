"""Render synthetic scenes into clip shards through the shared `ShardWriter` (the same path as real data).

One scene = one clip of `views` frames: JPEG RGB, 16-bit PNG depth with DEPTH_SCALE_M metres per unit (the
room diagonal stays below 65535 * DEPTH_SCALE_M = 13.1 m), K, camera_to_world and the object annotations
(class, colour name, 3D box) in meta for the spatial-QA generator.

Shards are written as the raw-data converters write theirs (`convert.common`): each under `<out>/.partial/` first,
then moved into place and recorded with the options in `synthetic-<split>-progress.json`, and the index is
rewritten after every shard, so the folder's index always lists exactly its finished shards. A re-run with the
same options continues after the recorded shards (a finished one writes nothing); `synthetic-<split>` files
written otherwise (other options, an older run, another tool) are refused unless `overwrite`, which deletes them
first, so a glob never mixes old clips with new ones.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import shutil
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from g2vlm.datamodules.convert.common import (
    PARTIAL_DIR,
    OutputError,
    ShardProgress,
    commit_shard,
    new_chunk,
    write_index,
)
from g2vlm.datamodules.shards.decoding import encode_depth_png, encode_jpeg
from g2vlm.datamodules.shards.schema import ClipMeta, clip_key
from g2vlm.datamodules.shards.writer import ShardWriter
from g2vlm.datamodules.synthetic.render import render
from g2vlm.datamodules.synthetic.scene import sample_scene

DATASET_NAME = "synthetic"
DEPTH_SCALE_M = 2e-4  # 0.2 mm steps: quantisation error <= 0.1 mm
JPEG_QUALITY = 90


def scene_name(seed: int, scene_index: int) -> str:
    return f"seed{seed}-scene{scene_index:07d}"


def render_clip(
    scene_index: int, *, seed: int, views: int, height: int, width: int, jpeg_quality: int = JPEG_QUALITY
) -> tuple[str, dict[str, Any], list[dict[str, bytes]]]:
    """Render one scene and encode it: (key, meta record, frames) ready for `ShardWriter.write`."""
    scene = sample_scene(seed, scene_index, views, height, width)
    rendering = render(scene)
    units = np.round(rendering.depth_m / DEPTH_SCALE_M)
    depth_units = np.where((units > 0) & (units <= np.iinfo(np.uint16).max), units, 0).astype(np.uint16)
    frames = [
        {"jpg": encode_jpeg(rgb, jpeg_quality), "depth.png": encode_depth_png(depth, compress_level=1)}
        for rgb, depth in zip(rendering.rgb, depth_units)
    ]
    meta = ClipMeta(
        dataset=DATASET_NAME, scene=scene_name(seed, scene_index), frame_ids=list(range(views)),
        width=width, height=height, K=scene.K, camera_to_world=scene.camera_to_world,
        depth_scale=DEPTH_SCALE_M, depth_is_metric=True, has_depth=True,
        objects=[obj.annotation() for obj in scene.objects],
        room={"size": [round(float(v), 6) for v in scene.room_size], "up_axis": "+z", "floor_z": 0.0},
    )
    return clip_key(DATASET_NAME, scene_name(seed, scene_index), 0), meta.to_json(), frames


def _rendered_clips(
    scene_indices: list[int], workers: int, **render_args: Any
) -> Iterator[tuple[str, dict[str, Any], list[dict[str, bytes]]]]:
    job = partial(render_clip, **render_args)
    if workers <= 1:
        yield from map(job, scene_indices)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(job, scene_indices, chunksize=max(1, min(16, len(scene_indices) // (workers * 8))))


def shard_set_files(out_dir: Path, prefix: str) -> list[Path]:
    """The shards, index and progress file of `prefix` in `out_dir`."""
    return sorted(path for path in out_dir.glob(f"{prefix}-*") if path.is_file()
                  and (path.name.endswith(".tar") or path.name in (f"{prefix}-index.json", f"{prefix}-progress.json")))


def _refuse_unaccounted_files(out_dir: Path, prefix: str, options: dict[str, Any]) -> None:
    """OutputError when `out_dir` holds files of `prefix` that a progress record with these options does not
    account for (the progress record's own checks follow in ShardProgress)."""
    progress_path = out_dir / f"{prefix}-progress.json"
    recorded: set[str] = set()
    if progress_path.is_file():
        record = json.loads(progress_path.read_text())
        if record.get("options") != options:
            raise OutputError(f"{out_dir} holds {prefix} shards written with other options ({record.get('options')}); "
                              f"now {options}. Pass --overwrite to replace them, or choose another --out")
        recorded = {chunk["shard"] for chunk in record["chunks"] if chunk["shard"] is not None}
        recorded |= {progress_path.name, f"{prefix}-index.json"}
    foreign = [path.name for path in shard_set_files(out_dir, prefix) if path.name not in recorded]
    if foreign:
        raise OutputError(f"{out_dir} already holds {len(foreign)} {prefix} files this run did not record "
                          f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); a glob would mix them with "
                          "the new clips. Pass --overwrite to replace them, or choose another --out")


def write_synthetic_shards(
    out_dir: str | Path,
    scenes: int,
    views: int,
    height: int,
    width: int,
    seed: int = 0,
    split: str = "train",
    workers: int = 1,
    clips_per_shard: int = 100,
    progress: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Render `scenes` scenes (indices 0..scenes-1 of `seed`) into `<out_dir>/synthetic-<split>-NNNNNN.tar` of
    `clips_per_shard` clips each, plus the index JSON; returns the index. The output does not depend on `workers`.
    Resumes a run with the same options; raises OutputError for other `synthetic-<split>` files in `out_dir` unless
    `overwrite` (which deletes them first)."""
    out_dir = Path(out_dir)
    prefix = f"{DATASET_NAME}-{split}"
    if clips_per_shard < 1:
        raise ValueError(f"write_synthetic_shards: clips_per_shard must be >= 1, got {clips_per_shard}")
    options = {"dataset": DATASET_NAME, "split": split, "scenes": scenes, "views": views, "height": height,
               "width": width, "seed": seed, "clips_per_shard": clips_per_shard}
    out_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for path in shard_set_files(out_dir, prefix):
            path.unlink()
    _refuse_unaccounted_files(out_dir, prefix, options)
    state = ShardProgress(out_dir / f"{prefix}-progress.json", options)
    partial_dir = out_dir / PARTIAL_DIR / prefix
    shutil.rmtree(partial_dir, ignore_errors=True)  # an interrupted run's unfinished shard
    index_path = out_dir / f"{prefix}-index.json"
    write_index(index_path, prefix, state.shards)
    first = len(state.chunks) * clips_per_shard  # every chunk holds clips_per_shard scenes but the last
    pending = list(range(first, scenes))
    clips = _rendered_clips(pending, workers, seed=seed, views=views, height=height, width=width)
    if progress:
        from tqdm import tqdm

        clips = tqdm(clips, total=len(pending), unit="scene", desc=f"synthetic {split}")
    clips = iter(clips)  # one iterator for all shards: islice over a tqdm would restart tqdm's own generator each time
    for start in range(first, scenes, clips_per_shard):
        writer, chunk = ShardWriter(partial_dir, prefix, max_shard_bytes=1 << 62), new_chunk()
        for key, meta, frames in itertools.islice(clips, min(clips_per_shard, scenes - start)):
            writer.write(key, meta, frames)
            chunk["scenes"].append(meta["scene"])
            chunk["clips"] += 1
            chunk["frames"] += len(frames)
            chunk["keyframes"] += len(frames)
        commit_shard(state, writer, chunk, out_dir, prefix)
        write_index(index_path, prefix, state.shards)
    shutil.rmtree(out_dir / PARTIAL_DIR / prefix, ignore_errors=True)
    _remove_empty(out_dir / PARTIAL_DIR)
    index = write_index(index_path, prefix, state.shards)
    if index["total_clips"] != scenes:
        raise RuntimeError(f"write_synthetic_shards: {index_path} lists {index['total_clips']} clips, not the "
                           f"{scenes} scenes asked for")
    return index


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # absent, or another shard set's unfinished shard is there
