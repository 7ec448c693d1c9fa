"""Batch assembly in place equals the reference path bit for bit: decode the clip (`ClipRecord.decode`), then
`crop_resize`, then the validity rules (depth > 0, < z_far, mask) — images, depth in metres, validity and K, for
every resampling regime, masks, z_far, clips without depth and float (.npy) depth mixed into a 16-bit batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from g2vlm.datamodules.augmentation import (
    CropBox,
    box_average,
    crop_box,
    crop_resize,
    nearest_source_indices,
    reduction_box,
    reduction_factor,
    resample_images,
)
from g2vlm.datamodules.multiview.batch import MultiViewBatch
from g2vlm.datamodules.multiview.batch_assembly import BatchAssembler, ScratchBuffer
from g2vlm.datamodules.shards.decoding import encode_depth_npy, encode_depth_png, encode_jpeg, encode_mask_png
from g2vlm.datamodules.shards.reader import ClipRecord
from g2vlm.datamodules.shards.schema import ClipMeta, SampleError

FRAMES, HEIGHT, WIDTH = 4, 30, 40
DEPTH_SCALE = 2e-4
Z_FAR_ON_A_UNIT = float(np.float32(32500) * np.float32(DEPTH_SCALE))  # unit 32500 lies exactly at z_far


def make_record(seed: int, *, has_depth: bool = True, mask: bool = False, z_far: float | None = None,
                float_depth: bool = False) -> ClipRecord:
    """A clip of random images and depth (units over the whole uint16 range, some zero)."""
    rng = np.random.default_rng(seed)
    K = np.array([[35.0, 0.0, 19.2], [0.0, 33.0, 14.7], [0.0, 0.0, 1.0]])
    meta = ClipMeta(
        dataset=f"set{seed % 2}", scene=f"scene{seed}", frame_ids=[10 * i for i in range(FRAMES)], width=WIDTH,
        height=HEIGHT, K=np.stack([K * [[1 + 0.01 * i], [1], [1]] for i in range(FRAMES)]),
        camera_to_world=np.tile(np.eye(4), (FRAMES, 1, 1)), depth_scale=DEPTH_SCALE, depth_is_metric=True,
        has_depth=has_depth, z_far=z_far,
    )
    members = {"meta.json": json.dumps(meta.to_json()).encode()}
    for index in range(FRAMES):
        members[f"{index:03d}.jpg"] = encode_jpeg(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
        units = rng.integers(0, 65536, (HEIGHT, WIDTH)).astype(np.uint16)
        units[rng.random((HEIGHT, WIDTH)) < 0.1] = 0
        if z_far is not None:  # the units around z_far, the boundary one included (z_far itself is invalid)
            boundary = int(np.round(z_far / DEPTH_SCALE))
            units[0, :5] = np.arange(boundary - 2, boundary + 3)
        if has_depth and float_depth:
            members[f"{index:03d}.depth.npy"] = encode_depth_npy(units.astype(np.float32) * 0.37)
        elif has_depth:
            members[f"{index:03d}.depth.png"] = encode_depth_png(units)
        if mask:
            members[f"{index:03d}.mask.png"] = encode_mask_png(rng.random((HEIGHT, WIDTH)) < 0.7)
    return ClipRecord(f"clip{seed}", "memory", meta, members)


def reference(record: ClipRecord, frames: list[int], box: CropBox, target_hw: tuple[int, int]):
    """The unfused path: decode, crop_resize, validity. Returns images (N, 3, H, W) uint8, depth_m, valid, K."""
    clip = record.decode(frames)
    depth_m = torch.from_numpy(clip.depth_m) if clip.depth_m is not None else None
    mask = torch.from_numpy(clip.mask) if clip.mask is not None else None
    images = torch.from_numpy(clip.images).permute(0, 3, 1, 2)
    images, depth_m, mask, K = crop_resize(images, depth_m, mask, torch.from_numpy(clip.K), box, target_hw)
    if depth_m is None:
        return images, torch.zeros(len(frames), *target_hw), torch.zeros(len(frames), *target_hw, dtype=torch.bool), K
    valid = depth_m > 0
    if record.meta.z_far is not None:
        valid &= depth_m < record.meta.z_far
    if mask is not None:
        valid &= mask
    return images, depth_m.masked_fill(~valid, 0.0), valid, K


BOXES = {  # target (H, W), crop box in the 30 x 40 source
    "same size": ((30, 40), CropBox(0, 0, 40, 30)),
    "crop, no resize": ((20, 24), CropBox(7, 3, 24, 20)),
    "focal crop, upscale": ((30, 40), CropBox(5, 4, 33, 25)),
    "downscale < 2": ((14, 20), CropBox(2, 1, 37, 27)),
    "downscale >= 2 (box filter)": ((8, 12), CropBox(1, 2, 38, 26)),
}


@pytest.mark.parametrize("case", list(BOXES))
@pytest.mark.parametrize("kind", ["png", "mask_and_z_far", "no_depth", "npy"])
def test_assembled_clip_equals_decode_then_crop_resize(case, kind):
    target_hw, box = BOXES[case]
    options = {"png": {}, "mask_and_z_far": {"mask": True, "z_far": Z_FAR_ON_A_UNIT}, "no_depth": {"has_depth": False},
               "npy": {"float_depth": True, "z_far": 3000.0}}[kind]
    records = [make_record(seed, **options) for seed in (1, 2)]
    frames = [[3, 0, 2], [1, 1, 2]]
    assembler = BatchAssembler(2, 3, target_hw, ScratchBuffer())
    for record, picked in zip(records, frames):
        assembler.add(record, picked, box)
    batch = assembler.batch()
    assert batch.depth.dtype == (torch.float32 if kind == "npy" else torch.uint16)
    for slot, (record, picked) in enumerate(zip(records, frames)):
        images, depth_m, valid, K = reference(record, picked, box, target_hw)
        assert torch.equal(batch.images[slot], images)
        assert torch.equal(batch.depth_m[slot], depth_m)  # bit for bit
        assert torch.equal(batch.valid[slot], valid)
        assert torch.equal(batch.K[slot], K.float())
        assert torch.equal(batch.camera_to_world[slot], torch.from_numpy(record.meta.camera_to_world[picked]).float())
        assert batch.frame_ids[slot] == [record.meta.frame_ids[i] for i in picked]
    assert batch.has_depth.tolist() == [kind != "no_depth"] * 2
    assert batch.keys == ["clip1", "clip2"] and batch.dataset_names == ["set1", "set0"]


def test_a_float_depth_clip_switches_the_batch_to_exact_metres():
    target_hw, box = BOXES["focal crop, upscale"]
    mixed_clip = make_record(9)  # frame 3 stores float depth, the others 16-bit PNGs
    mixed_clip.members["003.depth.npy"] = make_record(10, float_depth=True).members.pop("003.depth.npy")
    del mixed_clip.members["003.depth.png"]
    records = [make_record(3, mask=True), make_record(4, float_depth=True), make_record(5, has_depth=False),
               make_record(6, z_far=5.0), mixed_clip]
    assembler = BatchAssembler(5, 2, target_hw, ScratchBuffer())
    for record in records:
        assembler.add(record, [0, 3], box)
    batch = assembler.batch()
    assert batch.depth.dtype == torch.float32 and torch.all(batch.depth_scale == 1)
    for slot, record in enumerate(records):
        _, depth_m, valid, _ = reference(record, [0, 3], box, target_hw)
        assert torch.equal(batch.depth_m[slot], depth_m) and torch.equal(batch.valid[slot], valid)


def test_a_failed_clip_leaves_its_slot_free():
    target_hw, box = BOXES["focal crop, upscale"]
    broken = make_record(7)
    broken.members["001.jpg"] = b"\xff\xd8 not a jpeg"
    good = make_record(8)
    assembler = BatchAssembler(2, 2, target_hw, ScratchBuffer())
    with pytest.raises(SampleError):
        assembler.add(broken, [0, 1], box)
    assert assembler.count == 0
    assembler.add(good, [0, 1], box)
    batch = assembler.batch()
    assert batch.batch_size == 1 and batch.keys == ["clip8"]
    assert torch.equal(batch.images[0], reference(good, [0, 1], box, target_hw)[0])


def test_depth_m_is_the_float32_product_over_the_whole_uint16_range():
    units = torch.arange(65536, dtype=torch.int32).to(torch.uint16).view(1, 1, 256, 256)
    scale = torch.tensor([DEPTH_SCALE], dtype=torch.float32)
    batch = MultiViewBatch(images=torch.zeros(1, 1, 3, 256, 256, dtype=torch.uint8), depth=units, depth_scale=scale,
                           K=torch.eye(3).expand(1, 1, 3, 3), camera_to_world=torch.eye(4).expand(1, 1, 4, 4),
                           has_depth=torch.ones(1, dtype=torch.bool), dataset_names=["a"], keys=["k"], frame_ids=[[0]])
    expected = np.arange(65536, dtype=np.float32).reshape(256, 256) * np.float32(DEPTH_SCALE)
    np.testing.assert_array_equal(batch.depth_m[0, 0].numpy(), expected)
    assert batch.valid.sum() == 65535 and not batch.valid[0, 0, 0, 0]


@pytest.mark.parametrize("source", [1, 7, 30, 41, 224, 518])
def test_nearest_indices_match_torch_nearest_exact(source):
    for target in (1, 5, source - 1 or 1, source, int(source * 1.25) + 1, 2 * source + 3):
        values = torch.arange(source, dtype=torch.float32).view(1, 1, 1, source).expand(1, 1, 3, source)
        expected = F.interpolate(values, size=(3, target), mode="nearest-exact")[0, 0, 0].long()
        assert torch.equal(torch.from_numpy(nearest_source_indices(source, target).copy()), expected)


@pytest.mark.parametrize(("factor", "height", "width", "channels_last"),
                         [(2, 6, 10, True), (2, 8, 4, False), (3, 9, 12, True), (4, 8, 16, False), (12, 24, 36, True)])
def test_box_average_equals_float_avg_pool(factor, height, width, channels_last):
    """Exact block means, bit for bit torch's pooling of the float images; factor 12 sums in int32 (12 x 12 x 255
    overflows int16), extreme values included."""
    rng = np.random.default_rng(factor)
    images = torch.from_numpy(rng.integers(0, 256, (2, 3, height, width), dtype=np.uint8))
    images[0, :, :factor, :factor] = 255
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    means = box_average(images, factor)
    assert means.dtype == torch.float32 and means.shape == (2, 3, height // factor, width // factor)
    assert torch.equal(means, F.avg_pool2d(images.float(), factor))
    assert means[0, 0, 0, 0] == 255


def test_resample_into_out_equals_interpolate():
    rng = np.random.default_rng(0)
    crops = torch.from_numpy(rng.integers(0, 256, (2, 25, 33, 3), dtype=np.uint8)).permute(0, 3, 1, 2)
    for target in [(30, 40), (20, 24), (8, 12)]:
        box = reduction_box(crop_box((25, 33), target, 1.0), target)
        expected, *_ = crop_resize(crops, None, None, torch.eye(3)[None], box, target)
        out = torch.empty(2, *target, 3, dtype=torch.uint8).permute(0, 3, 1, 2)
        cropped = crops[..., box.top:box.top + box.height, box.left:box.left + box.width]
        assert resample_images(cropped, target, reduction_factor(box, target), out=out) is out
        assert torch.equal(out, expected)


def write_clip_shard(path, clips: int) -> str:
    from g2vlm.datamodules.shards.writer import ShardWriter

    with ShardWriter(path, "pool") as writer:
        for seed in range(clips):
            record = make_record(seed, mask=seed % 3 == 0)
            frames = [{suffix.split(".", 1)[1]: data for suffix, data in record.members.items()
                       if suffix.startswith(f"{index:03d}.")} for index in range(FRAMES)]
            writer.write(f"clip{seed}", record.meta, frames)
    return str(path / "pool-000000.tar")


def test_batches_from_a_worker_equal_those_assembled_in_process(tmp_path):
    from torch.utils.data import DataLoader

    from g2vlm.datamodules.multiview.streams import BatchRecipe, ValClipBatches

    shard = write_clip_shard(tmp_path, 12)
    recipe = BatchRecipe(image_size=(24, 32), size_multiple=4, views_min=2, views_max=2, val_views=2, image_budget=2)
    reference = list(ValClipBatches([shard], recipe))  # in process
    assert len(reference) == 12

    def same(batch: MultiViewBatch, expected: MultiViewBatch) -> bool:
        return batch.keys == expected.keys and all(
            torch.equal(getattr(batch, name), getattr(expected, name))
            for name in ("images", "depth", "depth_scale", "K", "camera_to_world", "has_depth"))

    held = list(DataLoader(ValClipBatches([shard], recipe), batch_size=None, num_workers=1))  # every batch kept
    assert all(same(batch, expected) for batch, expected in zip(held, reference, strict=True))
