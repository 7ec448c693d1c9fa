"""Clip schema validation, key sanitising, codecs and the shard writer (rolling, index, validation)."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from g2vlm.datamodules.shards.decoding import (
    decode_depth_npy,
    decode_depth_png,
    decode_jpeg,
    depth_to_metres,
    encode_depth_npy,
    encode_depth_png,
    encode_jpeg,
)
from g2vlm.datamodules.shards.reader import read_clips
from g2vlm.datamodules.shards.schema import (
    ClipMeta,
    SampleError,
    clip_key,
    sanitize_key,
    validate_meta,
)
from g2vlm.datamodules.shards.skip_log import SkipLog
from g2vlm.datamodules.shards.tar_reader import split_member_name
from g2vlm.datamodules.shards.writer import ShardWriter, read_index


def make_meta(shape: tuple[int, int, int] = (2, 12, 16), **overrides) -> dict:
    """A valid meta record for `shape` = (frames, height, width), with fields replaced by `overrides`."""
    frames, height, width = shape
    K = np.array([[20.0, 0.0, (width - 1) / 2], [0.0, 21.0, (height - 1) / 2], [0.0, 0.0, 1.0]])
    camera_to_world = np.tile(np.eye(4), (frames, 1, 1))
    camera_to_world[:, 0, 3] = np.arange(frames) * 0.1
    record = ClipMeta(
        dataset="toy", scene="room.1", frame_ids=list(range(10, 10 + frames)), width=width, height=height,
        K=np.tile(K, (frames, 1, 1)), camera_to_world=camera_to_world, depth_scale=0.001, depth_is_metric=True,
        has_depth=True,
    ).to_json()
    record.update(overrides)
    return record


def make_frames(frames: int = 2, height: int = 12, width: int = 16, seed: int = 0) -> tuple[list[dict], np.ndarray]:
    rng = np.random.default_rng(seed)
    depth_units = rng.integers(0, 65536, (frames, height, width)).astype(np.uint16)
    rgb = rng.integers(0, 256, (frames, height, width, 3)).astype(np.uint8)
    return [{"jpg": encode_jpeg(rgb[i]), "depth.png": encode_depth_png(depth_units[i])} for i in range(frames)], depth_units


def test_sanitize_key_removes_dots_and_slashes():
    assert sanitize_key("47333851_74735.839") == "47333851_74735_839"
    assert clip_key("arkit.scenes", "a/b.c", 7) == "arkit_scenes__a_b_c__clip00007"
    assert "." not in clip_key("x", "y.z", 0)


def test_split_member_name_uses_first_dot_of_basename():
    assert split_member_name("dir.v1/clip.007.depth.png") == ("dir.v1/clip", "007.depth.png")
    assert split_member_name("clip.META.JSON") == ("clip", "meta.json")


def test_valid_meta_round_trips_through_json():
    record = make_meta()
    meta = validate_meta(json.loads(json.dumps(record)))
    assert meta.num_frames == 2 and meta.scene == "room.1"
    np.testing.assert_array_equal(meta.K, np.asarray(record["K"]))
    np.testing.assert_array_equal(meta.camera_to_world, np.asarray(record["camera_to_world"]))


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"K": [[[1.0, 0, 0], [0, 1, 0], [0, 0, 1]]]}, "'K'", "schema"),  # wrong number of frames
        ({"width": "16"}, "'width'", "schema"),
        ({"depth_scale": -1.0}, "'depth_scale'", "schema"),
        ({"has_depth": 1}, "'has_depth'", "schema"),
        ({"frame_ids": []}, "'frame_ids'", "schema"),
        ({"camera_convention": "opengl_c2w"}, "'camera_convention'", "schema"),
        ({"z_far": 0}, "'z_far'", "schema"),
        ({"K": [[[20.0, 0, 7.5], [0, float("inf"), 5.5], [0, 0, 1]]] * 2}, "'K' has non-finite", "schema"),
        ({"K": [[[20.0, 0, 7.5], [0, 21.0, 5.5], [0, 0, 1]], [[20.0, 0, 7.5], [0, 0.0, 5.5], [0, 0, 1]]]},
         "'K' has a non-positive focal", "schema"),
        ({"K": [[[20.0, 0, 7.5], [0, 21.0, 5.5], [0, 0, 1]], [[20.0, 0, 7.5], [0.1, 21.0, 5.5], [0, 0, 1]]]},
         "'K' is not an upper-triangular", "schema"),
        ({"K": [[[20.0, 0, 7.5], [0, 21.0, 5.5], [0, 0, 2]]] * 2}, "'K' is not an upper-triangular", "schema"),
        ({"camera_to_world": [np.diag([2.0, 1, 1, 1]).tolist()] * 2}, "'camera_to_world'", "bad_pose"),
        ({"camera_to_world": [np.diag([1.0, 1, -1, 1]).tolist()] * 2}, "'camera_to_world'", "bad_pose"),
        ({"camera_to_world": [[[float("nan")] * 4] * 4] * 2}, "'camera_to_world'", "bad_pose"),
    ],
)
def test_invalid_meta_names_the_field(change, field, reason):
    with pytest.raises(SampleError) as caught:
        validate_meta(make_meta(**change), "clip.meta.json")
    assert field in str(caught.value) and "clip.meta.json" in str(caught.value)
    assert caught.value.reason == reason


def test_missing_field_is_named():
    record = make_meta()
    del record["depth_is_metric"]
    with pytest.raises(SampleError, match="missing field 'depth_is_metric'"):
        validate_meta(record)


def test_depth_png_is_bit_exact_over_the_full_uint16_range():
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    decoded = decode_depth_png(encode_depth_png(values))
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, values)


def test_eight_bit_depth_png_is_refused():
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4), 7, np.uint8), mode="L").save(buffer, format="PNG")
    with pytest.raises(SampleError) as caught:
        decode_depth_png(buffer.getvalue(), "k.000.depth.png")
    assert caught.value.reason == "bad_depth" and "k.000.depth.png" in str(caught.value)


def test_float_depth_with_nan_or_negative_values_is_bad_depth():
    for bad in (np.nan, -0.5, np.inf):
        depth = np.ones((3, 3), np.float32)
        depth[1, 1] = bad
        with pytest.raises(SampleError) as caught:
            depth_to_metres(decode_depth_npy(encode_depth_npy(depth)), 1.0)
        assert caught.value.reason == "bad_depth"


def test_jpeg_decodes_to_rgb_uint8():
    rgb = np.full((8, 10, 3), (200, 30, 90), np.uint8)
    decoded = decode_jpeg(encode_jpeg(rgb, quality=95))
    assert decoded.shape == (8, 10, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - rgb).max() <= 3
    with pytest.raises(SampleError) as caught:
        decode_jpeg(b"not a jpeg")
    assert caught.value.reason == "decode"


def test_writer_rolls_shards_by_size_and_writes_the_index(tmp_path):
    frames, _ = make_frames()
    with ShardWriter(tmp_path, "toy-train", max_shard_bytes=3 * 4096) as writer:
        for index in range(5):
            writer.write(clip_key("toy", "room", index), make_meta(), frames)
    index = read_index(tmp_path / "toy-train-index.json")
    assert index["total_clips"] == 5 and index["total_frames"] == 10
    assert len(index["shards"]) > 1
    assert sum(shard["clips"] for shard in index["shards"]) == 5
    for shard in index["shards"]:
        path = tmp_path / shard["name"]
        assert path.stat().st_size == shard["bytes"]
        with tarfile.open(path) as tar:
            names = tar.getnames()
        assert len(names) == shard["clips"] * 5  # meta + 2 x (jpg, depth.png)
        keys = [split_member_name(name)[0] for name in names]
        # members of one sample are contiguous
        assert [key for i, key in enumerate(keys) if i == 0 or keys[i - 1] != key] == sorted(set(keys))


def test_writer_validates_samples(tmp_path):
    frames, _ = make_frames()
    with ShardWriter(tmp_path, "toy-train") as writer:
        with pytest.raises(ValueError, match="not sanitised"):
            writer.write("toy.room", make_meta(), frames)
        with pytest.raises(SampleError, match="'K'"):
            writer.write("toy__room", make_meta(K=[[1.0]]), frames)
        with pytest.raises(SampleError, match="frame 1 needs exactly one of depth.png/depth.npy"):
            writer.write("toy__room", make_meta(), [frames[0], {"jpg": frames[1]["jpg"]}])
        small, _ = make_frames(height=6)
        with pytest.raises(SampleError, match="differs from meta 'width' x 'height'"):
            writer.write("toy__room", make_meta(), small)
        eight_bit = io.BytesIO()
        Image.fromarray(np.zeros((12, 16), np.uint8), mode="L").save(eight_bit, format="PNG")
        with pytest.raises(SampleError, match="expected 16-bit"):
            writer.write("toy__room", make_meta(), [frames[0], {"jpg": frames[1]["jpg"], "depth.png": eight_bit.getvalue()}])
        writer.write("toy__room", make_meta(), frames)
    assert read_index(tmp_path / "toy-train-index.json")["total_clips"] == 1


def test_write_read_round_trip_is_bit_exact(tmp_path):
    frames, depth_units = make_frames(frames=3, seed=4)
    record = make_meta((3, 12, 16), z_far=20.0)
    with ShardWriter(tmp_path, "toy-val") as writer:
        writer.write("toy__room__clip00000", record, frames)
    skips = SkipLog()
    (clip,) = list(read_clips([str(tmp_path / "toy-val-000000.tar")], skips))
    assert not skips.counts
    np.testing.assert_array_equal(clip.depth_m, depth_units.astype(np.float32) * np.float32(0.001))
    np.testing.assert_array_equal(clip.K, np.asarray(record["K"]))
    np.testing.assert_array_equal(clip.camera_to_world, np.asarray(record["camera_to_world"]))
    assert clip.meta.frame_ids == [10, 11, 12] and clip.meta.z_far == 20.0
