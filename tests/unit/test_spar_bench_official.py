"""SPAR-Bench scoring against numbers of the official lmms-eval task (fudan-zvg/spar `lmms-eval/lmms_eval/tasks/
sparbench/utils.py`: `sparbench_process_results` on every question, then `sparbench_aggregate_results`).

The questions below cover all 20 tasks with answers the way models return them: with a leading space or newline
(lmms-eval's Qwen2-VL wrapper in SPAR's fork does not strip), empty, lower-case, long, with numbers after "^",
and view-change answers with spaces after the commas. The official functions scored them in a scratch environment;
the expected numbers are their output: per task (the official metric keys) and its groups. Its "Middle" is the
official code's own: its group lookup strips the last `_token` of each metric key, so
`view_change_infer_vci_metric` becomes `view_change_infer_vci` and falls out (2 tasks); the published tables use
the 3-task Medium, here the mean of the three official task values.
"""

from __future__ import annotations

import pytest

from g2vlm.benchmarks.spatial_qa.spar import score_predictions
from g2vlm.metrics.spatial_qa import NUMERIC_TASKS

VCI = "move_right:1.0,rotate_left:20"
# (task, answer, prediction): SPAR-Bench answers are letters, numbers, or action:value lists.
QUESTIONS = [
    ("depth_prediction_oc", "2.5", "2.4"),
    ("depth_prediction_oc", "2.5", " about 3 meters"),
    ("depth_prediction_oc", "2.5", "none"),  # no number: the official IndexError scores 0
    ("depth_prediction_oo", "1.2", "x^2 1.5"),  # the number after "^" is skipped
    ("depth_prediction_oc_mv", "2.5", "first 1.0 then 2.6"),  # _mv: the last number
    ("depth_prediction_oo_mv", "2.5", "no idea"),  # _mv without a number: -1
    ("distance_prediction_oc", "0", "0.3"),  # answer 0: absolute error
    ("distance_prediction_oo", "3.1", "\n3.3"),
    ("distance_prediction_oc_mv", "1.7", "1.2 or 1.9"),
    ("distance_prediction_oo_mv", "4.0", "4"),
    ("position_matching", "C", "C"),
    ("position_matching", "C", " C"),  # leading space: no rule matches
    ("camera_motion_infer", "B", "b) turn left"),  # first character
    ("camera_motion_infer", "B", "\nB"),
    ("view_change_infer", VCI, VCI),
    ("view_change_infer", VCI, " " + VCI),  # " move_right" is not an action key: that axis reads 0
    ("view_change_infer", VCI, "move_right:1.2, rotate_left:18"),  # " rotate_left" likewise
    ("view_change_infer", VCI, "I would move right"),  # not action:value pairs: 0
    ("obj_spatial_relation_oo", "B", "B"),
    ("obj_spatial_relation_oo", "B", " B"),
    ("obj_spatial_relation_oo", "B", ""),  # the empty string is a substring of every answer: correct
    ("obj_spatial_relation_oc_mv", "A", "Answer: A"),
    ("obj_spatial_relation_oo_mv", "D", "d."),
    ("spatial_imagination_oc", "A", "\nA"),
    ("spatial_imagination_oo", "C", "c"),
    ("spatial_imagination_oc_mv", "A", "B"),
    ("spatial_imagination_oo_mv", "B", " B. The chair"),
    ("distance_infer_center_oo", "A", "A"),
    ("distance_infer_center_oo_mv", "C", "C is closer"),
]

# sparbench_aggregate_results' output (fractions; its return value is overall × 100).
OFFICIAL = {
    "camera_motion_infer_accuracy": 0.5,
    "depth_prediction_oc_MRA:.5:.95:.05": 0.5333333333333333,
    "depth_prediction_oc_mv_MRA:.5:.95:.05": 1.0,
    "depth_prediction_oo_MRA:.5:.95:.05": 0.5,
    "depth_prediction_oo_mv_MRA:.5:.95:.05": 0.0,
    "distance_infer_center_oo_accuracy": 1.0,
    "distance_infer_center_oo_mv_accuracy": 1.0,
    "distance_prediction_oc_MRA:.5:.95:.05": 0.5,
    "distance_prediction_oc_mv_MRA:.5:.95:.05": 0.8,
    "distance_prediction_oo_MRA:.5:.95:.05": 0.9,
    "distance_prediction_oo_mv_MRA:.5:.95:.05": 1.0,
    "obj_spatial_relation_oc_mv_accuracy": 1.0,
    "obj_spatial_relation_oo_accuracy": 0.6666666666666666,
    "obj_spatial_relation_oo_mv_accuracy": 1.0,
    "position_matching_accuracy": 0.5,
    "spatial_imagination_oc_accuracy": 0.0,
    "spatial_imagination_oc_mv_accuracy": 0.0,
    "spatial_imagination_oo_accuracy": 1.0,
    "spatial_imagination_oo_mv_accuracy": 0.0,
    "view_change_infer_vci_metric": 0.635,
    "overall": 0.62675,
    "Low": 0.6541666666666667,
    "Middle": 0.5,
    "High": 0.6296296296296295,
}


def official_key(task: str) -> str:
    if task == "view_change_infer":
        return "view_change_infer_vci_metric"
    return f"{task}_MRA:.5:.95:.05" if task in NUMERIC_TASKS else f"{task}_accuracy"


def test_per_task_and_group_scores_equal_the_official_task():
    record = score_predictions([(task, "numeric" if task in NUMERIC_TASKS else "multiple_choice", prediction, answer)
                                for task, answer, prediction in QUESTIONS])
    assert set(record["tasks"]) == {task for task, _, _ in QUESTIONS} and len(record["tasks"]) == 20
    for task, value in record["tasks"].items():
        assert value == pytest.approx(100 * OFFICIAL[official_key(task)], rel=1e-12, abs=1e-12), task
    assert record["overall"] == pytest.approx(100 * OFFICIAL["overall"], rel=1e-12)
    assert record["low"] == pytest.approx(100 * OFFICIAL["Low"], rel=1e-12)
    assert record["high"] == pytest.approx(100 * OFFICIAL["High"], rel=1e-12)
    assert record["middle_official"] == pytest.approx(100 * OFFICIAL["Middle"], rel=1e-12)
    published_medium = [OFFICIAL[official_key(task)] for task in ("view_change_infer", "position_matching",
                                                                   "camera_motion_infer")]
    assert record["medium"] == pytest.approx(100 * sum(published_medium) / 3, rel=1e-12)
