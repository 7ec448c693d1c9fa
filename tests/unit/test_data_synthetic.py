"""Synthetic scenes: depth lands on the analytic surfaces, views agree, determinism, shard round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from g2vlm.datamodules.shards.decoding import decode_depth_png
from g2vlm.datamodules.shards.reader import iter_clip_records
from g2vlm.datamodules.shards.schema import frame_member
from g2vlm.datamodules.shards.skip_log import SkipLog
from g2vlm.datamodules.shards.writer import ShardWriter
from g2vlm.datamodules.synthetic.render import FIRST_OBJECT, cast_rays, render
from g2vlm.datamodules.synthetic.scene import COLOURS, sample_scene
from g2vlm.datamodules.synthetic.shards import DEPTH_SCALE_M, render_clip
from g2vlm.geometry.camera import project_points, unproject_depth

SURFACE_TOLERANCE_M = 1e-4


def signed_distance(obj, points: np.ndarray) -> np.ndarray:
    """Signed distance-like function of an object, zero exactly on its surface, negative inside."""
    local = points - obj.center
    if obj.kind == "sphere":
        return np.linalg.norm(local, axis=-1) - obj.radius
    if obj.kind == "cylinder":
        radial = np.hypot(local[:, 0], local[:, 1]) - obj.radius
        return np.maximum(radial, np.abs(local[:, 2]) - obj.size[2] / 2)
    cos, sin = np.cos(obj.yaw), np.sin(obj.yaw)
    box = np.stack([cos * local[:, 0] + sin * local[:, 1], -sin * local[:, 0] + cos * local[:, 1], local[:, 2]], -1)
    return (np.abs(box) - obj.size / 2).max(axis=-1)


def room_distance(room: np.ndarray, surface: np.ndarray, points: np.ndarray) -> np.ndarray:
    planes = [(2, 0.0), (2, room[2]), (0, 0.0), (0, room[0]), (1, 0.0), (1, room[1])]
    distance = np.full(len(points), np.inf)
    for surface_id, (axis, value) in enumerate(planes):
        mine = surface == surface_id
        distance[mine] = np.abs(points[mine, axis] - value)
    return distance


@pytest.mark.parametrize("scene_index", [0, 1, 2])
def test_unprojected_depth_lies_on_the_analytic_surfaces(scene_index):
    scene = sample_scene(seed=3, scene_index=scene_index, views=3, height=24, width=32)
    rendering = render(scene)
    points = unproject_depth(
        torch.from_numpy(rendering.depth_m), torch.from_numpy(scene.K), torch.from_numpy(scene.camera_to_world)
    ).reshape(-1, 3).numpy()
    surface = rendering.surface_id.reshape(-1)
    error = room_distance(scene.room_size, surface, points)
    for index, obj in enumerate(scene.objects):
        mine = surface == FIRST_OBJECT + index
        error[mine] = np.abs(signed_distance(obj, points[mine]))
    assert np.all(np.isfinite(rendering.depth_m)) and rendering.depth_m.min() > 0
    assert error.max() < SURFACE_TOLERANCE_M
    # nothing seen lies inside another object or outside the room (a missed occluder would)
    for obj in scene.objects:
        assert signed_distance(obj, points).min() > -SURFACE_TOLERANCE_M
    assert points.min() > -SURFACE_TOLERANCE_M and np.all(points < scene.room_size + SURFACE_TOLERANCE_M)
    assert len(np.unique(surface)) >= 4  # several surfaces are visible: the test is not vacuous


def test_a_point_seen_in_one_view_agrees_with_the_other_view():
    scene = sample_scene(seed=5, scene_index=0, views=2, height=32, width=40)
    rendering = render(scene)
    K = torch.from_numpy(scene.K)
    camera_to_world = torch.from_numpy(scene.camera_to_world)
    points = unproject_depth(torch.from_numpy(rendering.depth_m[0]), K[0], camera_to_world[0]).reshape(-1, 3)
    uv, z = project_points(points, K[1], camera_to_world[1])
    inside = (z > 0) & (uv[:, 0] >= -0.5) & (uv[:, 0] <= 39.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= 31.5)
    assert inside.float().mean() > 0.3
    # cast view 1's ray through the (sub-pixel) projection: it must stop at the point unless something occludes it
    pixels = torch.cat([uv[inside], torch.ones(int(inside.sum()), 1, dtype=uv.dtype)], dim=1).numpy()
    directions = pixels @ np.linalg.inv(scene.K[1]).T @ scene.camera_to_world[1, :3, :3].T
    t, _ = cast_rays(scene, scene.camera_to_world[1, :3, 3], directions)
    z_seen = z[inside].numpy()
    assert np.all(t <= z_seen + SURFACE_TOLERANCE_M)  # never sees through the surface
    agree = np.abs(t - z_seen) < SURFACE_TOLERANCE_M
    assert agree.mean() > 0.7


def test_scenes_are_deterministic_by_seed_and_carry_annotations():
    key, meta, frames = render_clip(7, seed=11, views=3, height=16, width=20)
    key_again, meta_again, frames_again = render_clip(7, seed=11, views=3, height=16, width=20)
    assert key == key_again and "." not in key
    assert meta == meta_again and frames == frames_again
    _, other_meta, _ = render_clip(8, seed=11, views=3, height=16, width=20)
    assert other_meta["camera_to_world"] != meta["camera_to_world"]
    assert 3 <= len(meta["objects"]) <= 10
    for obj in meta["objects"]:
        assert obj["class"] in ("box", "sphere", "cylinder") and obj["colour"] in COLOURS
        assert len(obj["center"]) == 3 and len(obj["size"]) == 3 and min(obj["size"]) > 0
    assert meta["K"][0][0][2] == pytest.approx((20 - 1) / 2)


def test_synthetic_shard_round_trip_is_bit_exact(tmp_path):
    key, meta, frames = render_clip(0, seed=2, views=3, height=16, width=20)
    scene = sample_scene(2, 0, 3, 16, 20)
    expected_units = np.round(render(scene).depth_m / DEPTH_SCALE_M).astype(np.uint16)
    with ShardWriter(tmp_path, "synthetic-test") as writer:
        writer.write(key, meta, frames)
    skips = SkipLog()
    (record,) = list(iter_clip_records([str(tmp_path / "synthetic-test-000000.tar")], skips))
    assert not skips.counts
    for index in range(3):
        units = decode_depth_png(record.members[frame_member(index, "depth.png")])
        np.testing.assert_array_equal(units, expected_units[index])
    clip = record.decode()
    np.testing.assert_array_equal(clip.depth_m, expected_units.astype(np.float32) * np.float32(DEPTH_SCALE_M))
    np.testing.assert_array_equal(clip.K, scene.K)
    np.testing.assert_array_equal(clip.camera_to_world, scene.camera_to_world)
    assert np.abs(clip.depth_m - render(scene).depth_m).max() <= DEPTH_SCALE_M / 2 + 1e-6


def test_level_cameras_stand_at_the_height_and_look_horizontally():
    free = sample_scene(4, 1, views=3, height=24, width=32)
    level = sample_scene(4, 1, views=3, height=24, width=32, level_camera_height_m=1.5)
    assert not np.allclose(free.camera_to_world[:, 2, 2], 0)  # the free cameras pitch: the check below can fail
    np.testing.assert_allclose(level.camera_to_world[:, 2, 3], 1.5)
    # x right and z forward are horizontal, y down points straight down: no pitch and no roll
    np.testing.assert_allclose(level.camera_to_world[:, 2, :3], np.tile([0.0, -1.0, 0.0], (3, 1)), atol=1e-12)
    # the same room and objects (drawn before the cameras)
    np.testing.assert_array_equal(level.room_size, free.room_size)
    assert [o.annotation() for o in level.objects] == [o.annotation() for o in free.objects]
    # a floor point at depth d images (f * height / d) rows below the principal point: the horizon law
    rendering = render(level)
    depth, floor = rendering.depth_m[0], rendering.surface_id[0] == 0
    rows = np.nonzero(floor)[0]
    np.testing.assert_allclose(depth[floor], level.K[0, 1, 1] * 1.5 / (rows - level.K[0, 1, 2]), rtol=1e-9)
    with pytest.raises(ValueError, match="outside"):
        sample_scene(4, 1, views=3, height=24, width=32, level_camera_height_m=2.5)
