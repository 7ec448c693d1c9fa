"""Bad data: one shard holding every kind of bad sample (the loaders keep going and count each skip by reason), data
that yields nothing (a clear error, never an endless loop), sizes a meta.json only claims, missing shard files and a
validation set with nothing in it."""

from __future__ import annotations

import json
import logging
import signal
import tarfile
import time
from collections import Counter
from contextlib import contextmanager

import numpy as np
import pytest

from g2vlm.datamodules.multiview.datamodule import MultiViewDataModule
from g2vlm.datamodules.multiview.streams import BatchRecipe, TrainClipBatches, ValClipBatches
from g2vlm.datamodules.shards.decoding import encode_depth_npy
from g2vlm.datamodules.shards.reader import iter_clip_records
from g2vlm.datamodules.shards.schema import DataError
from g2vlm.datamodules.shards.skip_log import SkipLog
from tests.fixtures.bad_clips import clip_members as render_members
from tests.fixtures.bad_clips import eight_bit_depth, with_meta, write_tar

VIEWS, HEIGHT, WIDTH = 3, 16, 20


def clip_members(index: int) -> tuple[str, dict[str, bytes]]:
    """A valid synthetic clip as tar members: key and {suffix: bytes}."""
    return render_members(index, VIEWS, HEIGHT, WIDTH)


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

    path = write_tar(tmp_path_factory.mktemp("bad") / "bad-000000.tar", samples)
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
    path = write_tar(tmp_path / "empty-000000.tar", [("nothing", {"meta.json": b"{}"})])
    stream = TrainClipBatches([[str(path)]], None, recipe(), batches_per_epoch=1)
    with pytest.raises(DataError, match="TrainClipBatches: 200 shard draws in a row gave no valid sample"):
        next(iter(stream))


@pytest.mark.parametrize("cut", ["member_boundary", "inside_header"])
def test_a_shard_cut_between_members_is_truncated_not_a_short_clip(tmp_path, cut):
    path = write_tar(tmp_path / "cut-000000.tar", [clip_members(index) for index in range(2)])
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


class StillRunning(BaseException):
    """Not an Exception: the readers' own error handling (which counts an OSError as a truncated shard) cannot
    swallow it."""


