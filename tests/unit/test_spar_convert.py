"""`g2vlm shard spar` on a miniature SPAR-7M with a record of every task type (tests/fixtures/spar7m.py): nothing
skipped, markers where and as the official renderer draws them, frame labels of video samples, skips by reason."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from g2vlm.datamodules.convert.spar import clean_question, convert_spar
from g2vlm.datamodules.qa.batch import ImagePart, TextPart
from g2vlm.datamodules.qa.markers import draw_markers
from g2vlm.datamodules.qa.shards import iter_qa_samples
from g2vlm.datamodules.qa.template import QATemplate
from g2vlm.datamodules.qa.tokenizer import build_character_tokenizer
from g2vlm.datamodules.shards.skip_log import SkipLog
from g2vlm.tools import build_parser
from tests.fixtures.spar7m import IMAGE_SIZES, MULTI_TURN_ID, RECORDS, image_grey, write_layout
from tests.fixtures.spar7m_marks import EXPECTED_MARKS, TEXT_ZONE_MARGIN_PX

GREY = (128, 128, 128)


def _convert(root, out, *extra) -> int:
    args = build_parser().parse_args(["shard", "spar", "--root", str(root), "--out", str(out), "--no-progress",
                                      *extra])
    return args.run(args)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(the records read back, by their SPAR id; the converter's summary) for the fixture layout."""
    root = tmp_path_factory.mktemp("spar7m")
    write_layout(root / "spar")
    summary = convert_spar(root / "spar", root / "out")
    records = list(iter_qa_samples(sorted(str(p) for p in (root / "out").glob("*.tar")), SkipLog()))
    ids = {record["id"]: f"spar__{source}__{record['type']}__{record['id']}" for source, _, _, record in RECORDS}
    by_key = {r.key: r for r in records}
    return {spar_id: by_key.get(key) for spar_id, key in ids.items()}, summary


def test_every_task_family_converts_and_none_is_skipped(converted):
    records, summary = converted
    assert summary["written"] == len(RECORDS) and summary["skipped"] == {}
    assert all(record is not None for record in records.values())
    assert len({task for _, task, _, _ in RECORDS}) == 35  # every type of draw_marker.py, and rxr's nav_video
    formats = {"select": "multiple_choice", "judge": "free_form", "sentence": "free_form"}
    for source, _, answer_format, raw in RECORDS:
        qa = records[raw["id"]].qa
        assert qa.task == raw["type"] and qa.num_images == len(raw["image"]) and qa.dataset == f"spar_{source}"
        if answer_format == "fill":
            answer = qa.final_answer
            assert qa.answer_type == ("numeric" if answer.replace(".", "").isdigit() else "free_form")
        else:
            assert qa.answer_type == formats[answer_format]
    assert records["scene0011_00_9"].qa.answer_type == "numeric"
    assert records["scene0000_00_6"].qa.answer_type == "free_form"  # view_change_infer's action list
    assert records[MULTI_TURN_ID].qa.turns[1] == ("And from the window?", "4.0")  # every turn kept
    # images in the record's order, the PNG re-encoded to JPEG
    sample = records["scene0000_00_8"]
    for index in range(4):
        member = sample.members[f"{index:03d}.jpg"]
        assert member[:2] == b"\xff\xd8"
    assert records["scene0261_00_19"].members["000.jpg"][:2] == b"\xff\xd8"  # was a PNG behind a .jpg name


def _summary(image: np.ndarray, zone) -> list[list[int]]:
    """[r, g, b, count, x0, y0, x1, y1] of every colour drawn on the grey canvas outside the (grown) text zone."""
    mask = (image != np.array(GREY, np.uint8)).any(-1)
    if zone is not None:
        x0, y0, x1, y1 = zone
        m = TEXT_ZONE_MARGIN_PX
        mask[max(y0 - m, 0) : y1 + m + 1, max(x0 - m, 0) : x1 + m + 1] = False
    out = []
    for colour in sorted({tuple(c) for c in image[mask].reshape(-1, 3).tolist()}):
        pixels = mask & (image == np.array(colour, np.uint8)).all(-1)
        ys, xs = np.nonzero(pixels)
        out.append([*colour, int(pixels.sum()), int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())])
    return out


