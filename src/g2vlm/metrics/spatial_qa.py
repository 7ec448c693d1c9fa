"""Spatial-QA scoring as SPAR-Bench's official lmms-eval task (reference data-and-benchmarks.md §1.5).

- Numeric tasks: Mean Relative Accuracy over thresholds θ ∈ {0.50, 0.55, ..., 0.95}:
  MRA = mean_θ 1[|ŷ - y| / |y| <= 1 - θ] (absolute error when y = 0). Numbers are pulled from the answer
  text (integers and decimals not preceded by "^"); single-view tasks take the first, `_mv` tasks the last
  (-1 when none); any other parse failure scores 0.
- Multiple choice: "exact match" with SPAR's leniency — lower-cased, correct if equal, if the prediction is a
  substring of the target (so an empty prediction counts as correct), or if its first character equals the
  target.
- view_change_infer: both strings are `action:value` lists reduced to 5 signed axes; the score is the mean
  MRA over the axes. As in the official code the relative error there is normalised by the *predicted*
  axis value (its arguments are swapped); parse failures score 0.
- Aggregation: per-task means; `overall` = unweighted mean of the task scores; Low / Medium (3 tasks, as the
  published tables) / High = unweighted means over their tasks; all × 100.
"""

from __future__ import annotations

import re

import torch
from torchmetrics import Metric

# numpy.linspace(0.5, 0.95, 10) exactly, as the official code builds them
MRA_THRESHOLDS = tuple(0.5 + i * ((0.95 - 0.5) / 9) for i in range(10))

LOW_TASKS = (
    "depth_prediction_oc",
    "depth_prediction_oo",
    "distance_prediction_oc",
    "distance_prediction_oo",
    "depth_prediction_oc_mv",
    "depth_prediction_oo_mv",
    "distance_prediction_oo_mv",
    "distance_prediction_oc_mv",
)
MEDIUM_TASKS = ("view_change_infer", "position_matching", "camera_motion_infer")
HIGH_TASKS = (
    "obj_spatial_relation_oo",
    "obj_spatial_relation_oc_mv",
    "obj_spatial_relation_oo_mv",
    "spatial_imagination_oc",
    "spatial_imagination_oo",
    "spatial_imagination_oc_mv",
    "spatial_imagination_oo_mv",
    "distance_infer_center_oo",
    "distance_infer_center_oo_mv",
)
SPAR_TASKS = LOW_TASKS + MEDIUM_TASKS + HIGH_TASKS
NUMERIC_TASKS = LOW_TASKS
MULTIPLE_CHOICE_TASKS = ("position_matching", "camera_motion_infer") + HIGH_TASKS
_MULTI_VIEW_NUMERIC = ("depth_prediction_oc_mv", "depth_prediction_oo_mv", "distance_prediction_oc_mv", "distance_prediction_oo_mv")
_NUMBER = re.compile(r"(?<!\^)\d+\.\d+|(?<!\^)\d+")


def mean_relative_accuracy(prediction: float, target: float) -> float:
    """MRA of one numeric answer over θ = 0.50:0.95:0.05 (relative error; absolute error when target is 0)."""
    error = abs(prediction - target) if target == 0 else abs((prediction - target) / target)
    return sum(error <= 1.0 - theta for theta in MRA_THRESHOLDS) / len(MRA_THRESHOLDS)


def exact_match(prediction: str, target: str) -> float:
    """SPAR-Bench's lenient multiple-choice match (see the module docstring)."""
    prediction, target = prediction.lower(), target.lower()
    if prediction == target or prediction in target:
        return 1.0
    return 1.0 if prediction[0] == target else 0.0


def parse_number(prediction: str, task: str) -> float | None:
    """The number SPAR-Bench reads from an answer: first (single view) or last (`_mv`, -1 if none)."""
    numbers = [float(n) for n in _NUMBER.findall(prediction)]
    if task in _MULTI_VIEW_NUMERIC:
        return numbers[-1] if numbers else -1.0
    return numbers[0] if numbers else None


