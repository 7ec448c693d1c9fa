"""The converters' shared machinery: clip windows, stored size, resize with exact K, resumable shards, options
check, worker independence, root errors; the datasets' camera and intrinsics conversions on hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from g2vlm.datamodules.convert.co3dv2 import Co3Dv2, camera_to_world_from_pytorch3d, intrinsics_from_ndc
from g2vlm.datamodules.convert.common import (
    SKIP_TOO_FEW_FRAMES,
    ClipOptions,
    FrameRef,
    OutputError,
    RawDataset,
    RawFrame,
    RawScene,
    RootError,
    clip_windows,
    convert_dataset,
    float16_as_uint16_steps,
    resize_frame,
    stored_size,
)
from g2vlm.datamodules.convert.dl3dv import DL3DV, camera_to_world_from_opengl, intrinsics_for_image
from g2vlm.datamodules.convert.scannet import ScanNet
from g2vlm.datamodules.shards.reader import read_clips
from g2vlm.datamodules.synthetic.render import render
from g2vlm.datamodules.synthetic.scene import sample_scene


@pytest.mark.parametrize("count, frames, step, starts", [
    (0, 4, 2, []), (1, 4, 2, []),  # fewer than two keyframes: no clip
    (3, 4, 2, [(0, 3)]),  # a short scene: one shorter clip
    (4, 4, 2, [(0, 4)]),
    (6, 4, 2, [(0, 4), (2, 6)]),
    (7, 4, 2, [(0, 4), (2, 6), (3, 7)]),  # one more window ends at the last keyframe
    (8, 4, 4, [(0, 4), (4, 8)]),  # no overlap
    (10, 4, 4, [(0, 4), (4, 8), (6, 10)]),
])
def test_clip_windows(count, frames, step, starts):
    assert [(w.start, w.stop) for w in clip_windows(count, frames, step)] == starts


@pytest.mark.parametrize("size, long_side, expected", [
    ((480, 640), 640, (480, 640)),  # ScanNet depth grid: kept
    ((968, 1296), 640, (478, 640)),
    ((1296, 968), 640, (640, 478)),  # portrait
    ((540, 960), 518, (291, 518)),
    ((100, 50), 640, (100, 50)),  # never upscaled
])
def test_stored_size(size, long_side, expected):
    assert stored_size(*size, long_side) == expected


def test_clip_options_are_checked():
    with pytest.raises(ValueError, match="clip_frames"):
        ClipOptions(clip_frames=1)
    with pytest.raises(ValueError, match="clip_step"):
        ClipOptions(clip_step=0)


@pytest.mark.parametrize("dtype", [np.uint16, np.float16])
def test_resize_frame_keeps_values_and_updates_K_exactly(dtype):
    scene = sample_scene(seed=4, scene_index=0, views=1, height=48, width=64)
    rendering = render(scene)
    depth = (rendering.depth_m[0] * 1000).astype(dtype)
    mask = rendering.surface_id[0] >= 6
    frame = RawFrame(rgb=rendering.rgb[0], K=scene.K[0], depth=depth, depth_scale=0.001, mask=mask)
    small = resize_frame(frame, (24, 32))
    fx, cx, cy = scene.K[0, 0, 0], scene.K[0, 0, 2], scene.K[0, 1, 2]
    np.testing.assert_allclose(small.K, [[fx / 2, 0, (cx + 0.5) / 2 - 0.5], [0, fx / 2, (cy + 0.5) / 2 - 0.5], [0, 0, 1]],
                               rtol=0, atol=1e-12)
    assert small.depth.dtype == dtype and small.depth_scale == 0.001
    # nearest sampling: every stored value is a source value, bit for bit (the centre of each 2x2 block)
    np.testing.assert_array_equal(small.depth, depth[1::2, 1::2])
    np.testing.assert_array_equal(small.mask, mask[1::2, 1::2])
    # colour: an exact 2x downscale is the mean of each 2x2 block (rounded)
    block_mean = rendering.rgb[0].astype(float).reshape(24, 2, 32, 2, 3).mean(axis=(1, 3))
    assert np.abs(small.rgb - block_mean).max() <= 0.5 + 1e-9
    assert resize_frame(frame, (48, 64)) is frame  # the stored size: untouched


def test_float16_depth_as_exact_uint16_steps():
    rng = np.random.default_rng(0)
    depths = [rng.uniform(0.3, 15.0, (5, 7)).astype(np.float16) for _ in range(3)]
    depths[0][0, :3] = 0  # invalid stays 0
    depths[1][1, 1] = np.float16(0.3)  # the smallest value sets the step: 0.3 in [2^-2, 2^-1) -> 2^-12
    units, step = float16_as_uint16_steps(depths)
    assert step == 2.0**-12
    for depth, unit in zip(depths, units):
        assert unit.dtype == np.uint16
        np.testing.assert_array_equal(unit.astype(np.float32) * np.float32(step), depth.astype(np.float32))
    # the loader's product with a scale: bit for bit the float16 value times the scale
    scale = np.float32(1.7)
    np.testing.assert_array_equal(units[1].astype(np.float32) * np.float32(step * 1.7), depths[1].astype(np.float32) * scale)
    subnormal = [np.array([[2.0**-24, 2.0**-20, 0.0]], dtype=np.float16)]
    units, step = float16_as_uint16_steps(subnormal)
    assert step == 2.0**-24 and units[0].tolist() == [[1, 16, 0]]
    # values spanning more than 16 bits of steps do not fit (max / min must stay below about 2^6)
    assert float16_as_uint16_steps([np.array([[0.001, 60000.0]], dtype=np.float16)]) is None


class MemoryScenes(RawDataset):
    """A dataset of synthetic scenes held in memory (no files): scene k has 3 + k frames, so scene 0 gives one
    clip and scene 3 gives two; `fail_scene` raises in load (an interrupted run)."""

    name = "memory"
    depth_is_metric = True
    has_depth = True

    def __init__(self, count: int, fail_scene: str | None = None):
        self.count = count
        self.fail_scene = fail_scene

    def scenes(self, skips):
        return [RawScene(f"room{k}", k) for k in range(self.count)]

    def frames(self, scene, skips):
        synthetic = sample_scene(seed=9, scene_index=scene.source, views=3 + scene.source, height=12, width=16)
        return [FrameRef(10 * view, synthetic.camera_to_world[view], (synthetic, view))
                for view in range(len(synthetic.camera_to_world))]

    def load(self, scene, frame):
        if scene.name == self.fail_scene:
            raise KeyboardInterrupt
        synthetic, view = frame.source
        rendering = render(synthetic)
        depth = np.round(rendering.depth_m[view] * 1000).astype(np.uint16)
        return RawFrame(rgb=rendering.rgb[view], K=synthetic.K[view], depth=depth, depth_scale=0.001)


OPTIONS = ClipOptions(clip_frames=4, clip_step=2)


def shard_bytes_by_name(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.tar"))}


def test_interrupted_run_resumes_after_its_last_complete_shard(tmp_path):
    reference = convert_dataset(MemoryScenes(4), tmp_path / "reference", OPTIONS, shard_bytes=1)
    assert (reference["shards"], reference["clips"]) == (4, 6)  # one scene per shard; scenes 0..3 give 1, 1, 2, 2 clips
    with pytest.raises(KeyboardInterrupt):
        convert_dataset(MemoryScenes(4, fail_scene="room2"), tmp_path / "out", OPTIONS, shard_bytes=1)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tar")) == ["memory-train-000000.tar", "memory-train-000001.tar"]
    first = (tmp_path / "out" / "memory-train-000000.tar").stat().st_mtime_ns
    summary = convert_dataset(MemoryScenes(4), tmp_path / "out", OPTIONS, shard_bytes=1)
    assert (summary["scenes_already_done"], summary["scenes_converted_now"], summary["shards_written_now"]) == (2, 2, 2)
    assert (tmp_path / "out" / "memory-train-000000.tar").stat().st_mtime_ns == first
    assert shard_bytes_by_name(tmp_path / "out") == shard_bytes_by_name(tmp_path / "reference")
    assert not (tmp_path / "out" / ".partial").exists()
    index = json.loads((tmp_path / "out" / "memory-train-index.json").read_text())
    assert index == json.loads((tmp_path / "reference" / "memory-train-index.json").read_text())
    assert index["total_clips"] == 6 and index["total_frames"] == 3 + 4 + 8 + 8


def test_new_scenes_go_into_new_shards_and_shards_close_at_scene_boundaries(tmp_path):
    convert_dataset(MemoryScenes(2), tmp_path / "out", OPTIONS)  # both scenes in one shard (default 1 GiB)
    before = (tmp_path / "out" / "memory-train-000000.tar").read_bytes()
    summary = convert_dataset(MemoryScenes(4), tmp_path / "out", OPTIONS)
    assert (summary["shards"], summary["shards_written_now"], summary["scenes"]) == (2, 1, 4)
    assert (tmp_path / "out" / "memory-train-000000.tar").read_bytes() == before
    scenes = [clip.meta.scene for clip in read_clips([str(tmp_path / "out" / "memory-train-000001.tar")])]
    assert scenes == ["room2", "room2", "room3", "room3"]


def test_workers_give_the_same_shards(tmp_path):
    convert_dataset(MemoryScenes(3), tmp_path / "one", OPTIONS)
    convert_dataset(MemoryScenes(3), tmp_path / "two", OPTIONS, workers=2)
    assert shard_bytes_by_name(tmp_path / "one") == shard_bytes_by_name(tmp_path / "two")


def test_other_options_or_a_lost_shard_are_refused(tmp_path):
    convert_dataset(MemoryScenes(1), tmp_path / "out", OPTIONS)
    with pytest.raises(OutputError, match="other options"):
        convert_dataset(MemoryScenes(1), tmp_path / "out", ClipOptions(clip_frames=3, clip_step=2))
    (tmp_path / "out" / "memory-train-000000.tar").unlink()
    with pytest.raises(OutputError, match="memory-train-000000.tar"):
        convert_dataset(MemoryScenes(1), tmp_path / "out", OPTIONS)


def test_scene_list_selects_scenes_and_names_unknown_ones(tmp_path):
    summary = convert_dataset(MemoryScenes(3), tmp_path / "out", OPTIONS, scene_names=["room1"])
    assert (summary["scenes_found"], summary["scenes"]) == (1, 1)
    with pytest.raises(RootError, match="room7"):
        convert_dataset(MemoryScenes(3), tmp_path / "other", OPTIONS, scene_names=["room7"])


def test_a_scene_with_too_few_frames_is_skipped_and_counted(tmp_path):
    summary = convert_dataset(MemoryScenes(1), tmp_path / "out", ClipOptions(frame_stride=3))  # 3 frames -> 1 keyframe
    assert summary["skipped"]["counts"] == {SKIP_TOO_FEW_FRAMES: 1} and summary["clips"] == 0
    assert summary["shards"] == 0 and not list((tmp_path / "out").glob("*.tar"))


@pytest.mark.parametrize("make, expected", [
    (ScanNet, "intrinsic_depth.txt"), (Co3Dv2, "frame_annotations.jgz"), (DL3DV, "transforms.json"),
], ids=["scannet", "co3dv2", "dl3dv"])
def test_a_root_that_is_not_the_dataset_says_what_was_expected(tmp_path, make, expected):
    (tmp_path / "something" / "else").mkdir(parents=True)
    for root in (tmp_path / "missing", tmp_path):
        with pytest.raises(RootError, match=expected):
            convert_dataset(make(root), tmp_path / "out", OPTIONS)
    assert not (tmp_path / "out").exists()


def test_co3dv2_unknown_category_lists_the_available_ones(tmp_path):
    (tmp_path / "apple").mkdir()
    (tmp_path / "apple" / "frame_annotations.jgz").write_bytes(b"")
    with pytest.raises(RootError, match=r"\['pear'\].*apple"):
        convert_dataset(Co3Dv2(tmp_path, ["pear"]), tmp_path / "out", OPTIONS)


def test_intrinsics_from_co3d_ndc_hand_computed():
    # 100 x 200 image; ndc_isotropic: s = 50 for both axes; cx = W/2 - px s - 0.5 (integer pixel centres)
    K = intrinsics_from_ndc(np.array([2.0, 2.5]), np.array([0.1, -0.2]), 100, 200, "ndc_isotropic")
    np.testing.assert_allclose(K, [[100.0, 0, 94.5], [0, 125.0, 59.5], [0, 0, 1]])
    # ndc_norm_image_bounds: s_x = W/2 = 100, s_y = H/2 = 50
    K = intrinsics_from_ndc(np.array([2.0, 2.5]), np.array([0.1, -0.2]), 100, 200, "ndc_norm_image_bounds")
    np.testing.assert_allclose(K, [[200.0, 0, 89.5], [0, 125.0, 59.5], [0, 0, 1]])
    with pytest.raises(ValueError, match="intrinsics_format"):
        intrinsics_from_ndc(np.ones(2), np.zeros(2), 100, 200, "screen")


def test_pytorch3d_camera_hand_computed():
    # R = I, T = (1, 2, 3): PyTorch3D camera point X + T with +x left, +y up, so OpenCV (-(x+1), -(y+2), z+3)
    camera_to_world = camera_to_world_from_pytorch3d(np.eye(3), np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(camera_to_world, [[-1, 0, 0, -1], [0, -1, 0, -2], [0, 0, 1, -3], [0, 0, 0, 1]], atol=1e-15)
    point_world = np.array([0.3, -0.7, 2.0])
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    translation = np.array([0.5, -1.0, 4.0])
    camera_p3d = point_world @ rotation + translation
    camera_to_world = camera_to_world_from_pytorch3d(rotation, translation)
    camera_cv = np.linalg.inv(camera_to_world) @ np.append(point_world, 1.0)
    np.testing.assert_allclose(camera_cv[:3], camera_p3d * [-1, -1, 1], atol=1e-12)


def test_dl3dv_camera_and_intrinsics_hand_computed():
    # an OpenGL camera looking down -z: OpenCV's forward (+z) is the OpenGL camera's -z
    camera_gl = np.eye(4)
    camera_gl[:3, 3] = (1.0, 2.0, 3.0)
    np.testing.assert_array_equal(camera_to_world_from_opengl(camera_gl),
                                  [[1, 0, 0, 1], [0, -1, 0, 2], [0, 0, -1, 3], [0, 0, 0, 1]])
    # intrinsics of a 400 x 300 image (corner origin) for the 100 x 75 stored image: x 0.25, then -0.5
    K = intrinsics_for_image({"w": 400, "h": 300, "fl_x": 300.0, "fl_y": 310.0, "cx": 200.0, "cy": 150.0}, 75, 100)
    np.testing.assert_allclose(K, [[75.0, 0, 49.5], [0, 77.5, 37.0], [0, 0, 1]])


def test_converter_commands_share_their_options():
    """`g2vlm shard scannet|co3dv2|dl3dv` take the shared options (convert.cli._add_conversion_options) plus their own; the frame stride default differs."""
    import argparse

    from g2vlm.datamodules.convert.cli import add_co3dv2, add_dl3dv, add_scannet

    subparsers = argparse.ArgumentParser().add_subparsers()
    for add_command in (add_scannet, add_co3dv2, add_dl3dv):
        add_command(subparsers)
    commands = subparsers.choices
    shared = {"-h", "--help", "--root", "--out", "--split", "--scene-list", "--frame-stride", "--clip-frames",
              "--clip-step", "--long-side", "--shard-size-mb", "--workers", "--no-progress"}
    own = {"scannet": set(), "co3dv2": {"--categories"}, "dl3dv": {"--images-dir"}}
    stride = {"scannet": 10, "co3dv2": 4, "dl3dv": 4}
    for name, extra in own.items():
        command = commands[name]
        assert {option for action in command._actions for option in action.option_strings} == shared | extra, name
        defaults = command.parse_args(["--root", "r", "--out", "o"])
        assert (defaults.frame_stride, defaults.clip_frames, defaults.clip_step, defaults.long_side,
                defaults.shard_size_mb, defaults.workers, defaults.split) == (stride[name], 24, 12, 640, 1024.0, 1, "train")
        assert f"(default {stride[name]})" in command.format_help()