@pytest.mark.parametrize("source,task,spar_id", [(s, r["type"], r["id"]) for s, _, _, r in RECORDS])
def test_markers_as_the_official_renderer_draws_them(converted, source, task, spar_id):
    """Every colour on every image: same pixel count and bounding box as draw_marker.py's (colour order, sizes, which
    image); OpenCV's label text: ours lies in its zone with a comparable amount of ink (glyphs are not Hershey's)."""
    record = converted[0][spar_id]
    width, height = IMAGE_SIZES[source]
    expected = {entry["image"]: entry for entry in EXPECTED_MARKS[spar_id]}
    for index in range(record.qa.num_images):
        canvas = np.full((height, width, 3), GREY, np.uint8)
        drawn = draw_markers(canvas, [m for m in record.qa.markers if m.image == index])
        entry = expected.get(index, {"shapes": []})
        text = entry.get("text")
        assert _summary(drawn, text and text["zone"]) == entry["shapes"], f"{task} image {index}"
        if text is not None:
            x0, y0, x1, y1 = text["zone"]
            m = TEXT_ZONE_MARGIN_PX
            region = drawn[max(y0 - m, 0) : y1 + m + 1, max(x0 - m, 0) : x1 + m + 1]
            ink = int((region == np.array(text["rgb"], np.uint8)).all(-1).sum())
            assert 0.6 * text["pixels"] <= ink <= 1.4 * text["pixels"], (task, index, ink, text["pixels"])


def test_video_samples_keep_the_frame_labels(converted, tmp_path):
    records, _ = converted
    frames = "".join(f"Frame-{k}: <image>\n" for k in range(1, 13))
    assert records["scene0011_00_6"].qa.turns[0] == (frames + "In which frame does the chair (red bbox) appear?",
                                                      "Frame-7")
    nav = records["rxr_1_2"].qa.turns[0][0]  # type nav: a video sample with 8 frames
    assert nav.startswith("Frame-1: <image>\nFrame-2: <image>\n") and nav.count("<image>") == 8
    assert records["scene0000_00_8"].qa.turns[0][0].startswith("What is the distance")  # 4 images: not a video
    assert records["scene0261_00_17"].qa.turns[0][0].startswith("Which is closer")  # placeholder removed
    # the template reads frame k right after its label, in order
    template = QATemplate(build_character_tokenizer(tmp_path / "tokenizer"), (28, 28), (28, 28), 14, 14, 2,
                          draw_markers=False)
    sample = template.build(records["scene0011_00_6"])
    text = template.tokenizer.decode(torch.cat([p.ids for p in sample.prompt if isinstance(p, TextPart)]))
    labelled = "".join(f"Frame-{k}: <|vision_start|><|vision_end|>\n" for k in range(1, 13))
    assert labelled + "In which frame does the chair" in text
    greys = [float(p.image.float().mean()) for p in sample.prompt if isinstance(p, ImagePart)]
    assert greys == pytest.approx([image_grey(k) for k in range(12)], abs=1.5)