def view_change_score(prediction: str, answer: str) -> float:
    """Mean MRA over the 5 signed axes of `action:value` lists (0 on a parse failure)."""
    try:
        predicted_axes = _view_change_axes(prediction)
        answer_axes = _view_change_axes(answer)
    except ValueError:
        return 0.0
    # official argument order: the predicted axis value plays the role of the target
    return sum(mean_relative_accuracy(a, p) for a, p in zip(answer_axes, predicted_axes)) / 5.0


def _view_change_axes(text: str) -> list[float]:
    pairs = {}
    for item in text.split(","):
        key, value = item.split(":")
        pairs[key] = float(value)
    return [
        pairs.get("move_right", 0) - pairs.get("move_left", 0),
        pairs.get("move_up", 0) - pairs.get("move_down", 0),
        pairs.get("move_forward", 0) - pairs.get("move_backward", 0),
        pairs.get("rotate_right", 0) - pairs.get("rotate_left", 0),
        pairs.get("rotate_up", 0) - pairs.get("rotate_down", 0),
    ]


def score_answer(task: str, prediction: str, answer: str) -> float:
    """Score in [0, 1] of one SPAR-Bench answer."""
    if task in MULTIPLE_CHOICE_TASKS:
        return exact_match(prediction, answer)
    if task in NUMERIC_TASKS:
        number = parse_number(prediction, task)
        try:
            return mean_relative_accuracy(number, float(answer)) if number is not None else 0.0
        except ValueError:
            return 0.0
    if task == "view_change_infer":
        return view_change_score(prediction, answer)
    raise ValueError(f"score_answer: unknown SPAR-Bench task {task!r}")


class SparBenchScore(Metric):
    """Per-task SPAR-Bench scores and the Avg / Low / Medium / High aggregates (percent).

    `update(tasks, predictions, answers)` takes three equal-length lists of strings. Tasks without any
    question are left out of the averages (and reported as NaN).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("score_sums", default=torch.zeros(len(SPAR_TASKS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", default=torch.zeros(len(SPAR_TASKS), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, tasks: list[str], predictions: list[str], answers: list[str]) -> None:
        if not len(tasks) == len(predictions) == len(answers):
            raise ValueError("SparBenchScore.update: tasks, predictions and answers must have the same length")
        for task, prediction, answer in zip(tasks, predictions, answers):
            position = SPAR_TASKS.index(task) if task in SPAR_TASKS else None
            if position is None:
                raise ValueError(f"SparBenchScore.update: unknown SPAR-Bench task {task!r}")
            self.score_sums[position] += score_answer(task, prediction, answer)
            self.counts[position] += 1

    def compute(self) -> dict[str, torch.Tensor]:
        per_task = 100.0 * self.score_sums / self.counts
        out = {task: per_task[i] for i, task in enumerate(SPAR_TASKS)}

        def group_mean(names):
            values = torch.stack([out[name] for name in names])
            return values[~values.isnan()].mean()

        out["overall"] = group_mean(SPAR_TASKS)
        out["low"] = group_mean(LOW_TASKS)
        out["medium"] = group_mean(MEDIUM_TASKS)
        out["high"] = group_mean(HIGH_TASKS)
        return out


class MeanRelativeAccuracy(Metric):
    """Mean of MRA over numeric answers (any benchmark): `update(predictions, targets)` with float tensors."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        predictions, targets = predictions.double().reshape(-1), targets.double().reshape(-1)
        error = torch.where(targets == 0, (predictions - targets).abs(), ((predictions - targets) / targets).abs())
        thresholds = torch.tensor(MRA_THRESHOLDS, dtype=torch.float64, device=error.device)
        self.total += (error[:, None] <= 1.0 - thresholds[None, :]).double().mean(-1).sum()
        self.count += error.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count
