"""SPAR-Bench (and any QA shards) scoring: per task, the Low / Medium / High groups as published, beside the paper;
plus the scoring of MindCube and OmniSpatial (end of file).

Scoring rules are SPAR-Bench's official lmms-eval task (fudan-zvg/spar `lmms-eval/lmms_eval/tasks/sparbench/
utils.py`; `g2vlm.metrics.spatial_qa`): MRA for the 8 numeric Low tasks, SPAR's lenient exact match for multiple
choice, the 5-axis MRA for view_change_infer; Avg the mean of all 20 task scores. Quirks kept for comparability:
- the answer is scored as it comes, not stripped: a leading space or newline (lmms-eval's Qwen2-VL wrapper in
  SPAR's fork returns them) fails the multiple-choice rules and hides a view-change action key;
- an empty answer counts as correct in multiple choice (the empty string is a substring of every answer);
- "Answer: A" is correct when the answer is A (its first character, lower-cased, is "a");
- the view-change MRA divides by the predicted axis value (the official code swaps its arguments);
- Medium is printed twice: the 3-task mean of the published tables (`medium`) and the official code's own
  "Middle" (`middle_official`, 2 tasks: its group lookup drops view_change_infer_vci_metric).
Questions of other tasks (the synthetic QA) are scored by `g2vlm.lit.spatial_reasoning.score_qa` and reported
per task, with numeric MRA and multiple-choice accuracy. A question without a prediction scores 0 and is counted.

Answers come from a SpatialReasoning checkpoint (greedy, at most 100 new tokens, stop at `<|im_end|>`, as the
official task) or from saved answers (`g2vlm.benchmarks.spatial_qa.answers`: our JSONL or lmms-eval `--log_samples`).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from g2vlm.metrics.spatial_qa import HIGH_TASKS, LOW_TASKS, MEDIUM_TASKS, SPAR_TASKS

# Paper names of the 20 SPAR-Bench tasks (G²VLM Table 3) -> task keys.
PAPER_TASK_NAMES = {
    "Depth-OC": "depth_prediction_oc", "Depth-OC-MV": "depth_prediction_oc_mv",
    "Depth-OO": "depth_prediction_oo", "Depth-OO-MV": "depth_prediction_oo_mv",
    "Dist-OC": "distance_prediction_oc", "Dist-OC-MV": "distance_prediction_oc_mv",
    "Dist-OO": "distance_prediction_oo", "Dist-OO-MV": "distance_prediction_oo_mv",
    "PosMatch": "position_matching", "CamMotion": "camera_motion_infer", "ViewChgI": "view_change_infer",
    "DistI-OO": "distance_infer_center_oo", "DistI-OO-MV": "distance_infer_center_oo_mv",
    "ObjRel-OC-MV": "obj_spatial_relation_oc_mv", "ObjRel-OO": "obj_spatial_relation_oo",
    "ObjRel-OO-MV": "obj_spatial_relation_oo_mv", "SpImag-OC": "spatial_imagination_oc",
    "SpImag-OC-MV": "spatial_imagination_oc_mv", "SpImag-OO": "spatial_imagination_oo",
    "SpImag-OO-MV": "spatial_imagination_oo_mv",
}

# Per-task published numbers (G2-T3 supplementary; reference g2vlm-official.md §6.4), in PAPER_TASK_NAMES order.
_PER_TASK_ROWS = {
    "G²VLM-SR-2B": (80.27, 73.75, 21.42, 18.87, 78.44, 75.17, 68.44, 63.55, 27.0, 28.2, 53.3, 53.5, 49.1, 76.8, 50.0,
                    68.7, 50.5, 52.6, 44.4, 63.0),
    "Qwen2-VL-2B": (38.03, 40.63, 18.84, 14.09, 7.81, 7.07, 17.82, 11.14, 26.21, 25.25, 31.20, 54.12, 49.11, 21.75,
                    25.27, 12.47, 23.92, 27.62, 24.83, 14.85),
    "VLM3R-7B": (47.8, 45.6, 40.1, 20.6, 42.2, 44.3, 40.1, 37.5, 42, 30, 13.3, 55.9, 59.2, 58.8, 53, 54.6, 47.3, 50.6,
                 30.5, 50.7),
    "GPT-4o (tiny)": (53.80, 45.00, 15.00, 13.60, 37.40, 34.40, 23.40, 24.40, 30, 16, 28.80, 64, 64, 58, 46, 46, 32, 44,
                      30, 22),
    "Human (tiny)": (72.75, 74.25, 28.75, 36.25, 78.25, 52.25, 66.5, 33.50, 92, 64, 60.97, 80, 94, 70, 92, 80, 78, 82,
                     50, 60),
}
PUBLISHED_PER_TASK: dict[str, dict[str, float]] = {
    model: dict(zip(PAPER_TASK_NAMES.values(), values)) for model, values in _PER_TASK_ROWS.items()
}
# Published group averages (Avg / Low / Medium / High; G2-T1b, G2-T3).
PUBLISHED_GROUPS: dict[str, dict[str, float]] = {
    "Human (tiny)": {"overall": 67.27, "low": 55.31, "medium": 72.32, "high": 76.22},
    "GPT-4o (tiny)": {"overall": 36.39, "low": 29.25, "medium": 24.93, "high": 45.11},
    "Qwen2-VL-2B": {"overall": 24.60, "low": 19.43, "medium": 27.55, "high": 28.22},
    "VLM3R-7B": {"overall": 43.21, "low": 39.78, "medium": 28.43, "high": 51.18},
    "G²VLM-2B": {"overall": 41.66, "low": 56.49, "medium": 32.60, "high": 31.49},
    "G²VLM-SR-2B": {"overall": 54.87, "low": 59.99, "medium": 36.27, "high": 56.51},
}


# The official code's own "Middle": its group lookup strips the last `_token` of each metric key, so
# `view_change_infer_vci_metric` becomes `view_change_infer_vci`, which is no task name, and falls out.
OFFICIAL_CODE_MIDDLE_TASKS = tuple(task for task in MEDIUM_TASKS if task != "view_change_infer")


def group_averages(per_task: dict[str, float]) -> dict[str, float]:
    """SPAR-Bench aggregates (percent in, percent out) from per-task scores: `overall` over all tasks present,
    `low` / `medium` (3 tasks, as the published tables) / `high` over the present tasks of each group, and
    `middle_official` (the official code's 2-task "Middle", see OFFICIAL_CODE_MIDDLE_TASKS); NaN when none."""

    def mean(names: Iterable[str]) -> float:
        values = [per_task[name] for name in names if name in per_task and not math.isnan(per_task[name])]
        return sum(values) / len(values) if values else math.nan

    return {"overall": mean(SPAR_TASKS), "low": mean(LOW_TASKS), "medium": mean(MEDIUM_TASKS), "high": mean(HIGH_TASKS),
            "middle_official": mean(OFFICIAL_CODE_MIDDLE_TASKS)}


def score_predictions(items: Iterable[tuple[str, str, str | None, str]]) -> dict:
    """items: (task, answer_type, prediction, answer) per question; prediction None = the question has no
    prediction (it scores 0) -> the benchmark record: {"tasks": {task: percent}, "counts": {task: n}, SPAR groups
    when SPAR tasks are present, "numeric_mra", "choice_accuracy", "n_questions", "n_missing",
    "missing": {task: n}}."""
    from g2vlm.lit.spatial_reasoning import score_qa

    scores: dict[str, list[float]] = defaultdict(list)
    by_type: dict[str, list[float]] = defaultdict(list)
    missing: dict[str, int] = defaultdict(int)
    for task, answer_type, prediction, answer in items:
        if prediction is None:
            score = 0.0
            missing[task] += 1
        else:
            score = score_qa(task, answer_type, prediction, answer)
        scores[task].append(score)
        by_type[answer_type].append(score)
    per_task = {task: 100.0 * sum(values) / len(values) for task, values in sorted(scores.items())}
    record: dict = {"tasks": per_task, "counts": {task: len(values) for task, values in sorted(scores.items())},
                    "n_questions": sum(len(values) for values in scores.values()),
                    "n_missing": sum(missing.values()), "missing": dict(sorted(missing.items()))}
    for answer_type, key in (("numeric", "numeric_mra"), ("multiple_choice", "choice_accuracy")):
        values = by_type.get(answer_type, [])
        record[key] = 100.0 * sum(values) / len(values) if values else math.nan
    if any(task in SPAR_TASKS for task in per_task):
        record.update(group_averages(per_task))
    return record


def checkpoint_answers(checkpoint: str | Path, shards: list[str], device: str, max_new_tokens: int = 100,
                       progress: bool = True, tokenizer: str | None = None) -> Iterator[tuple[str, str, str, str, str]]:
    """(key, task, answer_type, prediction, answer) for every sample of the QA shards, answered by a
    SpatialReasoning checkpoint (greedy; the image sizes of the checkpoint's QADataModule)."""
    from g2vlm.datamodules.qa.shards import iter_qa_samples
    from g2vlm.datamodules.shards.skip_log import SkipLog
    from g2vlm.inference import load_reasoning_checkpoint, template_for

    module, record = load_reasoning_checkpoint(checkpoint, device, tokenizer)
    template = template_for(module, record)
    skips = SkipLog()
    records = iter_qa_samples(shards, skips)
    if progress:
        from tqdm import tqdm

        records = tqdm(records, unit="question", desc="spar")
    for qa_record in records:
        sample = template.build(qa_record)
        yield sample.key, sample.task, sample.answer_type, module.answer(sample, max_new_tokens), sample.answer


# ------------------------------------------------------------------ MindCube and OmniSpatial scoring
# MindCube: the official `extract_answer` (mll-lab-nu/MindCube src/evaluation/core/extractors.py) and its basic
# evaluator (src/evaluation/evaluator.py, core/base_metrics.py). Patterns are tried in priority order; the first
# that matches decides, with its LAST match. Letters are A-E, upper case only (a lower-case "d" is no answer).
_MINDCUBE_FIRST = re.compile(r"([A-E])\.")  # "X." anywhere
_MINDCUBE_TAG = re.compile(r"<Answer>(.*?)(?:<|$)", re.DOTALL)  # the text after the first <Answer> tag
_MINDCUBE_IN_TAG = tuple(re.compile(p) for p in (
    r"[Mm]y answer is ([A-E])", r"[Mm]y answer is ([A-E])\.", r"[Tt]he answer is ([A-E])", r"(?:Answer: )?([A-E])\.",
    r"\b([A-E])\b"))
_MINDCUBE_PRIORITY = tuple(re.compile(p) for p in (
    r'(?:Answer: )?([A-E])\. [A-Za-z0-9 \-\(\)\'",]+(?=(?:\n|$|\.|"))',  # letter, ". ", a description
    r'(?:Answer: )?([A-E])\. [A-Za-z0-9 \-\(\)\'"]+',
    r"(?:^|\n)(?:Answer: )?([A-E])(?:\.|$|\s)",  # a letter at a line start
    r"[\*\"]([A-E])[\*\"]",  # in quotes or asterisks
    r"\bAnswer:?\s*([A-E])\b",
    r"[Mm]y answer is ([A-E])",
    r"[Mm]y answer is ([A-E])\.",
    r"answer is ([A-E])",
))
_MINDCUBE_LINE_DESCRIBED = re.compile(r'([A-E])\. [A-Za-z0-9 \-\(\)\'",]+')
_MINDCUBE_LINE_BARE = re.compile(r"\b([A-E])\b")
MINDCUBE_SETTINGS = ("around", "rotation", "translation", "among", "other")
MINDCUBE_OVERALL_EXCLUDES = ("translation",)


def mindcube_answer(text: str) -> str | None:
    """The letter MindCube's `extract_answer` reads from a response, or None. Quirks kept: the "X." pattern
    outranks everything (so "I pick B. C is wrong" reads B, and "e.g. A." reads A); lower-case letters never
    count; a bare letter anywhere on the last line that has one ("I think it is B") is the last resort."""
    if not text:
        return None
    found = _MINDCUBE_FIRST.findall(text)
    if found:
        return found[-1]
    tag = _MINDCUBE_TAG.search(text)
    if tag:
        for pattern in _MINDCUBE_IN_TAG:
            found = pattern.findall(tag.group(1))
            if found:
                return found[-1]
    for pattern in _MINDCUBE_PRIORITY:
        found = pattern.findall(text)
        if found:
            return found[-1]
    lines = text.split("\n")
    described = [match.group(1) for line in lines if (match := _MINDCUBE_LINE_DESCRIBED.search(line))]
    if described:
        return described[-1]
    for line in reversed(lines):
        match = _MINDCUBE_LINE_BARE.search(line)
        if match:
            return match.group(1)
    return None


def mindcube_setting(sample_id: str) -> str:
    """The setting of a MindCube question: the first of around, rotation, translation, among found in its lower-cased
    id (else `other`), as the official `get_setting_from_id`."""
    lowered = sample_id.lower()
    return next((name for name in MINDCUBE_SETTINGS[:-1] if name in lowered), "other")


def mindcube_scores(items: Iterable[tuple[str, str | None, str]]) -> dict:
    """items: (question id, response, gt letter) -> accuracy (percent) per setting that has questions, `overall`
    (all settings but translation, as the official evaluator) and counts. A question whose gt letter is empty is
    skipped, as officially; the gt letter is compared as it is (the official code does not normalise it). A
    response None (no prediction) is wrong."""
    correct: dict[str, list[float]] = defaultdict(list)
    for sample_id, response, answer in items:
        if not answer:
            continue
        extracted = None if response is None else mindcube_answer(response)
        correct[mindcube_setting(sample_id)].append(float(extracted is not None and extracted == answer))
    out: dict = {name: 100.0 * sum(v) / len(v) for name, v in correct.items()}
    counted = [x for name, v in correct.items() if name not in MINDCUBE_OVERALL_EXCLUDES for x in v]
    out["overall"] = 100.0 * sum(counted) / len(counted) if counted else math.nan
    out["counts"] = {name: len(v) for name, v in correct.items()}
    return out


# OmniSpatial: the official default scorer, `eval_type="re"` of qizekun/OmniSpatial `api_eval.py: process_info`.
_OMNISPATIAL_ANSWER = re.compile(r"Answer\s*:\s*([A-D])\b", re.IGNORECASE)
OMNISPATIAL_REPORTED = ("Spatial_Interaction", "Perspective_Taking")  # G²VLM's OmniSpatial*: SI and PT


def omnispatial_answer(text: str) -> str:
    """The letter OmniSpatial's default ("re") scorer reads: the LAST "Answer: X" (case-insensitive; X in A-D as
    written, so "answer: b" reads "b", which never equals the upper-case gt letter), else "A" (an unparsed response
    counts as answering A: right whenever the answer is A)."""
    found = _OMNISPATIAL_ANSWER.findall(text)
    return found[-1] if found else "A"


def omnispatial_scores(items: Iterable[tuple[str, str, str | None, str]]) -> dict:
    """items: (task_type, sub_task_type, response, gt letter) -> accuracy (percent) overall, per task type and per
    sub-task, `reported` (SI and PT pooled, G²VLM's "OmniSpatial*" average) and counts. A response None (no
    prediction) is wrong."""
    by_task: dict[str, list[float]] = defaultdict(list)
    by_sub_task: dict[str, list[float]] = defaultdict(list)
    for task, sub_task, response, answer in items:
        flag = float(response is not None and omnispatial_answer(response) == answer)
        by_task[task].append(flag)
        by_sub_task[sub_task].append(flag)

    def percent(values: list[float]) -> float:
        return 100.0 * sum(values) / len(values) if values else math.nan

    every = [x for v in by_task.values() for x in v]
    reported = [x for name in OMNISPATIAL_REPORTED for x in by_task.get(name, [])]
    return {"overall": percent(every), "reported": percent(reported),
            "tasks": {name: percent(v) for name, v in sorted(by_task.items())},
            "sub_tasks": {name: percent(v) for name, v in sorted(by_sub_task.items())},
            "counts": {name: len(v) for name, v in sorted(by_task.items())}}
