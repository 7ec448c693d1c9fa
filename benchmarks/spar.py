"""SPAR-Bench (and any QA shards) scoring: per task, the Low / Medium / High groups as published, beside the paper;
plus the answer parsing of MindCube and OmniSpatial (end of file).

Scoring rules are SPAR-Bench's official lmms-eval task (`g2vlm.metrics.spatial_qa`; reference
data-and-benchmarks.md §1.5): MRA for the 8 numeric Low tasks, SPAR's lenient exact match for multiple choice,
the 5-axis MRA for view_change_infer; groups are unweighted means over their tasks with the 3-task Medium of the
published tables, Avg the mean of all 20. Questions of other tasks (the synthetic QA) are scored by
`g2vlm.lit.spatial_reasoning.score_qa` and reported per task, with numeric MRA and multiple-choice accuracy.

Answers come from a SpatialReasoning checkpoint (greedy, at most 100 new tokens, stop at `<|im_end|>`, as the
official task) or from saved predictions: JSONL lines {"key": KEY, "prediction": "..."} matched to the QA
shards' samples by key (lines may also carry "task" and "answer", then no shards are needed).
"""

from __future__ import annotations

import json
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


def group_averages(per_task: dict[str, float]) -> dict[str, float]:
    """SPAR-Bench aggregates (percent in, percent out) from per-task scores: `overall` over all tasks present,
    `low` / `medium` (3 tasks, as published) / `high` over the present tasks of each group (NaN when none)."""

    def mean(names: Iterable[str]) -> float:
        values = [per_task[name] for name in names if name in per_task and not math.isnan(per_task[name])]
        return sum(values) / len(values) if values else math.nan

    return {"overall": mean(SPAR_TASKS), "low": mean(LOW_TASKS), "medium": mean(MEDIUM_TASKS), "high": mean(HIGH_TASKS)}


def score_predictions(items: Iterable[tuple[str, str, str, str]]) -> dict:
    """items: (task, answer_type, prediction, answer) per question -> the benchmark record:
    {"tasks": {task: percent}, "counts": {task: n}, SPAR groups when SPAR tasks are present, "numeric_mra",
    "choice_accuracy", "n_questions"}."""
    from g2vlm.lit.spatial_reasoning import score_qa

    scores: dict[str, list[float]] = defaultdict(list)
    by_type: dict[str, list[float]] = defaultdict(list)
    for task, answer_type, prediction, answer in items:
        score = score_qa(task, answer_type, prediction, answer)
        scores[task].append(score)
        by_type[answer_type].append(score)
    per_task = {task: 100.0 * sum(values) / len(values) for task, values in sorted(scores.items())}
    record: dict = {"tasks": per_task, "counts": {task: len(values) for task, values in sorted(scores.items())},
                    "n_questions": sum(len(values) for values in scores.values())}
    for answer_type, key in (("numeric", "numeric_mra"), ("multiple_choice", "choice_accuracy")):
        values = by_type.get(answer_type, [])
        record[key] = 100.0 * sum(values) / len(values) if values else math.nan
    if any(task in SPAR_TASKS for task in per_task):
        record.update(group_averages(per_task))
    return record


def read_predictions(path: str | Path) -> dict[str, dict]:
    """JSONL of {"key", "prediction"[, "task", "answer", "answer_type"]} -> {key: line}. Clear errors name the line."""
    out = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not JSON ({error})") from None
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not isinstance(item.get("prediction"), str):
            raise ValueError(f"{path}:{number}: each line needs string fields 'key' and 'prediction'")
        out[item["key"]] = item
    return out


def checkpoint_answers(checkpoint: str | Path, shards: list[str], device: str, max_new_tokens: int = 100,
                       progress: bool = True, tokenizer: str | None = None) -> Iterator[tuple[str, str, str, str, str]]:
    """(key, task, answer_type, prediction, answer) for every sample of the QA shards, answered by a
    SpatialReasoning checkpoint (greedy; the image sizes of the checkpoint's QADataModule)."""
    from g2vlm.datamodules.clip_reader import SkipLog
    from g2vlm.datamodules.qa_shards import iter_qa_samples

    from g2vlm.lit.spatial_reasoning import load_reasoning_checkpoint, template_for

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


# ------------------------------------------------------------------ MindCube and OmniSpatial answer parsing
# (reference data-and-benchmarks.md §2; their scorers are exact match on the parsed letter)
_MINDCUBE_PATTERNS = (
    re.compile(r"\b([A-E])\."),                                                     # "X." anywhere
    re.compile(r"<Answer>\s*\(?([A-E])\)?", re.IGNORECASE),                        # inside <Answer> tags
    re.compile(r"(?:my answer is|answer is|answer\s*:)\s*\(?([A-E])\)?", re.IGNORECASE),  # "Answer: X", ...
    re.compile(r"^\s*\(?([A-E])\)?\s*$", re.MULTILINE),                             # a bare letter on a line
)
MINDCUBE_SETTINGS = ("around", "rotation", "translation", "among")


def mindcube_answer(text: str) -> str | None:
    """MindCube's extraction: the first pattern of its priority list that matches decides; its LAST match wins."""
    for pattern in _MINDCUBE_PATTERNS:
        found = pattern.findall(text)
        if found:
            return found[-1].upper()
    return None


def mindcube_setting(sample_id: str) -> str:
    """The setting a MindCube question belongs to, by a substring of its id (else `other`)."""
    return next((name for name in MINDCUBE_SETTINGS if name in sample_id), "other")


def mindcube_scores(items: Iterable[tuple[str, str, str]]) -> dict[str, float]:
    """items: (id, prediction, gt letter) -> accuracy (percent) per setting and `overall`, which leaves out
    `translation` as MindCube does."""
    correct: dict[str, list[float]] = defaultdict(list)
    for sample_id, prediction, answer in items:
        correct[mindcube_setting(sample_id)].append(float(mindcube_answer(prediction) == answer.strip().upper()))
    out = {name: 100.0 * sum(v) / len(v) for name, v in correct.items()}
    counted = [x for name, v in correct.items() if name != "translation" for x in v]
    out["overall"] = 100.0 * sum(counted) / len(counted) if counted else math.nan
    return out


def omnispatial_answer(text: str) -> str | None:
    """OmniSpatial's default extraction "Answer: X" (A-D), then a JSON {"answer": ...}, then a bare letter."""
    found = re.findall(r"Answer:\s*\(?([A-D])\)?", text)
    if found:
        return found[-1]
    match = re.search(r"\{[^{}]*\}", text)
    if match:
        try:
            value = json.loads(match.group(0)).get("answer")
        except (json.JSONDecodeError, AttributeError):
            value = None
        if isinstance(value, str) and value.strip()[:1].upper() in "ABCD" and value.strip():
            return value.strip()[0].upper()
    bare = text.strip().strip(".()").upper()
    return bare if bare in ("A", "B", "C", "D") else None
