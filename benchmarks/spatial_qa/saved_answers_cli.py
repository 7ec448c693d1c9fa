"""`g2vlm bench mindcube|omnispatial`: score saved answers with the official scorers (g2vlm.benchmarks.spatial_qa.spar, end).

    g2vlm bench mindcube --predictions logs/g2vlm/<date>_samples_mindcube_tiny.jsonl
    g2vlm bench mindcube --predictions answers.jsonl --data MindCube_tinybench.jsonl --out runs/bench/mindcube.json
    g2vlm bench omnispatial --predictions logs/g2vlm/<date>_samples_omnispatial_test.jsonl
    g2vlm bench omnispatial --predictions answers.jsonl --data OmniSpatial-test/data.json

--predictions: our JSONL ({"key", "prediction"[, "answer", "task", "sub_task"]}; MindCube keys are question ids,
OmniSpatial keys "<task_type>/<id>") or lmms-eval's --log_samples output (g2vlm.benchmarks.spatial_qa.answers).
--data: the benchmark's own question file, which supplies the gt (and OmniSpatial's task types) and makes every
question count: one without a prediction is wrong and reported. MindCube: its JSONL (id, gt_answer, ...); lmms-eval
0.4+ logs carry no question id, so their lines are matched by row (`doc_id`) to the file's lines, which must be
the questions lmms-eval evaluated, in its order. OmniSpatial: its data.json (list of {id, answer (option index),
task_type, sub_task_type, ...}).
Prints the scores beside the published rows (G²VLM Table 1b); --out writes JSON {"<benchmark>": {...}, "env"}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from g2vlm.benchmarks.command import reports_value_errors

PUBLISHED_MINDCUBE = {  # Overall / Rotation / Among / Around (G2-T1b; reference data-and-benchmarks.md §8.5)
    "GPT-4o": (38.81, 32.65, 40.17, 29.16), "Qwen2.5-VL-7B": (29.26, 38.76, 29.50, 21.35),
    "Qwen2-VL-2B": (37.83, 34.50, 41.16, 32.25), "G²VLM-2B": (38.83, 47.00, 26.50, 32.75),
    "G²VLM-SR-2B": (48.33, 53.17, 31.50, 49.50),
}
PUBLISHED_OMNISPATIAL = {  # OmniSpatial*: Avg (SI and PT pooled) / SI / PT (G2-T1b)
    "GPT-4o": (50.74, 59.31, 46.16), "Qwen2.5-VL-7B": (41.83, 46.20, 39.50), "Qwen2-VL-2B": (43.90, 49.00, 41.18),
    "G²VLM-2B": (44.13, 42.67, 44.92), "G²VLM-SR-2B": (50.41, 52.67, 49.20),
}


def add_to(benchmarks: argparse._SubParsersAction) -> None:
    for name, help_text in (("mindcube", "MindCube answer accuracy (official extract_answer; Overall/Rotation/Among/"
                                          "Around)"),
                            ("omnispatial", "OmniSpatial answer accuracy (official default 'Answer: X' scorer; "
                                            "OmniSpatial* = SI + PT)")):
        parser = benchmarks.add_parser(name, help=help_text, description=f"{help_text}. {__doc__}",
                                       formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--predictions", required=True, metavar="JSONL",
                            help="saved answers: our JSONL or lmms-eval --log_samples output")
        parser.add_argument("--data", metavar="FILE", help="the benchmark's question file (MindCube JSONL, OmniSpatial "
                                                           "data.json): gt answers, every question counted")
        parser.add_argument("--out", metavar="FILE.json", help="write the results and the environment as JSON")
        parser.set_defaults(run=run)


@reports_value_errors
def run(args: argparse.Namespace) -> int:
    from g2vlm.benchmarks import report
    from g2vlm.benchmarks.spatial_qa.answers import read_saved_answers

    answers = read_saved_answers(args.predictions, args.benchmark)
    questions = _read_questions(args.benchmark, Path(args.data)) if args.data else None
    if args.benchmark == "mindcube":
        record, table = _mindcube(args, answers, questions)
    else:
        record, table = _omnispatial(args, answers, questions)
    print(table)
    if args.out:
        path = report.write_json(args.out, args.benchmark, record, report.environment(None))
        print(f"[bench] results: {path}", file=sys.stderr)
    return 0


def _read_questions(benchmark: str, path: Path) -> list[dict]:
    """The question file as a list of records, each checked for the fields scoring needs (errors name the line or
    the entry)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(f"--data {path}: cannot read ({error.strerror or error})") from None
    if benchmark == "mindcube":
        from g2vlm.benchmarks.spatial_qa.answers import json_lines

        records = []
        for number, record in json_lines(path, text):
            if not isinstance(record, dict) or not isinstance(record.get("id"), str) \
                    or not isinstance(record.get("gt_answer", ""), str):
                raise ValueError(f"{path}:{number}: a MindCube question needs a string 'id' and 'gt_answer'")
            records.append(record)
        return records
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error})") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected OmniSpatial's data.json, a list of questions")
    for index, record in enumerate(records):
        if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in
                                                   ("id", "task_type", "sub_task_type")) \
                or not isinstance(record.get("answer"), int) or isinstance(record.get("answer"), bool):
            raise ValueError(f"{path}: entry {index} needs string 'id', 'task_type', 'sub_task_type' and an integer "
                             f"'answer' (the option index)")
    return records


