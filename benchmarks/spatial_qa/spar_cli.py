"""`g2vlm bench spar` (`make bench-spar`): SPAR-Bench scoring of a checkpoint or of saved predictions.

    g2vlm shard spar-bench --parquet SPAR-Bench/data --out data/shards/spar-bench      # once, from the HF download
    g2vlm bench spar --ckpt runs/reasoning-demo/checkpoints/last.ckpt --data data/shards/spar-bench
    g2vlm bench spar --predictions outputs/model.jsonl --data data/shards/spar-bench --out runs/bench/spar.json
    g2vlm bench spar --predictions outputs/model.jsonl          # lines carrying task and answer too
    g2vlm bench spar --predictions logs/g2vlm/<date>_samples_sparbench.jsonl   # lmms-eval --log_samples output

--data is a folder (or glob) of QA shards: SPAR-Bench or SPAR-Bench-Tiny converted by `g2vlm shard spar-bench`
(each question already as the official lmms-eval task prompts it, so a checkpoint answers exactly those prompts;
keys `sparbench_<id>`), SPAR-7M's val split (`g2vlm shard spar --split val`) or synthetic QA
(`g2vlm shard synthetic-qa`). Prints the Avg / Low / Medium / High table beside the published rows and the
per-task table (Medium: the published 3-task mean; also the official code's own 2-task "Middle", labelled); --out
writes JSON {"spar": {...}, "env": {...}}. Scoring rules: g2vlm.benchmarks.spatial_qa.spar. Saved answers: our JSONL or
lmms-eval's samples file (g2vlm.benchmarks.spatial_qa.answers), scored as they come. With --data every question is scored:
one without a prediction counts as wrong and is reported.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

from g2vlm.benchmarks.command import reports_value_errors


def add_spar(benchmarks: argparse._SubParsersAction) -> None:
    parser = benchmarks.add_parser("spar", help="SPAR-Bench spatial QA (exact match + MRA; Low/Medium/High)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="QA shards: a folder (all *.tar in it) or a glob")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="SpatialReasoning checkpoint (read as tensors only, torch.load "
                                       "weights_only=True: runs no code from it)")
    source.add_argument("--predictions", metavar="JSONL", help='saved answers: {"key": ..., "prediction": ...} per line, '
                        "or lmms-eval --log_samples output (<date>_samples_sparbench.jsonl)")
    parser.add_argument("--tokenizer", help="tokenizer folder (default: the one the checkpoint records)")
    parser.add_argument("--max-new-tokens", type=int, default=100, help="generation length (default 100, as SPAR)")
    parser.add_argument("--save-predictions", metavar="JSONL", help="write the checkpoint's answers as JSONL")
    parser.add_argument("--out", metavar="FILE.json", help="write the results and the environment as JSON")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_spar)


def shard_paths(data: str) -> list[str]:
    path = Path(data)
    paths = sorted(str(p) for p in path.glob("*.tar")) if path.is_dir() else sorted(glob.glob(data))
    if not paths:
        raise ValueError(f"--data {data}: no QA shards (*.tar) there")
    return paths


def _items_from_predictions(args: argparse.Namespace) -> list[tuple[str, str, str, str | None, str]]:
    from g2vlm.benchmarks.spatial_qa.answers import read_saved_answers, report_unmatched

    answers = read_saved_answers(args.predictions, "spar")
    if args.data is None:
        lacking = next((a for a in answers.values() if a.task is None or a.answer is None), None)
        if lacking is not None:
            raise ValueError(f"{args.predictions}:{lacking.line}: no 'task' and 'answer' on this line: pass --data "
                             f"(the QA shards) to supply them")
        from g2vlm.datamodules.convert.spar_bench import answer_type

        return [(a.key, a.task, a.answer_type or answer_type(a.task), a.prediction, a.answer)
                for a in answers.values()]
    from g2vlm.datamodules.qa.shards import iter_qa_samples
    from g2vlm.datamodules.shards.skip_log import SkipLog

    items, missing = [], []
    for record in iter_qa_samples(shard_paths(args.data), SkipLog()):
        answer = answers.pop(record.key, None)
        if answer is None:
            missing.append(record.key)
        items.append((record.key, record.qa.task, record.qa.answer_type, None if answer is None else answer.prediction,
                      record.qa.final_answer))
    report_unmatched(answers, missing, len(items))
    return items


@reports_value_errors
def run_spar(args: argparse.Namespace) -> int:
    import torch

    from g2vlm.benchmarks import report
    from g2vlm.benchmarks.spatial_qa.spar import checkpoint_answers, score_predictions
    from g2vlm.output_paths import check_writable_file

    for option, path in (("--out", args.out), ("--save-predictions", args.save_predictions)):
        if path:
            check_writable_file(path, option)  # before answering every question, not after
    device = None
    if args.ckpt:
        if args.data is None:
            raise ValueError("--ckpt needs --data (the QA shards to answer)")
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        items = list(checkpoint_answers(args.ckpt, shard_paths(args.data), device, args.max_new_tokens,
                                        not args.no_progress, args.tokenizer))
        if args.save_predictions:
            Path(args.save_predictions).write_text("".join(
                json.dumps({"key": k, "task": t, "answer_type": a, "prediction": p, "answer": y}) + "\n"
                for k, t, a, p, y in items))
    else:
        items = _items_from_predictions(args)
    record = score_predictions((task, kind, prediction, answer) for _, task, kind, prediction, answer in items)
    print(format_tables(record, "checkpoint" if args.ckpt else "predictions"))
    if args.out:
        path = report.write_json(args.out, "spar", record, report.environment(device))
        print(f"[bench] results: {path}", file=sys.stderr)
    return 0


def format_tables(record: dict, source: str) -> str:
    from g2vlm.benchmarks import report
    from g2vlm.benchmarks.spatial_qa.spar import PAPER_TASK_NAMES, PUBLISHED_GROUPS, PUBLISHED_PER_TASK

    tables = []
    missing = f", {record['n_missing']} without a prediction (scored as wrong)" if record.get("n_missing") else ""
    if "overall" in record:
        columns = [("overall", "Avg", ".2f"), ("low", "Low", ".2f"), ("medium", "Medium", ".2f"), ("high", "High", ".2f"),
                   ("middle_official", "Middle (code)", ".2f")]
        rows = [(f"this run ({source})", record), *report.published_rows(PUBLISHED_GROUPS, "G2-T1b/T3")]
        tables.append(report.format_table(
            f"SPAR-Bench, {record['n_questions']} questions{missing}\n(Medium: the 3-task mean of the published tables; "
            f"Middle (code): the official code's own group, 2 tasks: its lookup drops view_change_infer)", columns, rows))
    spar_names = {task: name for name, task in PAPER_TASK_NAMES.items()}
    published = PUBLISHED_PER_TASK if any(task in spar_names for task in record["tasks"]) else {}
    columns = [("this run", "this run", ".2f"), ("n", "questions", "d"),
               *([("missing", "no prediction", "d")] if record.get("n_missing") else []),
               *((model, model, ".2f") for model in published)]
    rows = [(spar_names.get(task, task), {"this run": score, "n": record["counts"][task],
                                          "missing": record.get("missing", {}).get(task, 0),
                                          **{model: values.get(task) for model, values in published.items()}})
            for task, score in record["tasks"].items()]
    title = (f"per task ({source}; published: G2-T3); numeric MRA {record['numeric_mra']:.2f}, "
             f"multiple-choice accuracy {record['choice_accuracy']:.2f}")
    tables.append(report.format_table(title, columns, rows))
    return "\n\n".join(tables)
