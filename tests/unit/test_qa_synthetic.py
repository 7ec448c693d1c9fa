"""Synthetic spatial QA: hand-computed answers on a hand-built room, shard round trip, schema errors."""

from __future__ import annotations

import collections
import io
import json
import tarfile

import numpy as np
import pytest

from g2vlm.datamodules.qa.schema import QARecord, validate_qa_record
from g2vlm.datamodules.qa.shards import QAShardWriter, iter_qa_samples
from g2vlm.datamodules.shards.schema import SampleError
from g2vlm.datamodules.shards.skip_log import SkipLog
from g2vlm.datamodules.synthetic import qa
from g2vlm.datamodules.synthetic.render import render
from g2vlm.datamodules.synthetic.scene import Scene, SceneObject, look_at


def _room() -> Scene:
    """Camera 0 at (1, 1, 1) looking along +x, slightly down (its right is world -y); camera 1 one metre further along +x.
    Red box at (3, 2): 2 m deep, left; blue sphere at (4, 0.5): 3 m deep, right."""
    objects = [
        SceneObject("box", "red", np.array([3.0, 2.0, 0.4]), np.array([0.5, 0.5, 0.8]), 0.0, 0.1),
        SceneObject("sphere", "blue", np.array([4.0, 0.5, 0.4]), np.array([0.8, 0.8, 0.8]), 0.0, 0.1),
    ]
    eyes = [np.array([1.0, 1.0, 1.0]), np.array([2.0, 1.0, 1.0])]
    camera_to_world = np.stack([look_at(eye, eye + np.array([1.0, 0.0, -0.2])) for eye in eyes])
    K = np.array([[20.0, 0.0, 15.5], [0.0, 20.0, 15.5], [0.0, 0.0, 1.0]])
    grey = np.array([0.5, 0.5, 0.5])
    return Scene(room_size=np.array([6.0, 4.0, 2.6]), objects=objects, K=np.stack([K, K]),
                 camera_to_world=camera_to_world, height=32, width=32, floor_colour=grey, wall_colour=grey,
                 ceiling_colour=grey, light_position=np.array([3.0, 2.0, 2.4]), tile_size=0.5, stripe_width=0.2)


def _ask(task: str, seed: int = 0) -> qa.Question:
    scene = _room()
    facts = qa.SceneFacts(scene, render(scene), min_pixels=4)
    assert facts.visible[0].all()  # both objects are in view 0: the questions below are not vacuous
    question = qa.GENERATORS[task](facts, np.random.default_rng(seed))
    assert question is not None
    return question


def _chosen(question: qa.Question) -> str:
    """The option text the answer letter points at."""
    text = question.question
    start = text.index(f"{question.answer}. ") + 3
    ends = [text.find(f" {letter}. ", start) for letter in "ABCD"] + [text.find(" Answer with", start)]
    return text[start:min(e for e in ends if e > 0)]


def test_numeric_answers_are_exact():
    distance = _ask("object_distance")
    assert distance.answer == f"{np.hypot(1.0, 1.5):.1f}"  # metres to one decimal
    assert distance.views == [0, 1] and {m.colour for m in distance.markers} == {"red", "blue"}
    for seed in range(6):  # the object asked about varies with the seed; its depth along the view does not lie
        depth = _ask("object_depth", seed)
        camera = np.linalg.inv(_room().camera_to_world[depth.views[0]])
        name = depth.question.split("centre of the ")[1].split(" (")[0]
        centre = {"red box": [3.0, 2.0, 0.4], "blue sphere": [4.0, 0.5, 0.4]}[name]
        assert depth.answer == f"{(camera[:3, :3] @ centre + camera[:3, 3])[2]:.1f}"
    count = _ask("object_count")
    assert count.answer == "2"


def test_multiple_choice_answers_point_at_the_true_option():
    for seed in range(8):
        order = _ask("depth_order", seed)
        assert _chosen(order).startswith("the red box")  # about 2 m against 3 m (view 0), 1 m against 2 m (view 1)
        side = _ask("left_right", seed)
        first = side.question.split("centre of the ")[1].split(" (")[0]
        assert _chosen(side) == ("left" if first == "red box" else "right")
    motion = _ask("camera_motion")
    assert _chosen(motion) == "moved forward"


def test_generated_shards_round_trip_with_balanced_letters(tmp_path):
    index = qa.write_synthetic_qa_shards(tmp_path, scenes=12, views=2, height=32, width=32, questions_per_scene=6)
    skips = SkipLog()
    records = list(iter_qa_samples([str(tmp_path / name["name"]) for name in index["shards"]], skips))
    assert not skips.counts and len(records) == index["total_samples"] > 40
    assert {r.qa.task for r in records} == set(qa.TASKS)
    letters = collections.Counter(r.qa.final_answer for r in records if r.qa.answer_type == "multiple_choice")
    assert letters["A"] > 0 and letters["B"] > 0
    for record in records:
        clip = record.clip().decode()  # the geometry of the shown images rides along
        assert clip.images.shape == (record.qa.num_images, 32, 32, 3) and clip.depth_m.min() >= 0
        if record.qa.answer_type == "numeric":
            float(record.qa.final_answer)
    again = qa.render_qa_samples(3, seed=0, views=2, height=32, width=32, questions_per_scene=6)
    assert [s[1] for s in again] == [r.qa.to_json() for r in records if "scene0000003" in r.key]


