"""MindCube and OmniSpatial scoring against their official code, on responses designed to reach every branch.

MindCube: mll-lab-nu/MindCube `src/evaluation/evaluator.py: BasicEvaluator.evaluate` (with `core/extractors.py:
extract_answer`) scored RESPONSES below from a JSONL file in a scratch environment. OmniSpatial: qizekun/OmniSpatial
`api_eval.py: process_info` with its default `eval_type="re"` (the model call stubbed to return each response),
aggregated as its `__main__` does. The expected letters and accuracies are their output.
"""

from __future__ import annotations

import pytest

from g2vlm.benchmarks.spatial_qa.spar import mindcube_answer, mindcube_scores, omnispatial_answer, omnispatial_scores

# (question id, response, gt letter)
MINDCUBE = [
    ("around_000_a", "B", "B"),
    ("around_001_a", "I think it is B", "B"),
    ("around_002_a", "<Answer>d</Answer>", "D"),
    ("aroundnew_003_b", "<Answer> C </Answer>", "C"),
    ("rotation_004", "I pick B. C is wrong", "C"),
    ("rotation_005", "e.g. A. then D", "D"),
    ("rotation_006", "Answer: E", "E"),
    ("among_007", "My answer is c", "C"),
    ("among_008", "The options are A and B; my answer is D", "D"),
    ("among_009", '"C"', "C"),
    ("among_010", "**B**", "B"),
    ("translation_011", "A. Left of the chair\nB. Right of it", "B"),
    ("translation_012", "Among the views, (C) fits", "C"),
    ("other_013", "", "A"),
    ("other_014", "The answer is B because D is blocked", "B"),
    ("Rotation_015", "rotation question: E.", "E"),
]
# The official extract_answer, line by line, and BasicEvaluator's accuracies (fractions) by setting and overall
# (translation left out of overall; ids matched case-insensitively, "aroundnew" counts as around).
MINDCUBE_OFFICIAL_LETTERS = ['B', 'B', None, 'C', 'B', 'A', 'E', None, 'D', 'C', 'B', 'B', 'C', None, 'B', 'E']
MINDCUBE_OFFICIAL = {'around': 0.75, 'rotation': 0.5, 'translation': 1.0, 'among': 0.75, 'other': 0.5, 'overall': 0.6428571428571429}

# (task type, sub-task, response, gt letter)
OMNISPATIAL = [
    ("Perspective_Taking", "Egocentric", "Answer: C", "C"),
    ("Perspective_Taking", "Egocentric", "answer: c", "C"),
    ("Perspective_Taking", "Allocentric", "Reasoning...\nAnswer: B\nAnswer: D", "D"),
    ("Perspective_Taking", "Hypothetical", "The answer is B", "B"),
    ("Spatial_Interaction", "Localization", "", "A"),
    ("Spatial_Interaction", "Localization", "Answer:A", "A"),
    ("Spatial_Interaction", "Traffic_Analysis", "ANSWER : b", "B"),
    ("Spatial_Interaction", "Geospatial_Strategy", '{"answer": "B"}', "B"),
    ("Dynamic_Reasoning", "Manipulation", "Answer: E", "A"),
    ("Complex_Logic", "Pattern_Recognition", "Answer: (C)", "C"),
]
# The letter the official pattern reads, whether process_info scored the line correct, and the final report (percent).
OMNISPATIAL_OFFICIAL_LETTERS = ['C', 'c', 'D', 'A', 'A', 'A', 'b', 'A', 'A', 'A']
OMNISPATIAL_OFFICIAL_CORRECT = [True, False, True, False, True, True, False, False, True, False]
OMNISPATIAL_OFFICIAL = {'overall': 49.9999950000005, 'tasks': {'Dynamic_Reasoning': 99.99990000010001, 'Spatial_Interaction': 49.99998750000312, 'Complex_Logic': 0.0, 'Perspective_Taking': 49.99998750000312}}


def test_mindcube_extraction_and_scores_equal_the_official_evaluator():
    assert [mindcube_answer(response) for _, response, _ in MINDCUBE] == MINDCUBE_OFFICIAL_LETTERS
    scores = mindcube_scores(MINDCUBE)
    for setting, fraction in MINDCUBE_OFFICIAL.items():
        assert scores[setting] == pytest.approx(100 * fraction, rel=1e-12), setting


def test_omnispatial_default_scorer_equals_the_official_one():
    assert [omnispatial_answer(response) for _, _, response, _ in OMNISPATIAL] == OMNISPATIAL_OFFICIAL_LETTERS
    assert [omnispatial_answer(response) == gt for _, _, response, gt in OMNISPATIAL] == OMNISPATIAL_OFFICIAL_CORRECT
    scores = omnispatial_scores(OMNISPATIAL)
    # the official report divides by N + 1e-6: equal to ours to 1e-6 / N relative
    assert scores["overall"] == pytest.approx(OMNISPATIAL_OFFICIAL["overall"], rel=1e-6)
    for task, value in OMNISPATIAL_OFFICIAL["tasks"].items():
        assert scores["tasks"][task] == pytest.approx(value, rel=1e-6), task
