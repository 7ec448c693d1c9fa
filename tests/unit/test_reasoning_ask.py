"""`g2vlm ask`: the answer printed for image files equals the answer to the same question read from a QA shard."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from g2vlm.ask import add_to
from g2vlm.datamodules.qa.schema import QARecord
from g2vlm.datamodules.qa.shards import QAShardWriter, iter_qa_samples
from g2vlm.datamodules.qa.tokenizer import build_character_tokenizer
from g2vlm.datamodules.shards.decoding import encode_jpeg
from g2vlm.datamodules.shards.reader import SkipLog
from g2vlm.inference import load_reasoning_checkpoint, template_for
from g2vlm.lit.spatial_reasoning import SpatialReasoning


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="g2vlm")
    add_to(parser.add_subparsers(dest="tool"))
    return parser


def _checkpoint(tmp_path):
    build_character_tokenizer(tmp_path / "tokenizer")
    torch.manual_seed(0)
    module = SpatialReasoning(str(tmp_path / "tokenizer"), preset="tiny")
    module.configure_model()
    with torch.no_grad():  # a random model whose answers depend on the images
        module.model.dino_projector.weight.normal_(0, 0.2)
    path = tmp_path / "reasoning.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(),
                "datamodule_hyper_parameters": {"geometry_size": [16, 16], "vit_size": [16, 16]}}, path)
    return path


def test_ask_matches_the_shard_path(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path)
    rng = np.random.default_rng(0)
    jpegs = [encode_jpeg(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)) for _ in range(2)]
    for index, data in enumerate(jpegs):
        (tmp_path / f"{index}.jpg").write_bytes(data)
    question = "Which is closer? A. left B. right"
    args = _parser().parse_args(["ask", "--ckpt", str(checkpoint), "--images", str(tmp_path / "0.jpg"),
                                 str(tmp_path / "1.jpg"), "--question", question, "--max-new-tokens", "6",
                                 "--device", "cpu"])
    assert args.run(args) == 0
    printed = capsys.readouterr().out.strip()
    with QAShardWriter(tmp_path / "qa", "qa") as writer:
        writer.write("q", QARecord("d", "s", "t", "free_form", [(question, "")], 2), jpegs)
    (record,) = iter_qa_samples([str(tmp_path / "qa" / "qa-000000.tar")], SkipLog())
    module, saved = load_reasoning_checkpoint(checkpoint)
    expected = module.answer(template_for(module, saved).build(record), max_new_tokens=6)
    assert printed == expected and printed  # a non-empty answer: the comparison is not vacuous
    # sampling with a seed is reproducible
    sampled = _parser().parse_args([*map(str, ["ask", "--ckpt", checkpoint, "--images", tmp_path / "0.jpg",
                                               "--question", question, "--temperature", "1.0", "--seed", "3",
                                               "--max-new-tokens", "6", "--device", "cpu"])])
    assert sampled.run(sampled) == 0 and sampled.run(sampled) == 0
    first, second = capsys.readouterr().out.strip().split("\n")
    assert first == second


def test_ask_errors_are_one_line(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path)
    args = _parser().parse_args(["ask", "--ckpt", str(checkpoint), "--images", str(tmp_path / "missing.jpg"),
                                 "--question", "?"])
    assert args.run(args) == 2
    assert "missing.jpg: no such image" in capsys.readouterr().err
    (tmp_path / "0.jpg").write_bytes(b"not an image")
    args = _parser().parse_args(["ask", "--ckpt", str(tmp_path / "nothing.ckpt"), "--images", str(tmp_path / "0.jpg"),
                                 "--question", "?"])
    assert args.run(args) == 2
    assert "no such checkpoint" in capsys.readouterr().err
