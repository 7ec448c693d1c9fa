"""Clip streams: validity from masks and z_far, clips without depth, mixing weights, budget sizes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from g2vlm.datamodules.multiview.streams import BatchRecipe, TrainClipBatches, ValClipBatches
from g2vlm.datamodules.shards.decoding import encode_depth_png, encode_jpeg, encode_mask_png
from g2vlm.datamodules.shards.schema import ClipMeta, clip_key
from g2vlm.datamodules.shards.writer import ShardWriter

FRAMES, HEIGHT, WIDTH = 3, 16, 16


def write_clips(out, prefix: str, dataset: str, count: int, has_depth: bool = True, with_mask: bool = False,
                z_far: float | None = None) -> str:
    rng = np.random.default_rng(len(prefix))
    K = np.array([[20.0, 0.0, 7.5], [0.0, 20.0, 7.5], [0.0, 0.0, 1.0]])
    with ShardWriter(out, prefix) as writer:
        for index in range(count):
            meta = ClipMeta(
                dataset=dataset, scene=f"s{index}", frame_ids=list(range(FRAMES)), width=WIDTH, height=HEIGHT,
                K=np.tile(K, (FRAMES, 1, 1)), camera_to_world=np.tile(np.eye(4), (FRAMES, 1, 1)), depth_scale=0.001,
                depth_is_metric=True, has_depth=has_depth, z_far=z_far,
            )
            frames = []
            for _ in range(FRAMES):
                frame = {"jpg": encode_jpeg(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))}
                if has_depth:
                    depth_mm = np.tile(np.arange(WIDTH, dtype=np.uint16) * 500, (HEIGHT, 1))  # 0 m .. 7.5 m by column
                    frame["depth.png"] = encode_depth_png(depth_mm)
                if with_mask:
                    mask = np.ones((HEIGHT, WIDTH), bool)
                    mask[:4] = False  # top rows masked out
                    frame["mask.png"] = encode_mask_png(mask)
                frames.append(frame)
            writer.write(clip_key(dataset, f"s{index}", 0), meta, frames)
    return str(out / f"{prefix}-000000.tar")


def recipe(**changes) -> BatchRecipe:
    args = {"image_size": (HEIGHT, WIDTH), "size_multiple": 4, "views_min": 2, "views_max": 3, "val_views": 3,
            "image_budget": 6, "crop_scale_range": (1.0, 1.0)}
    args.update(changes)
    return BatchRecipe(**args)


def test_valid_combines_depth_mask_and_z_far(tmp_path):
    shard = write_clips(tmp_path, "masked", "toy", 2, with_mask=True, z_far=5.0)
    (batch,) = list(ValClipBatches([shard], recipe()))
    column_depth = torch.arange(WIDTH, dtype=torch.float32) * 0.5
    expected_valid = (column_depth > 0) & (column_depth < 5.0)
    expected = expected_valid.expand(HEIGHT, WIDTH).clone()
    expected[:4] = False
    assert torch.equal(batch.valid[0, 0], expected)
    assert torch.all(batch.depth_m[~batch.valid] == 0)
    torch.testing.assert_close(batch.depth_m[0, 0][expected], column_depth.expand(HEIGHT, WIDTH)[expected])


def test_clips_without_depth_have_no_valid_pixels(tmp_path):
    shard = write_clips(tmp_path, "rgb", "rgbonly", 2, has_depth=False)
    (batch,) = list(ValClipBatches([shard], recipe()))
    assert not batch.has_depth.any() and not batch.valid.any() and torch.all(batch.depth_m == 0)


def test_mixing_weights_set_the_dataset_proportions(tmp_path):
    first = write_clips(tmp_path, "a", "alpha", 4)
    second = write_clips(tmp_path, "b", "beta", 4)
    stream = TrainClipBatches([[first], [second]], [0.8, 0.2], recipe(views_min=2, views_max=2), batches_per_epoch=100,
                              shuffle_buffer=1)
    names = Counter(name for batch in stream for name in batch.dataset_names)
    share = names["alpha"] / sum(names.values())
    assert 0.72 < share < 0.88  # 300 draws at p = 0.8: about 5 standard deviations wide


@pytest.mark.parametrize("aspect", [0.5, 1.0, 1.7])
def test_training_size_keeps_the_pixel_budget(aspect):
    height, width = BatchRecipe(image_size=(224, 224), size_multiple=14).training_size(aspect)
    assert height % 14 == 0 and width % 14 == 0
    assert abs(width / height - aspect) / aspect < 0.15
    assert abs(height * width - 224 * 224) / (224 * 224) < 0.15


def test_device_hook_makes_float_images_and_jitters_per_rank_reproducibly():
    from types import SimpleNamespace

    from g2vlm.datamodules.multiview.batch import MultiViewBatch
    from g2vlm.datamodules.multiview.datamodule import MultiViewDataModule

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 3, 8, 8), dtype=torch.uint8, generator=generator)
    batch = MultiViewBatch(images=images, depth=torch.ones(2, 3, 8, 8, dtype=torch.uint16), depth_scale=torch.ones(2),
                           K=torch.eye(3).expand(2, 3, 3, 3), camera_to_world=torch.eye(4).expand(2, 3, 4, 4),
                           has_depth=torch.ones(2, dtype=torch.bool), dataset_names=["a", "a"], keys=["k0", "k1"],
                           frame_ids=[[0, 1, 2]] * 2)

    def hooked(rank: int, training: bool) -> torch.Tensor:
        dm = MultiViewDataModule(train_shards=["unused.tar"], seed=5)
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2, training=training)
        dm.setup("fit")
        return dm.on_after_batch_transfer(batch, 0).images

    plain = hooked(0, training=False)
    torch.testing.assert_close(plain, images.float() / 255)  # validation: conversion only
    state = torch.random.get_rng_state()
    rank0, rank0_again, rank1 = hooked(0, True), hooked(0, True), hooked(1, True)
    assert torch.equal(torch.random.get_rng_state(), state)  # the training RNG is left alone
    torch.testing.assert_close(rank0, rank0_again)
    assert not torch.allclose(rank0, rank1) and not torch.allclose(rank0, plain)


def test_mixing_draws_exactly_as_rng_choice():
    from g2vlm.datamodules.shards.streams import mixed

    for seed, weights in [(0, [1.0]), (1, [0.8, 0.2]), (2, [0.1, 0.0, 0.3, 0.6]), (3, [1 / 3] * 3)]:
        weights = np.asarray(weights) / np.sum(weights)
        sources = [iter(range(index * 10**6, (index + 1) * 10**6)) for index in range(len(weights))]
        rng, reference = np.random.default_rng(seed), np.random.default_rng(seed)
        drawn = [next(iter_) // 10**6 for iter_ in [mixed(sources, weights, rng)] for _ in range(2000)]
        assert drawn == [int(reference.choice(len(weights), p=weights)) for _ in range(2000)]
        assert rng.random() == reference.random()


@pytest.mark.parametrize("read_ahead", [1, 2, 8])
def test_read_ahead_gives_the_records_and_draws_of_reading_one_at_a_time(tmp_path, monkeypatch, read_ahead):
    import itertools

    from g2vlm.datamodules.shards import streams
    from g2vlm.datamodules.shards.reader import iter_clip_records
    from g2vlm.datamodules.shards.skip_log import SkipLog

    shards = [write_clips(tmp_path, f"s{index}", "toy", 3 + index) for index in range(3)]

    def one_at_a_time(urls, rng, skips):
        while True:
            yield from iter_clip_records([urls[int(rng.integers(len(urls)))]], skips)

    monkeypatch.setattr(streams, "READ_AHEAD", read_ahead)
    rng, reference_rng = np.random.default_rng(7), np.random.default_rng(7)
    stream = streams.resampled(shards, iter_clip_records, rng, SkipLog(), "test")
    reference = one_at_a_time(shards, reference_rng, SkipLog())
    for record, expected in itertools.islice(zip(stream, reference), 40):
        assert (record.url, record.key) == (expected.url, expected.key)
        assert rng.random() == reference_rng.random()  # draws interleaved with the reading stay in step
