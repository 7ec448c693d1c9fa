"""Saved answers of the spatial-QA benchmarks (`g2vlm bench spar|mindcube|omnispatial --predictions FILE`).

Two file shapes are read, one JSON object per line (blank lines skipped):
- ours: {"key": question id, "prediction": the model's answer as it came, optional "task", "answer" (the gt),
  "answer_type", "sub_task"} — all strings;
- lmms-eval's `--log_samples` output (`<date>_samples_<task>.jsonl`, written by `EvaluationTracker.
  save_results_samples`): {"doc_id": row of the task's split, "target", "filtered_resps" (the answer scored:
  ["..."] in lmms-eval 0.3 and SPAR's fork, "..." in newer versions, which log one request per doc flat),
  "doc" (the question's fields, only before lmms-eval 0.4), one entry per metric of the task (for SPAR-Bench the
  question's fields again, for OmniSpatial {"id", "gt_content", "task", "sub_task", "pred", ...}), ...}.
  What a benchmark takes from it is in `_from_lmms_eval`; the answer scored is `filtered_resps`, as lmms-eval
  scores it.

Every problem is one clear error naming the file and line: a line that is not JSON, a field of the wrong type,
a key seen on an earlier line (which line too).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCHMARKS = ("spar", "mindcube", "omnispatial")


@dataclass(frozen=True)
class SavedAnswer:
    """One saved answer. `key` is what the benchmark's questions are matched by: our lines' "key"; for lmms-eval
    lines `sparbench_<id>` (SPAR-Bench, as `g2vlm shard spar-bench` keys its samples), the question id (MindCube),
    `<task_type>/<id>` (OmniSpatial), or "row:<doc_id>" when the line has no id. `task` / `answer` / `sub_task` are
    None when the line does not carry them (then the benchmark's --data supplies them)."""

    key: str
    prediction: str
    line: int
    task: str | None = None
    answer: str | None = None
    sub_task: str | None = None
    answer_type: str | None = None
    extra: dict = field(default_factory=dict)


def json_lines(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """(line number from 1, value) of every non-blank line of the JSONL `text` read from `path`; a line that is not
    JSON is a ValueError naming `path:line`."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not JSON ({error})") from None


def report_unmatched(answers: dict[str, SavedAnswer], missing: list[str], total: int) -> None:
    """On stderr: the `missing` keys of the `total` questions of --data (scored as wrong) and the `answers` left
    over, which match no question (ignored)."""
    if missing:
        print(f"[bench] {len(missing)} of {total} questions have no prediction (e.g. {', '.join(missing[:3])}): "
              f"scored as wrong", file=sys.stderr)
    if answers:
        extra = next(iter(answers.values()))
        print(f"[bench] {len(answers)} predictions match no question of --data (e.g. {extra.key!r}, line "
              f"{extra.line}): ignored", file=sys.stderr)


def read_saved_answers(path: str | Path, benchmark: str) -> dict[str, SavedAnswer]:
    """{key: answer} from our JSONL or an lmms-eval samples file (see the module docstring)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"read_saved_answers: unknown benchmark {benchmark!r}")
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(f"{path}: cannot read ({error.strerror or error})") from None
    answers: dict[str, SavedAnswer] = {}
    for number, item in json_lines(path, text):
        if not isinstance(item, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(item).__name__}")
        where = f"{path}:{number}"
        answer = _from_lmms_eval(item, benchmark, where, number) if "filtered_resps" in item else \
            _from_ours(item, where, number)
        if answer.key in answers:
            raise ValueError(f"{where}: key {answer.key!r} already on line {answers[answer.key].line}")
        answers[answer.key] = answer
    return answers


def _string(item: dict, name: str, where: str, required: bool = True) -> str | None:
    value = item.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        kind = "missing" if name not in item else f"a {type(value).__name__}, not a string"
        raise ValueError(f"{where}: field {name!r} is {kind}")
    return value


def _from_ours(item: dict, where: str, number: int) -> SavedAnswer:
    return SavedAnswer(key=_string(item, "key", where), prediction=_string(item, "prediction", where), line=number,
                       task=_string(item, "task", where, False), answer=_string(item, "answer", where, False),
                       sub_task=_string(item, "sub_task", where, False),
                       answer_type=_string(item, "answer_type", where, False))


def _from_lmms_eval(item: dict, benchmark: str, where: str, number: int) -> SavedAnswer:
    response = item["filtered_resps"]
    if isinstance(response, list):  # one request per doc for generate_until tasks: its answer
        if not response:
            raise ValueError(f"{where}: field 'filtered_resps' is an empty list")
        response = response[0]
    if not isinstance(response, str):
        raise ValueError(f"{where}: field 'filtered_resps' holds a {type(response).__name__}, not the answer string")
    doc = item.get("doc") if isinstance(item.get("doc"), dict) else None
    if benchmark == "spar":
        fields = doc or item.get("sparbench_score")
        if not isinstance(fields, dict):
            raise ValueError(f"{where}: an lmms-eval line without 'doc' or 'sparbench_score' (not a SPAR-Bench sample)")
        question = _question_id(fields, item, where)  # the shards of `g2vlm shard spar-bench` are keyed sparbench_<id>
        return SavedAnswer(key=question if question.startswith("row:") else f"sparbench_{question}", prediction=response,
                           line=number, task=_string(fields, "task", where), answer=_string(fields, "answer", where))
    if benchmark == "omnispatial":
        fields = item.get("omnispatial")
        if isinstance(fields, dict):  # the official task's metric entry
            task, sub_task, gt = (_string(fields, name, where) for name in ("task", "sub_task", "gt_content"))
            sub_task = sub_task.removeprefix("omnispatial_")
        elif doc is not None:
            task, sub_task, gt = (_string(doc, name, where) for name in ("task_type", "sub_task_type", "gt"))
        else:
            raise ValueError(f"{where}: an lmms-eval line without 'omnispatial' or 'doc' (not an OmniSpatial sample)")
        return SavedAnswer(key=f"{task}/{_question_id(fields if isinstance(fields, dict) else doc, item, where)}",
                           prediction=response, line=number, task=task, answer=gt, sub_task=sub_task)
    # mindcube: the question id and gt letter are in the doc (lmms-eval < 0.4); newer logs carry neither, and the
    # question is found by its row in --data
    if doc is not None:
        return SavedAnswer(key=_question_id(doc, item, where), prediction=response, line=number,
                           answer=_string(doc, "gt_answer", where))
    return SavedAnswer(key=f"row:{_doc_id(item, where)}", prediction=response, line=number)


def _question_id(fields: dict, item: dict, where: str) -> str:
    if "id" in fields and isinstance(fields["id"], (str, int)) and not isinstance(fields["id"], bool):
        return str(fields["id"])
    return f"row:{_doc_id(item, where)}"


def _doc_id(item: dict, where: str) -> int:
    value = item.get("doc_id")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where}: field 'doc_id' is not an integer")
    return value
