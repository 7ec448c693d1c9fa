"""One shard holding every kind of bad sample: the loaders keep going and count each skip by reason."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter

import numpy as np
import pytest
from g2vlm.datamodules.clip_streams import BatchRecipe, TrainClipBatches, ValClipBatches
from g2vlm.datamodules.decoding import encode_depth_npy
from g2vlm.datamodules.synthetic.shards import render_clip

VIEWS, HEIGHT, WIDTH = 3, 16, 20


def clip_members(index: int) -> tuple[str, dict[str, bytes]]:
    """A valid synthetic clip as tar members: key and {suffix: bytes}."""
    key, meta, frames = render_clip(index, seed=9, views=VIEWS, height=HEIGHT, width=WIDTH)
    members = {"meta.json": json.dumps(meta).encode()}
    for frame_index, frame in enumerate(frames):
        for suffix, data in frame.items():
            members[f"{frame_index:03d}.{suffix}"] = data
    return key, members


def with_meta(members: dict[str, bytes], **changes) -> dict[str, bytes]:
    meta = json.loads(members["meta.json"])
    meta.update(changes)
    return {**members, "meta.json": json.dumps(meta).encode()}


def float_depth_members(members: dict[str, bytes], bad_value: float) -> dict[str, bytes]:
    """Replace every depth PNG by a float32 .npy depth map containing one bad value."""
    out = {name: data for name, data in members.items() if not name.endswith("depth.png")}
    for frame_index in range(VIEWS):
        depth = np.full((HEIGHT, WIDTH), 1000.0, np.float32)
        depth[3, 4] = bad_value
        out[f"{frame_index:03d}.depth.npy"] = encode_depth_npy(depth)
    return out


@pytest.fixture(scope="module")
def bad_shard(tmp_path_factory) -> str:
    samples = []
    key, members = clip_members(0)
    samples.append(("good_first", members))
    _, members = clip_members(1)
    samples.append(("missing_frame", {name: data for name, data in members.items() if name != "001.jpg"}))
    _, members = clip_members(2)
    samples.append(("nan_depth", float_depth_members(members, float("nan"))))
    _, members = clip_members(3)
    samples.append(("negative_depth", float_depth_members(members, -2.0)))
    _, members = clip_members(4)
    pose = json.loads(members["meta.json"])["camera_to_world"]
    pose[1][0][3] = float("inf")
    samples.append(("nonfinite_pose", with_meta(members, camera_to_world=pose)))
    _, members = clip_members(5)
    pose = json.loads(members["meta.json"])["camera_to_world"]
    pose[0][0][0] *= 1.5  # a scaled axis: not a rotation
    samples.append(("nonrigid_pose", with_meta(members, camera_to_world=pose)))
    _, members = clip_members(6)
    meta = json.loads(members["meta.json"])
    del meta["depth_scale"]
    samples.append(("schema", {**members, "meta.json": json.dumps(meta).encode()}))
    _, members = clip_members(7)
    samples.append(("corrupt_jpeg", {**members, **{f"{i:03d}.jpg": b"\xff\xd8 broken" for i in range(VIEWS)}}))
    _, members = clip_members(8)
    samples.append(("good_last", members))
    _, members = clip_members(9)
    samples.append(("truncated", members))

    path = tmp_path_factory.mktemp("bad") / "bad-000000.tar"
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for suffix, data in members.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    with open(path, "r+b") as handle:  # cut the last member in half, as an interrupted copy would
        handle.truncate(last.offset_data + last.size // 2)
    return str(path)


EXPECTED_SKIPS = {"missing_frame": 1, "bad_depth": 2, "bad_pose": 2, "schema": 1, "decode": 1, "truncated": 1}


def recipe() -> BatchRecipe:
    return BatchRecipe(image_size=(16, 16), size_multiple=8, views_min=2, views_max=3, val_views=2, image_budget=4)


def test_validation_pass_skips_and_counts_every_bad_case(bad_shard):
    batches = list(ValClipBatches([bad_shard], recipe()))
    keys = [key for batch in batches for key in batch.keys]
    assert keys == ["good_first", "good_last"]
    skipped = Counter()
    for batch in batches:
        skipped.update(batch.skipped)
    assert dict(skipped) == EXPECTED_SKIPS


def test_training_stream_keeps_going_over_a_bad_shard(bad_shard):
    stream = TrainClipBatches([[bad_shard]], None, recipe(), batches_per_epoch=4, seed=1, shuffle_buffer=2)
    batches = list(stream)
    assert len(batches) == 4
    assert {key for batch in batches for key in batch.keys} <= {"good_first", "good_last"}
    skipped = Counter()
    for batch in batches:
        skipped.update(batch.skipped)
    assert set(skipped) == set(EXPECTED_SKIPS)  # every reason was met and counted on the way


def test_a_shard_set_with_no_valid_clip_stops_with_a_clear_error(tmp_path):
    path = tmp_path / "empty-000000.tar"
    with tarfile.open(path, "w") as tar:
        data = b"{}"
        info = tarfile.TarInfo("nothing.meta.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    stream = TrainClipBatches([[str(path)]], None, recipe(), batches_per_epoch=1)
    with pytest.raises(RuntimeError, match="gave no valid clip"):
        next(iter(stream))


@pytest.mark.parametrize("cut", ["member_boundary", "inside_header"])
def test_a_shard_cut_between_members_is_truncated_not_a_short_clip(tmp_path, cut):
    path = tmp_path / "cut-000000.tar"
    with tarfile.open(path, "w") as tar:
        for index in range(2):
            key, members = clip_members(index)
            for suffix, data in members.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:
        second_clip_frame = tar.getmembers()[len(clip_members(0)[1]) + 2]  # a frame member of the second clip
    with open(path, "r+b") as handle:
        handle.truncate(second_clip_frame.offset + (0 if cut == "member_boundary" else 100))
    batches = list(ValClipBatches([str(path)], recipe()))
    assert [key for batch in batches for key in batch.keys] == [clip_members(0)[0]]
    skipped = Counter()
    for batch in batches:
        skipped.update(batch.skipped)
    assert dict(skipped) == {"truncated": 1}
