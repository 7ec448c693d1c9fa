"""`g2vlm shard spar` on a miniature SPAR-7M layout made here: questions, markers, images, skips."""

from __future__ import annotations

import io
import json

import numpy as np
from g2vlm.datamodules.clip_reader import SkipLog
from g2vlm.datamodules.qa_shards import iter_qa_samples
from g2vlm.datamodules.spar import clean_question
from PIL import Image

from g2vlm.tools import build_parser


def _image(path, colour, fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(np.full((48, 64, 3), colour, np.uint8)).save(buffer, format=fmt)
    path.write_bytes(buffer.getvalue())


def _jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _layout(root):
    images = root / "scannet" / "images" / "scene0001_00" / "image_color"
    _image(images / "10.jpg", 50)
    _image(images / "20.jpg", 200, fmt="PNG")  # a PNG behind a .jpg name: re-encoded to JPEG
    qa = root / "scannet" / "qa_jsonl" / "train"
    _jsonl(qa / "depth_prediction_oc" / "fill" / "fill_2.jsonl", [
        {"id": "scene0001_00_1", "type": "depth_prediction_oc", "image": ["scene0001_00/image_color/10.jpg"],
         "red_point": [[500, 250]],
         "conversations": [{"from": "human", "value": "<image>\nHow deep is the chair (red point)?"},
                           {"from": "gpt", "value": "1.7"}]},
        {"id": "scene0001_00_2", "type": "depth_prediction_oc", "image": ["scene0001_00/image_color/99.jpg"],
         "conversations": [{"from": "human", "value": "<image>\nMissing image?"}, {"from": "gpt", "value": "2"}]},
    ])
    _jsonl(qa / "obj_spatial_relation_oc_mv" / "select" / "select_2.jsonl", [
        {"id": 7, "type": "obj_spatial_relation_oc_mv",
         "image": ["scene0001_00/image_color/10.jpg", "scene0001_00/image_color/20.jpg"],
         "red_bbox": [[100, 100, 400, 500]], "blue_point": [[900, 900]], "bbox_img_idx": [[1]], "point_img_idx": [[0]],
         "conversations": [{"from": "human", "value": "Frame-1: <image>\nFrame-2: <image>\nWhich is left? A. x B. y"},
                           {"from": "gpt", "value": "A"},
                           {"from": "human", "value": "And which is right?"}, {"from": "gpt", "value": "B"}]},
        "not a record",
    ])
    (qa / "obj_spatial_relation_oc_mv" / "select" / "select_2.jsonl").open("a").write("{broken json\n")


def test_convert_miniature_spar_layout(tmp_path, capsys):
    _layout(tmp_path / "spar")
    args = build_parser().parse_args(["shard", "spar", "--root", str(tmp_path / "spar"), "--out", str(tmp_path / "out"),
                                      "--sources", "scannet", "--no-progress"])
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert "wrote 2 QA samples" in printed and "missing_image 1" in printed and "bad_json 2" in printed
    records = {r.qa.task: r for r in iter_qa_samples([str(tmp_path / "out" / "spar-train-000000.tar")], SkipLog())}
    depth = records["depth_prediction_oc"].qa
    assert depth.turns == [("How deep is the chair (red point)?", "1.7")] and depth.answer_type == "numeric"
    assert [(m.kind, m.colour, m.image, m.coords) for m in depth.markers] == [("point", "red", 0, (500.0, 250.0))]
    relation = records["obj_spatial_relation_oc_mv"]
    assert relation.qa.answer_type == "multiple_choice" and relation.qa.num_images == 2
    assert relation.qa.turns == [("Which is left? A. x B. y", "A"), ("And which is right?", "B")]  # every turn kept
    assert {(m.kind, m.colour, m.image) for m in relation.qa.markers} == {("point", "blue", 0), ("box", "red", 1)}
    assert relation.members["001.jpg"][:2] == b"\xff\xd8"  # the PNG was re-encoded
    assert relation.key == "spar__scannet__obj_spatial_relation_oc_mv__7"
    assert clean_question("Frame-1: <image>\nFrame-2: <image>\nQ?") == "Q?"


def test_wrong_root_is_one_clear_error(tmp_path, capsys):
    args = build_parser().parse_args(["shard", "spar", "--root", str(tmp_path), "--out", str(tmp_path / "out"),
                                      "--no-progress"])
    assert args.run(args) == 2
    assert "no QA files" in capsys.readouterr().err