def test_schema_errors_name_the_field(tmp_path):
    good = QARecord("d", "s", "t", "numeric", [("q?", "1")], 1).to_json()
    with pytest.raises(SampleError, match="answer_type"):
        validate_qa_record({**good, "answer_type": "essay"})
    with pytest.raises(SampleError, match="conversations"):
        validate_qa_record({**good, "conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]})
    with pytest.raises(SampleError, match="marker 'image'"):
        validate_qa_record({**good, "markers": [{"kind": "point", "colour": "red", "image": 3, "xy": [1, 2]}]})
    # a sample whose images are missing is skipped and counted, the next one is read
    jpeg = qa.encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    with QAShardWriter(tmp_path, "qa") as writer:
        writer.write("first", {**good, "num_images": 2}, [jpeg, jpeg])
        writer.write("second", good, [jpeg])
    with tarfile.open(tmp_path / "qa-000000.tar") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.name != "first.001.jpg"]
    with tarfile.open(tmp_path / "broken.tar", "w") as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data))
    skips = SkipLog()
    kept = list(iter_qa_samples([str(tmp_path / "broken.tar")], skips))
    assert [r.key for r in kept] == ["second"] and skips.counts == {"missing_frame": 1}
    assert json.loads(kept[0].members["json"])["task"] == "t"


def test_view_conversations_mark_two_objects_red_first_with_true_answers(tmp_path):
    scene = _room()
    facts = qa.SceneFacts(scene, render(scene), min_pixels=4)
    for seed in range(6):  # either object may be marked red
        questions = qa.view_conversation(facts, np.random.default_rng(seed), turns=10)
        # two objects: a count, two depths, and each pair once for left/right and depth order
        assert sorted(q.task for q in questions) == ["depth_order", "left_right", "object_count", "object_depth",
                                                     "object_depth"]
        assert len({q.views[0] for q in questions}) == 1
        marker_of = {}
        for question in questions:
            for name in ("red box", "blue sphere"):
                if f"the {name} (" in question.question:
                    colour = question.question.split(f"the {name} (")[1].split(" point")[0]
                    assert marker_of.setdefault(name, colour) == colour  # the same marker in every turn
            if question.task in ("left_right", "depth_order"):  # the held-out form: the red-marked object first
                assert question.question.index("(red point)") < question.question.index("(blue point)")
            if question.task == "left_right":
                first = question.question.split("centre of the ")[1].split(" (")[0]
                assert _chosen(question) == ("left" if first == "red box" else "right")
            if question.task == "depth_order":
                assert _chosen(question).startswith("the red box")
        assert sorted(marker_of.values()) == ["blue", "red"]
    index = qa.write_synthetic_qa_shards(tmp_path, scenes=3, views=2, height=32, width=32, questions_per_scene=2,
                                         turns=4, tasks=qa.SINGLE_VIEW_TASKS)
    records = list(iter_qa_samples([str(tmp_path / s["name"]) for s in index["shards"]], SkipLog()))
    assert records and all(r.qa.num_images == 1 for r in records)
    assert max(len(r.qa.turns) for r in records) > 1 and {r.qa.task for r in records} <= {"conversation", *qa.TASKS}
    for record in records:  # the task of every turn is recorded
        assert record.qa.turn_tasks is None or len(record.qa.turn_tasks) == len(record.qa.turns)


def test_shard_command_writes_level_camera_scenes_and_rejects_a_height_out_of_the_room(tmp_path, capsys):
    from g2vlm.tools import build_parser

    def run(*extra: str) -> int:
        args = build_parser().parse_args(["shard", "synthetic-qa", "--out", str(tmp_path), "--scenes", "2",
                                          "--size", "32x32", "--no-progress", *extra])
        return args.run(args)

    assert run("--level-camera-height", "1.2") == 0
    records = list(iter_qa_samples([str(tmp_path / "synthetic_qa-train-000000.tar")], SkipLog()))
    assert records
    for record in records:
        camera_to_world = record.clip().decode().camera_to_world
        np.testing.assert_allclose(camera_to_world[:, 2, 3], 1.2)
        np.testing.assert_allclose(camera_to_world[:, 2, 2], 0.0, atol=1e-12)
    assert run("--level-camera-height", "3") == 2
    assert "level camera height 3.0 m is outside" in capsys.readouterr().err
