import pytest
import torch

from g2vlm.metrics.spatial_qa import (
    SPAR_TASKS,
    MeanRelativeAccuracy,
    SparBenchScore,
    exact_match,
    mean_relative_accuracy,
    parse_number,
    score_answer,
    view_change_score,
)


def test_mra_values_for_known_relative_errors():
    for relative_error, expected in [(0.0, 1.0), (0.22, 0.6), (0.45, 0.1), (0.6, 0.0)]:
        assert mean_relative_accuracy(100.0 * (1 + relative_error), 100.0) == pytest.approx(expected)
    assert mean_relative_accuracy(78.0, 100.0) == pytest.approx(0.6)  # under-estimates count the same
    assert mean_relative_accuracy(0.32, 0.0) == pytest.approx(0.4)  # target 0: absolute error
    metric = MeanRelativeAccuracy()
    metric.update(torch.tensor([100.0, 122.0, 145.0, 160.0]), torch.full((4,), 100.0))
    torch.testing.assert_close(metric.compute(), torch.tensor((1.0 + 0.6 + 0.1 + 0.0) / 4, dtype=torch.float64))


def test_exact_match_leniency_rules():
    assert exact_match("A", "a") == 1.0
    assert exact_match("left", "the left side") == 1.0  # prediction is a substring of the target
    assert exact_match("", "b") == 1.0  # official quirk: the empty string is a substring of everything
    assert exact_match("B. behind", "b") == 1.0  # first character equals the target
    assert exact_match("c", "b") == 0.0


def test_number_parsing_first_last_and_caret():
    assert parse_number("about 3.5 meters, not 4", "depth_prediction_oc") == 3.5
    assert parse_number("from 2 to 4.5", "distance_prediction_oo_mv") == 4.5
    assert parse_number("x^2 is 4", "depth_prediction_oo") == 4.0
    assert parse_number("no idea", "depth_prediction_oc_mv") == -1.0
    assert parse_number("no idea", "depth_prediction_oc") is None
    assert score_answer("depth_prediction_oc", "no idea", "2.0") == 0.0
    assert score_answer("depth_prediction_oc", "It is 2.44 m", "2.0") == pytest.approx(0.6)


def test_view_change_score_with_official_argument_order():
    assert view_change_score("move_right:1,rotate_left:30", "move_right:1,rotate_left:30") == 1.0
    # the official code divides by the predicted axis value: |1 - 2| / 2 = 0.5 -> 0.1 on that axis, 1 on four
    assert view_change_score("move_right:2", "move_right:1") == pytest.approx((0.1 + 4.0) / 5)
    assert view_change_score("turn right a bit", "move_right:1") == 0.0


def test_sparbench_aggregation_reproduces_the_published_human_row():
    human = {
        "depth_prediction_oc": 72.75, "depth_prediction_oc_mv": 74.25, "depth_prediction_oo": 28.75,
        "depth_prediction_oo_mv": 36.25, "distance_prediction_oc": 78.25, "distance_prediction_oc_mv": 52.25,
        "distance_prediction_oo": 66.5, "distance_prediction_oo_mv": 33.50, "position_matching": 92.0,
        "camera_motion_infer": 64.0, "view_change_infer": 60.97, "distance_infer_center_oo": 80.0,
        "distance_infer_center_oo_mv": 94.0, "obj_spatial_relation_oc_mv": 70.0, "obj_spatial_relation_oo": 92.0,
        "obj_spatial_relation_oo_mv": 80.0, "spatial_imagination_oc": 78.0, "spatial_imagination_oc_mv": 82.0,
        "spatial_imagination_oo": 50.0, "spatial_imagination_oo_mv": 60.0,
    }
    metric = SparBenchScore()
    metric.update([], [], [])
    metric.score_sums = torch.tensor([human[t] / 100 for t in SPAR_TASKS], dtype=torch.float64)
    metric.counts = torch.ones(len(SPAR_TASKS), dtype=torch.float64)
    out = metric.compute()
    assert out["overall"].item() == pytest.approx(67.27, abs=0.01)
    assert out["low"].item() == pytest.approx(55.31, abs=0.01)
    assert out["medium"].item() == pytest.approx(72.32, abs=0.01)
    assert out["high"].item() == pytest.approx(76.22, abs=0.01)


def test_sparbench_update_scores_each_kind_of_task():
    metric = SparBenchScore()
    metric.update(
        ["position_matching", "position_matching", "depth_prediction_oc", "view_change_infer"],
        ["A", "c", "1.22", "move_up:1"],
        ["a", "b", "1.0", "move_up:1"],
    )
    out = metric.compute()
    assert out["position_matching"].item() == pytest.approx(50.0)
    assert out["depth_prediction_oc"].item() == pytest.approx(60.0)
    assert out["view_change_infer"].item() == pytest.approx(100.0)
    assert torch.isnan(out["spatial_imagination_oo"])
    assert out["overall"].item() == pytest.approx((50.0 + 60.0 + 100.0) / 3)
    with pytest.raises(ValueError, match="unknown SPAR-Bench task"):
        metric.update(["not_a_task"], ["1"], ["1"])


def test_gt_answers_score_100_on_every_task():
    answers = {task: "b" for task in SPAR_TASKS}
    answers.update({task: "2.5" for task in SPAR_TASKS if "prediction" in task})
    answers["view_change_infer"] = "move_forward:1.5,rotate_left:30"
    metric = SparBenchScore()
    metric.update(list(answers), list(answers.values()), list(answers.values()))
    out = metric.compute()
    for key in (*SPAR_TASKS, "overall", "low", "medium", "high"):
        assert out[key].item() == pytest.approx(100.0), key