def test_unusable_records_are_skipped_and_counted_by_reason(tmp_path, capsys):
    source, folder, answer_format, good = next(r for r in RECORDS if r[3]["type"] == "depth_prediction_oo_mv")
    oo_mv = next(r[3] for r in RECORDS if r[3]["type"] == "obj_spatial_relation_oo_mv")
    bad = [
        {**good, "id": "flat_index", "point_img_idx": [1, 2, 0]},  # not [[...]]: draw_marker.py cannot index it
        {**good, "id": "short_index", "point_img_idx": [[1, 2]]},  # three markers, two images named
        {**good, "id": "far_index", "point_img_idx": [[1, 2, 3]]},  # image 3 of 3
        {**good, "id": "no_green", "green_point": None},
        {**good, "id": "mystery", "type": "teleport_infer"},
        {**good, "id": "no_image", "image": []},
        {**good, "id": "lost_image", "image": ["0a5c013435/image_color/999.jpg"] * 3},
        {**good, "id": "one_sided", "conversations": good["conversations"][:1]},
        {**oo_mv, "id": "three_boxes", "blue_bbox": [[1, 2, 3, 4]]},  # draw_marker.py raises "Unexpected data entry"
    ]
    write_layout(tmp_path / "spar", records=[(source, folder, answer_format, good)]
                 + [(source, "mixed", "select", record) for record in bad])
    (tmp_path / "spar" / source / "images" / "0a5c013435" / "image_color" / "999.jpg").unlink()
    with open(tmp_path / "spar" / source / "qa_jsonl" / "train" / "mixed" / "select" / "select_9.jsonl", "ab") as f:
        f.write(b'{broken json\n[1, 2]\n{"id": "latin-1 \xe9"}\n')  # the last line is not UTF-8
    assert _convert(tmp_path / "spar", tmp_path / "out") == 0
    printed = capsys.readouterr().out
    assert "wrote 1 QA samples" in printed
    assert ("skipped: bad_conversations 1, bad_images 1, bad_json 3, bad_markers 5, missing_image 1, "
            "unknown_task 1") in printed
    # the first skips of each reason are named by file and line: select_9.jsonl holds the ten bad records on lines
    # 1-10 (after write_layout's), then the three broken lines
    bad_file = tmp_path / "spar" / source / "qa_jsonl" / "train" / "mixed" / "select" / "select_9.jsonl"
    lines = bad_file.read_bytes().splitlines()
    broken = [number for number, line in enumerate(lines, start=1) if line.startswith((b"{broken", b"[1, 2]", b'{"id": "latin'))]
    assert len(broken) == 3
    for number in broken:
        assert f"skipped (bad_json) e.g. {bad_file}:{number}: " in printed
    mystery = next(number for number, line in enumerate(lines, start=1) if b'"mystery"' in line)
    assert f"skipped (unknown_task) e.g. {bad_file}:{mystery}: " in printed
    assert printed.count("skipped (bad_markers) e.g. ") == 5
    assert clean_question("Frame-1: <image>\nFrame-2: <image>\nQ?") == "Q?"


def test_misspelled_sources_and_tasks_are_errors_not_silently_dropped(tmp_path, capsys):
    write_layout(tmp_path / "spar")
    assert _convert(tmp_path / "spar", tmp_path / "out", "--sources", "scanet,rxr") == 2
    assert "unknown sources ['scanet']" in capsys.readouterr().err
    assert _convert(tmp_path / "spar", tmp_path / "out", "--tasks", "depth_prediction_oo,no_such_task") == 2
    assert "no task folder ['no_such_task']" in capsys.readouterr().err


def test_wrong_root_is_one_clear_error(tmp_path, capsys):
    assert _convert(tmp_path, tmp_path / "out") == 2
    assert "no QA files" in capsys.readouterr().err


def test_record_form_matches_the_readme_example():
    """The fixture's first record is the README's example, field for field."""
    readme = json.loads('{"id": "scene0261_00_16", "conversations": [{"from": "human", "value": "With the counter '
                        '(red point) having a depth of 1.6 meters, determine the depth of towel (blue point) in the same '
                        'frame.  Calculate or judge based on the 3D center points of these objects. The unit is '
                        'meter."}, {"from": "gpt", "value": "towel\'s central depth is estimated to be about 1.5 '
                        'meters."}], "image": ["scene0261_00/image_color/543.jpg"], "type": "depth_prediction_oc", '
                        '"depth": ["scene0261_00/image_depth/543.png"], "red_point": [[553, 397]], '
                        '"blue_point": [[641, 838]]}')
    assert RECORDS[0][3] == readme