def _mindcube(args, answers: dict, questions: list[dict] | None) -> tuple[dict, str]:
    from g2vlm.benchmarks import report
    from g2vlm.benchmarks.spatial_qa.answers import report_unmatched
    from g2vlm.benchmarks.spatial_qa.spar import mindcube_scores

    if questions is None:
        lacking = next((a for a in answers.values() if a.answer is None or a.key.startswith("row:")), None)
        if lacking is not None:
            raise ValueError(f"{args.predictions}:{lacking.line}: no question id and gt answer on this line (lmms-eval "
                             f"0.4+ logs none): pass the MindCube questions with --data")
        items = [(a.key, a.prediction, a.answer) for a in answers.values()]
        missing: list[str] = []
    else:
        items, missing = [], []
        for row, question in enumerate(questions):
            answer = answers.pop(question["id"], None) or answers.pop(f"row:{row}", None)
            if answer is None:
                missing.append(question["id"])
            items.append((question["id"], None if answer is None else answer.prediction, question.get("gt_answer", "")))
        report_unmatched(answers, missing, len(questions))
    record = mindcube_scores(items)
    record["n_missing"] = len(missing)
    rows = [(f"this run ({len(items)} answers)", record),
            *report.published_rows({model: dict(zip(("overall", "rotation", "among", "around"), values))
                                    for model, values in PUBLISHED_MINDCUBE.items()}, "G2-T1b")]
    columns = [("overall", "Overall", ".2f"), ("rotation", "Rotation", ".2f"), ("among", "Among", ".2f"),
               ("around", "Around", ".2f"), ("translation", "Translation", ".2f"), ("other", "Other", ".2f")]
    title = ("MindCube (official extract_answer; Overall leaves out translation, as the official evaluator)"
             + (f", {len(missing)} without a prediction (scored as wrong)" if missing else ""))
    return record, report.format_table(title, columns, rows)


def _omnispatial(args, answers: dict, questions: list[dict] | None) -> tuple[dict, str]:
    from g2vlm.benchmarks import report
    from g2vlm.benchmarks.spatial_qa.answers import report_unmatched
    from g2vlm.benchmarks.spatial_qa.spar import OMNISPATIAL_REPORTED, omnispatial_scores

    if questions is None:
        lacking = next((a for a in answers.values() if a.answer is None or a.task is None), None)
        if lacking is not None:
            raise ValueError(f"{args.predictions}:{lacking.line}: no 'answer' and 'task' on this line: pass "
                             f"OmniSpatial's data.json with --data")
        items = [(a.task, a.sub_task or "", a.prediction, a.answer) for a in answers.values()]
        missing: list[str] = []
    else:
        items, missing = [], []
        for question in questions:
            key = f"{question['task_type']}/{question['id']}"
            answer = answers.pop(key, None)
            if answer is None:
                missing.append(key)
            # a missing prediction is wrong (not an unparsed response, which the official scorer reads as A)
            items.append((question["task_type"], question["sub_task_type"],
                          None if answer is None else answer.prediction, chr(65 + question["answer"])))
        report_unmatched(answers, missing, len(questions))
    record = omnispatial_scores(items)
    record["n_missing"] = len(missing)
    flat = {"reported": record["reported"], "overall": record["overall"],
            **{name: record["tasks"].get(name) for name in record["tasks"]}}
    rows = [(f"this run ({len(items)} answers)", flat),
            *report.published_rows({model: dict(zip(("reported", *OMNISPATIAL_REPORTED), values))
                                    for model, values in PUBLISHED_OMNISPATIAL.items()}, "G2-T1b")]
    columns = [("reported", "OmniSpatial*", ".2f"), ("Spatial_Interaction", "SI", ".2f"),
               ("Perspective_Taking", "PT", ".2f"), ("overall", "all 4", ".2f"),
               ("Dynamic_Reasoning", "DR", ".2f"), ("Complex_Logic", "CL", ".2f")]
    title = ("OmniSpatial (official default scorer: the last 'Answer: X', case-insensitive; unparsed reads A; "
             "OmniSpatial* = SI and PT pooled)" + (f", {len(missing)} without a prediction (scored as wrong)"
                                                    if missing else ""))
    return record, report.format_table(title, columns, rows)
