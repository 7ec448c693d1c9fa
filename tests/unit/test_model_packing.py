"""Packing: positions follow Qwen2-VL's rules, answer labels point at the right logits."""

import torch

from g2vlm.model.config import model_config
from g2vlm.model.packing import Geometry, Text, VitImage, pack


def test_positions_follow_the_running_index():
    config = model_config("tiny")  # dino patch 4, ViT patch 4 merged 2x2
    batch = pack([[Text(torch.arange(3)), VitImage(torch.rand(3, 16, 24)), Text(torch.arange(2))]], config)
    pos = batch.position_ids
    assert pos[:, :3].tolist() == [[0, 1, 2]] * 3
    # image: 2x3 merged grid at start 3: t = 3, h = 3 + row, w = 3 + col
    assert pos[0, 3:9].tolist() == [3] * 6
    assert pos[1, 3:9].tolist() == [3, 3, 3, 4, 4, 4]
    assert pos[2, 3:9].tolist() == [3, 4, 5, 3, 4, 5]
    # the running index advances by max(h, w) = 3
    assert pos[:, 9:].tolist() == [[6, 7]] * 3


def test_shared_and_sequential_geometry_positions():
    frames = torch.rand(2, 3, 8, 8)  # 2x2 patches per frame
    shared = pack([[Text(torch.arange(2)), Geometry(frames), Text(torch.arange(1))]], model_config("tiny"))
    geo = shared.position_ids[:, shared.num_semantic :]
    assert torch.equal(geo[:, :4], geo[:, 4:])  # every frame the same positions
    assert geo[:, :4].tolist() == [[2, 2, 2, 2], [2, 2, 3, 3], [2, 3, 2, 3]]
    assert shared.position_ids[:, 2].tolist() == [4, 4, 4]  # text after: 2 + max(2, 2)
    seq = pack([[Text(torch.arange(2)), Geometry(frames)]], model_config("tiny", geometry_positions="sequential"))
    geo = seq.position_ids[:, seq.num_semantic :]
    # official packing: <start> at 2, frame 0 from 3, <end>, <start>, frame 1 from 3 + (2 + 2)
    assert geo[0].tolist() == [3] * 4 + [7] * 4


def test_answer_labels():
    batch = pack(
        [
            [Text(torch.tensor([1, 2])), Geometry(torch.rand(1, 3, 8, 8)), Text(torch.tensor([3, 4])), Text(torch.tensor([5, 6]), supervised=True)],
            [VitImage(torch.rand(3, 8, 8)), Text(torch.tensor([7, 8]), supervised=True)],
        ],
        model_config("tiny"),
    )
    assert batch.input_ids.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    # token 4 predicts 5, 5 predicts 6, 6 predicts nothing; 7 (after an image) has no text predictor
    assert batch.text_labels.tolist() == [-100, -100, -100, 5, 6, -100, 8, -100]
    assert batch.text_sample.tolist() == [0, 0, 0, 0, 0, 0, 1, 1]


def test_sample_blocks_are_the_dense_mask_split_by_sample():
    frames = torch.rand(2, 3, 8, 8)
    batch = pack(
        [
            [Text(torch.arange(3)), Geometry(frames), VitImage(torch.rand(3, 8, 8)), Text(torch.arange(2), supervised=True)],
            [Geometry(frames[:1])],
            [VitImage(torch.rand(3, 16, 8)), Text(torch.arange(4)), Geometry(frames), Text(torch.arange(1))],
        ],
        model_config("tiny"),
    )
    dense = batch.dense_mask()
    blocks = batch.sample_blocks()
    assert blocks.sizes == torch.bincount(batch.token_sample).tolist()
    assert torch.equal(blocks.rows[blocks.inverse], torch.arange(batch.num_tokens))
    rebuilt = torch.zeros_like(dense)
    for rows, mask in zip(blocks.rows.split(blocks.sizes), blocks.masks):
        assert (batch.token_sample[rows] == batch.token_sample[rows[0]]).all()
        rebuilt[rows[:, None], rows[None, :]] = mask
    assert torch.equal(rebuilt, dense)  # every allowed pair is inside a block, and each block is the rule