@contextmanager
def fails_after(seconds: int):
    """Raise StillRunning in the test if the block is still running after `seconds` (an endless loop fails)."""
    def expire(signum, frame):
        raise StillRunning(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_clips_that_all_fail_to_decode_stop_the_training_stream_with_the_shards_and_counts(tmp_path):
    """Every clip reads and validates, but every depth PNG is 8-bit: each clip fails only when decoded."""
    shards = [str(write_tar(tmp_path / f"depth8-{number:06d}.tar",
                            [(key, eight_bit_depth(members)) for key, members in map(clip_members, range(4))]))
              for number in range(2)]
    stream = TrainClipBatches([shards], None, recipe(), batches_per_epoch=1)
    start = time.perf_counter()
    with fails_after(60), pytest.raises(DataError) as raised:
        next(iter(stream))
    assert time.perf_counter() - start < 60
    message = str(raised.value)
    assert "1000 samples in a row were skipped" in message and shards[0] in message and shards[1] in message
    assert "'bad_depth': 1000" in message and "mode 'L'" in message


@pytest.mark.parametrize("claimed", [(100_000, 100_000), (30_000, 30_000)])
def test_a_meta_claiming_a_huge_size_is_skipped_and_counted_not_allocated(tmp_path, claimed):
    width, height = claimed
    samples = [clip_members(0), *[(key, with_meta(members, width=width, height=height))
                                  for key, members in map(clip_members, range(1, 4))], clip_members(4)]
    path = str(write_tar(tmp_path / "huge-000000.tar", samples))
    batches = list(ValClipBatches([path], recipe()))
    assert [key for batch in batches for key in batch.keys] == [samples[0][0], samples[4][0]]
    assert sum((Counter(batch.skipped) for batch in batches), Counter()) == {"schema": 3}
    train = list(TrainClipBatches([[path]], None, recipe(), batches_per_epoch=3, shuffle_buffer=2))
    assert len(train) == 3 and {key for batch in train for key in batch.keys} <= {samples[0][0], samples[4][0]}


def test_a_meta_size_that_disagrees_with_its_images_is_caught_before_decoding(tmp_path):
    key, members = clip_members(0)
    path = str(write_tar(tmp_path / "lying-000000.tar", [(key, with_meta(members, width=4000, height=3000))]))
    skips = SkipLog()
    assert list(iter_clip_records([path], skips)) == []  # refused while reading, before any frame is allocated
    assert skips.counts == {"decode": 1}


def test_a_missing_shard_file_is_reported_at_once_as_not_found(tmp_path):
    real = write_tar(tmp_path / "real-000000.tar", [clip_members(0)])
    typo = str(tmp_path / "raal-000000.tar")
    for shards in ([typo], [f"{tmp_path}/real-{{000000..000001}}.tar"]):
        data = MultiViewDataModule(train_shards=shards, val_shards=shards, num_workers=0)
        with pytest.raises(FileNotFoundError, match="not found"):
            data.train_dataset()
        with pytest.raises(FileNotFoundError, match="not found"):
            data.val_dataset()
    MultiViewDataModule(train_shards=[str(real)], num_workers=0).train_dataset()  # an existing one is fine


def test_a_validation_set_that_yields_nothing_says_so(tmp_path, caplog):
    path = str(write_tar(tmp_path / "val-000000.tar",
                         [(key, eight_bit_depth(members)) for key, members in map(clip_members, range(3))]))
    with caplog.at_level(logging.WARNING, logger="g2vlm.datamodules"):
        assert list(ValClipBatches([path], recipe())) == []
    warnings = [record.getMessage() for record in caplog.records if "gave no valid clip" in record.getMessage()]
    assert len(warnings) == 1 and path in warnings[0] and "'bad_depth': 3" in warnings[0]


@pytest.mark.parametrize(("shards", "world_size", "workers", "refused"), [
    (3, 2, 2, True),  # rank 1 gets one shard: one of its two workers has none, its batch count differs
    (1, 2, 0, True),  # rank 1 gets no shard at all: no validation batch, the other rank waits for it
    (4, 2, 2, False),
    (1, 1, 2, False),  # one process: an idle worker stalls nobody
])
def test_too_few_validation_shards_for_the_ranks_are_refused_at_setup(tmp_path, shards, world_size, workers, refused):
    """Under FSDP a rank with fewer (or no) validation batches leaves the others waiting in their collectives: the
    run would hang at the first validation, so setup refuses it, naming the shard count and ranks x workers."""
    from types import SimpleNamespace

    for number in range(shards):
        write_tar(tmp_path / f"val-{number:06d}.tar", [clip_members(number)])
    data = MultiViewDataModule(val_shards=[str(tmp_path / "val-*.tar")], num_workers=workers)
    data.trainer = SimpleNamespace(global_rank=world_size - 1, world_size=world_size, limit_val_batches=1.0)
    if not refused:
        data.setup("fit")
        return
    slots = world_size * max(1, workers)
    with pytest.raises(ValueError, match=f"MultiViewDataModule val_shards: {shards} validation shards for {world_size} "
                                         f"ranks x {max(1, workers)} workers = {slots} loader slots"):
        data.setup("fit")


def test_a_run_without_validation_does_not_check_validation_shards(tmp_path):
    """limit_val_batches 0: no validation loader is ever built, so one shard for two ranks, or a missing pattern,
    does not stop training; with validation on, both are refused at setup."""
    from types import SimpleNamespace

    write_tar(tmp_path / "val-000000.tar", [clip_members(0)])
    for patterns in ([str(tmp_path / "val-*.tar")], [str(tmp_path / "absent-*.tar")]):
        data = MultiViewDataModule(val_shards=patterns, num_workers=1)
        data.trainer = SimpleNamespace(global_rank=1, world_size=2, limit_val_batches=0)
        data.setup("fit")
        data.trainer = SimpleNamespace(global_rank=1, world_size=2, limit_val_batches=1.0)
        with pytest.raises((ValueError, FileNotFoundError)):
            data.setup("fit")
