"""`g2vlm shard spar-bench` on a miniature SPAR-Bench parquet written with the real schema (tests/fixtures/spar_bench.py):
every row converted with the prompt the official lmms-eval task builds, bad rows counted, schema errors named, and
`g2vlm bench spar --ckpt` answering those very prompts, every task scored."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from g2vlm.datamodules.qa.batch import TextPart
from g2vlm.datamodules.qa.shards import iter_qa_samples
from g2vlm.datamodules.qa.tokenizer import build_character_tokenizer
from g2vlm.datamodules.shards.decoding import decode_jpeg
from g2vlm.datamodules.shards.skip_log import SkipLog
from g2vlm.lit.spatial_reasoning import SpatialReasoning
from g2vlm.metrics.spatial_qa import SPAR_TASKS
from g2vlm.tools import build_parser
from tests.fixtures.spar_bench import EXPECTED_PROMPTS, IMAGE_SIZES, ROWS, write_parquet


def _run(*argv) -> int:
    args = build_parser().parse_args(list(argv))
    return args.run(args)


def _shards(folder) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.tar"))


def test_parquet_rows_become_questions_with_the_official_prompts(tmp_path, capsys):
    write_parquet(tmp_path / "SPAR-Bench")  # two files, row groups of 4 rows
    assert _run("shard", "spar-bench", "--parquet", str(tmp_path / "SPAR-Bench"), "--out", str(tmp_path / "out"),
                "--no-progress") == 0
    assert "wrote 20 SPAR-Bench questions of 20 tasks" in capsys.readouterr().out
    records = {r.key: r for r in iter_qa_samples(_shards(tmp_path / "out"), SkipLog())}
    assert len(records) == len(ROWS) == 20 and {r.qa.task for r in records.values()} == set(SPAR_TASKS)
    for row_id, _, format_type, task, source, count, _, answer in ROWS:
        qa = records[f"sparbench_{row_id}"].qa
        # lmms-eval's Qwen2-VL model removes "<image>" from the task's text and puts the images first, as we do
        assert qa.turns == [(EXPECTED_PROMPTS[row_id].replace("<image>", ""), answer)]
        assert qa.task == task and qa.num_images == count and qa.scene == source and not qa.markers
        kind = "free_form" if task == "view_change_infer" else {"fill": "numeric", "select": "multiple_choice"}[format_type]
        assert qa.answer_type == kind
        member = records[f"sparbench_{row_id}"].members
        for k in range(count):  # in order, PNGs re-encoded to JPEG, sizes kept
            image = decode_jpeg(member[f"{k:03d}.jpg"], "test")
            assert image.shape == (IMAGE_SIZES[source][1], IMAGE_SIZES[source][0], 3)
            assert abs(float(image.mean()) - (40 + 20 * k)) < 1.5
    assert EXPECTED_PROMPTS[3301].endswith("top-left corner as the origin of the image.\nAnswer with the option's "
                                           "letter from the given choices directly.")


def test_tiny_file_bad_rows_are_counted_and_schema_errors_named(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.fixtures.spar_bench import table

    rows = [ROWS[0], ROWS[8], (9001, "single_view", "fill", "room_size", "scannet", 1, "How big?", "20"),
            (9002, "single_view", "fill", "depth_prediction_oc", "scannet", 0, "No image?", "1.0")]
    tiny = table(rows)
    path = tmp_path / "SPAR-Bench-Tiny" / "data" / "test-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(tiny, path)
    assert _run("shard", "spar-bench", "--parquet", str(path), "--out", str(tmp_path / "tiny"), "--no-progress") == 0
    captured = capsys.readouterr()
    assert "wrote 2 SPAR-Bench questions of 2 tasks" in captured.out
    assert "skipped: bad_images 1, unknown_task 1" in captured.out and "no question of" in captured.err
    assert "skipped (unknown_task) e.g. test-00000-of-00001.parquet id 9001: " in captured.out
    assert "skipped (bad_images) e.g. test-00000-of-00001.parquet id 9002: " in captured.out
    # not SPAR-Bench: one clear error naming the file and the column
    pq.write_table(tiny.drop(["image"]), tmp_path / "no_image.parquet")
    assert _run("shard", "spar-bench", "--parquet", str(tmp_path / "no_image.parquet"), "--out", str(tmp_path / "x"),
                "--no-progress") == 2
    assert "no_image.parquet: not a SPAR-Bench parquet file: no column(s) image" in capsys.readouterr().err
    paths = tiny.set_column(tiny.schema.get_field_index("image"), "image", pa.array([["a.jpg"]] * 4))
    pq.write_table(paths, tmp_path / "paths.parquet")
    assert _run("shard", "spar-bench", "--parquet", str(tmp_path / "paths.parquet"), "--out", str(tmp_path / "y"),
                "--no-progress") == 2
    assert "paths.parquet: column 'image' is list<element: string>" in capsys.readouterr().err
    assert _run("shard", "spar-bench", "--parquet", str(tmp_path / "empty"), "--out", str(tmp_path / "z"),
                "--no-progress") == 2
    assert "no .parquet file there" in capsys.readouterr().err


def test_checkpoint_answers_the_official_prompts_and_every_task_is_scored(tmp_path, monkeypatch, capsys):
    write_parquet(tmp_path / "SPAR-Bench", files=1)
    assert _run("shard", "spar-bench", "--parquet", str(tmp_path / "SPAR-Bench"), "--out", str(tmp_path / "shards"),
                "--no-progress") == 0
    build_character_tokenizer(tmp_path / "tokenizer")
    torch.manual_seed(0)
    module = SpatialReasoning(str(tmp_path / "tokenizer"), preset="tiny")
    module.configure_model()
    checkpoint = tmp_path / "reasoning.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(),
                "datamodule_hyper_parameters": {"geometry_size": [16, 16], "vit_size": [16, 16]}}, checkpoint)
    prompts = {}
    answer = SpatialReasoning.answer

    def recording_answer(self, sample, max_new_tokens=None):  # the real answer; the prompt it was given is kept
        prompts[sample.key] = self.tokenizer.decode(torch.cat([p.ids for p in sample.prompt
                                                               if isinstance(p, TextPart)]))
        return answer(self, sample, max_new_tokens)

    monkeypatch.setattr(SpatialReasoning, "answer", recording_answer)
    assert _run("bench", "spar", "--ckpt", str(checkpoint), "--data", str(tmp_path / "shards"), "--device", "cpu",
                "--max-new-tokens", "4", "--no-progress", "--save-predictions", str(tmp_path / "answers.jsonl"),
                "--out", str(tmp_path / "spar.json")) == 0
    result = json.loads((tmp_path / "spar.json").read_text())["spar"]
    assert set(result["tasks"]) == set(SPAR_TASKS) and set(result["counts"].values()) == {1}
    assert all(np.isfinite(result[group]) for group in ("overall", "low", "medium", "high"))
    for row_id, *_ in ROWS:
        official = EXPECTED_PROMPTS[row_id].replace("<image>", "")
        assert prompts[f"sparbench_{row_id}"].endswith(f"<|vision_end|>{official}<|im_end|>\n<|im_start|>assistant\n")
    saved = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert len(saved) == 20 and {item["task"] for item in saved} == set(SPAR_TASKS)
    assert "SPAR-Bench, 20 questions" in capsys.readouterr().out


@pytest.mark.parametrize("task", ["room_size", "obj_count"])
def test_tasks_outside_the_benchmark_have_no_official_prompt(task):
    from g2vlm.datamodules.convert.spar_bench import RowError, official_prompt

    with pytest.raises(RowError, match="not one of SPAR-Bench's 20 tasks"):
        official_prompt(task, "How big is the room?")
