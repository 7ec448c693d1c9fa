"""Render synthetic scenes into clip shards through the shared `ShardWriter` (the same path as real data).

One scene = one clip of `views` frames: JPEG RGB, 16-bit PNG depth with DEPTH_SCALE_M metres per unit (the
room diagonal stays below 65535 * DEPTH_SCALE_M = 13.1 m), K, camera_to_world and the object annotations
(class, colour name, 3D box) in meta for the spatial-QA generator.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from g2vlm.datamodules.decoding import encode_depth_png, encode_jpeg
from g2vlm.datamodules.schema import ClipMeta, clip_key
from g2vlm.datamodules.shard_writer import ShardWriter
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
    scenes: int, workers: int, **render_args: Any
) -> Iterator[tuple[str, dict[str, Any], list[dict[str, bytes]]]]:
    job = partial(render_clip, **render_args)
    if workers <= 1:
        yield from map(job, range(scenes))
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(job, range(scenes), chunksize=max(1, min(16, scenes // (workers * 8))))


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
    max_shard_bytes: int = 1 << 30,
    progress: bool = False,
) -> dict[str, Any]:
    """Render `scenes` scenes (indices 0..scenes-1 of `seed`) into `<out_dir>/synthetic-<split>-NNNNNN.tar`
    plus the index JSON; returns the index. The output does not depend on `workers`."""
    clips = _rendered_clips(scenes, workers, seed=seed, views=views, height=height, width=width)
    if progress:
        from tqdm import tqdm

        clips = tqdm(clips, total=scenes, unit="scene", desc=f"synthetic {split}")
    with ShardWriter(out_dir, f"{DATASET_NAME}-{split}", max_shard_bytes, clips_per_shard) as writer:
        for key, meta, frames in clips:
            writer.write(key, meta, frames)
    return writer.close()
