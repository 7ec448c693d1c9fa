"""Spatial QA with exact answers from the synthetic scenes' object annotations (SPAR-style questions).

Tasks (numeric answers are scored by MRA, multiple choice by SPAR's exact match):

| task            | form            | images         | answer                                                      |
|-----------------|-----------------|----------------|-------------------------------------------------------------|
| object_distance | numeric         | all views      | distance between two objects' box centres, metres (1 dp)    |
| object_depth    | numeric         | one view       | depth (camera z) of an object's box centre, metres (1 dp)   |
| object_count    | numeric         | one view       | objects with at least `min_pixels` visible pixels           |
| depth_order     | multiple choice | one view       | which of two objects is closer to the camera (depth)        |
| left_right      | multiple choice | one view       | whether object a's centre projects left or right of b's     |
| camera_motion   | multiple choice | first and last | dominant horizontal camera motion (forward/backward/left/right) in the first camera's frame |

Metric answers have one decimal, as a person would say them: the centimetres are not visible in a small image and
would only add noise to the training target (answers to 2 dp slowed the CPU demo's depth learning; benchmarks/RESULTS.md).

Objects are named by colour and class ("the green box"), only when that name is unique in the room, and marked
with a point (red for the first object, blue for the second) at the centroid of their visible pixels, on
SPAR's 0-1000 scale; the loader draws the markers onto the semantic (ViT) copy of the image. Ambiguous cases are
not asked: depth pairs differ by at least 0.3 m and 10 %, left/right centres by 10 % of the width, camera
motions are at least 0.3 m with one axis 1.5x the other. Two-option questions list their options in a fixed
order (left, right; the red-marked object, the blue-marked one) and the random choice of the pair makes either
letter equally likely to be right; the four camera motions are shuffled. Every sample carries the geometry of its images (the multi-view clip schema), so the
`vg_ce` variant can add the geometry loss.

Everything depends only on (seed, scene index): the scene as in `synthetic.shards`, the questions from their
own generator `default_rng([seed, scene_index, 1])`.
"""

from __future__ import annotations

import multiprocessing
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from g2vlm.datamodules.qa.schema import Marker, QARecord
from g2vlm.datamodules.qa.shards import QAShardWriter
from g2vlm.datamodules.shards.decoding import encode_depth_png, encode_jpeg
from g2vlm.datamodules.shards.schema import ClipMeta, sanitize_key
from g2vlm.datamodules.synthetic.render import FIRST_OBJECT, Rendering, render
from g2vlm.datamodules.synthetic.scene import Scene, check_level_camera_height, sample_scene
from g2vlm.datamodules.synthetic.shards import DEPTH_SCALE_M, JPEG_QUALITY, scene_name

DATASET_NAME = "synthetic_qa"
NUMERIC_PROMPT = "Please answer the question using a single word or phrase."
CHOICE_PROMPT = "Answer with the option's letter from the given choices directly."
TASKS = ("object_distance", "object_depth", "object_count", "depth_order", "left_right", "camera_motion")
SINGLE_VIEW_TASKS = ("object_depth", "object_count", "depth_order", "left_right")
MARKER_PAIR = ("red", "blue")
NUMERIC_TASKS = ("object_distance", "object_depth", "object_count")
MIN_DEPTH_GAP_M = 0.3
MIN_MOTION_M = 0.3


@dataclass
class Question:
    """One generated question: `views` are the scene's view indices shown (in order); markers index into them."""

    task: str
    answer_type: str
    question: str
    answer: str
    views: list[int]
    markers: list[Marker]


class SceneFacts:
    """What the questions need from a rendered scene: unique object names, visibility and pixel centroids."""

    def __init__(self, scene: Scene, rendering: Rendering, min_pixels: int):
        self.scene = scene
        names = [f"{o.colour_name} {o.kind}" for o in scene.objects]
        self.names = {i: f"the {name}" for i, name in enumerate(names) if names.count(name) == 1}
        views = len(scene.camera_to_world)
        self.pixels = np.zeros((views, len(scene.objects)), dtype=np.int64)
        self.centroids = np.zeros((views, len(scene.objects), 2))  # (u, v) pixels
        for v in range(views):
            for i in range(len(scene.objects)):
                rows, cols = np.nonzero(rendering.surface_id[v] == FIRST_OBJECT + i)
                self.pixels[v, i] = rows.size
                if rows.size:
                    self.centroids[v, i] = cols.mean(), rows.mean()
        self.visible = self.pixels >= min_pixels

    def camera_points(self, view: int) -> np.ndarray:
        """Object box centres in camera `view`'s frame (M, 3)."""
        centres = np.array([o.center for o in self.scene.objects])
        world_to_camera = np.linalg.inv(self.scene.camera_to_world[view])
        return centres @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]

    def marker(self, obj: int, view: int, image: int, colour: str) -> Marker:
        u, v = self.centroids[view, obj]
        scale = 1000.0 / np.array([self.scene.width, self.scene.height])
        return Marker("point", colour, image, (round((u + 0.5) * scale[0], 1), round((v + 0.5) * scale[1], 1)))

    def named_visible(self, view: int) -> list[int]:
        return [i for i in self.names if self.visible[view, i]]


def _options(options: list[str], correct: str) -> tuple[str, str]:
    """-> ('A. x B. y ...', letter of the correct option)."""
    text = " ".join(f"{string.ascii_uppercase[k]}. {option}" for k, option in enumerate(options))
    return text, string.ascii_uppercase[options.index(correct)]


def _pair(facts: SceneFacts, rng: np.random.Generator, candidates: list[int]) -> tuple[int, int] | None:
    if len(candidates) < 2:
        return None
    a, b = rng.choice(candidates, 2, replace=False)
    return int(a), int(b)


def object_distance(facts: SceneFacts, rng: np.random.Generator) -> Question | None:
    views = list(range(len(facts.scene.camera_to_world)))
    seen = [i for i in facts.names if facts.visible[:, i].any()]
    pair = _pair(facts, rng, seen)
    if pair is None:
        return None
    a, b = pair
    markers = [facts.marker(obj, int(np.argmax(facts.pixels[:, obj])), int(np.argmax(facts.pixels[:, obj])), colour)
               for obj, colour in ((a, "red"), (b, "blue"))]
    distance = float(np.linalg.norm(facts.scene.objects[a].center - facts.scene.objects[b].center))
    question = (f"What is the distance between the centres of {facts.names[a]} (red point) and {facts.names[b]} "
                f"(blue point), in metres? {NUMERIC_PROMPT}")
    return Question("object_distance", "numeric", question, f"{distance:.1f}", views, markers)


def _label(facts: SceneFacts, obj: int, colour: str) -> str:
    return f"{facts.names[obj]} ({colour} point)"


def depth_question(facts: SceneFacts, view: int, obj: int, colour: str) -> Question | None:
    depth = float(facts.camera_points(view)[obj, 2])
    if depth <= 0:
        return None
    question = (f"How far is the centre of {_label(facts, obj, colour)} from the camera, in metres of depth? "
                f"{NUMERIC_PROMPT}")
    return Question("object_depth", "numeric", question, f"{depth:.1f}", [view], [facts.marker(obj, view, 0, colour)])


def count_question(facts: SceneFacts, view: int) -> Question:
    question = f"How many objects (boxes, spheres and cylinders) can be seen in this image? {NUMERIC_PROMPT}"
    return Question("object_count", "numeric", question, str(int(facts.visible[view].sum())), [view], [])


def order_question(facts: SceneFacts, view: int, a: int, colour_a: str, b: int, colour_b: str) -> Question | None:
    points = facts.camera_points(view)
    za, zb = points[a, 2], points[b, 2]
    if min(za, zb) <= 0 or abs(za - zb) < max(MIN_DEPTH_GAP_M, 0.1 * min(za, zb)):
        return None
    label_a, label_b = _label(facts, a, colour_a), _label(facts, b, colour_b)
    options, letter = _options([label_a, label_b], label_a if za < zb else label_b)
    question = f"Which object is closer to the camera? {options} {CHOICE_PROMPT}"
    markers = [facts.marker(a, view, 0, colour_a), facts.marker(b, view, 0, colour_b)]
    return Question("depth_order", "multiple_choice", question, letter, [view], markers)


def side_question(facts: SceneFacts, view: int, a: int, colour_a: str, b: int, colour_b: str) -> Question | None:
    points = facts.camera_points(view)
    if min(points[a, 2], points[b, 2]) <= 0:
        return None
    K = facts.scene.K[view]
    u = K[0, 0] * points[:, 0] / points[:, 2] + K[0, 2]
    if abs(u[a] - u[b]) < 0.1 * facts.scene.width:
        return None
    options, letter = _options(["left", "right"], "left" if u[a] < u[b] else "right")
    question = (f"Is the centre of {_label(facts, a, colour_a)} to the left or to the right of the centre of "
                f"{_label(facts, b, colour_b)} in this image? {options} {CHOICE_PROMPT}")
    markers = [facts.marker(a, view, 0, colour_a), facts.marker(b, view, 0, colour_b)]
    return Question("left_right", "multiple_choice", question, letter, [view], markers)


def _random_view(facts: SceneFacts, rng: np.random.Generator) -> int:
    return int(rng.integers(len(facts.scene.camera_to_world)))


def object_depth(facts: SceneFacts, rng: np.random.Generator) -> Question | None:
    view = _random_view(facts, rng)
    candidates = facts.named_visible(view)
    return depth_question(facts, view, int(rng.choice(candidates)), "red") if candidates else None


def object_count(facts: SceneFacts, rng: np.random.Generator) -> Question | None:
    return count_question(facts, _random_view(facts, rng))


def depth_order(facts: SceneFacts, rng: np.random.Generator) -> Question | None:
    view = _random_view(facts, rng)
    pair = _pair(facts, rng, facts.named_visible(view))
    return order_question(facts, view, pair[0], "red", pair[1], "blue") if pair else None


def left_right(facts: SceneFacts, rng: np.random.Generator) -> Question | None:
    view = _random_view(facts, rng)
    pair = _pair(facts, rng, facts.named_visible(view))
    return side_question(facts, view, pair[0], "red", pair[1], "blue") if pair else None


def view_conversation(facts: SceneFacts, rng: np.random.Generator, turns: int,
                      tasks: tuple[str, ...] = SINGLE_VIEW_TASKS) -> list[Question]:
    """Up to `turns` single-view questions about one view, as one conversation, in the held-out questions' form:
    two named visible objects are marked red and blue once; the pair questions name the red-marked object first
    (as the single questions do), so every turn's answer is a function of the image."""
    view = _random_view(facts, rng)
    objects = [int(i) for i in rng.permutation(facts.named_visible(view))[: len(MARKER_PAIR)]]
    candidates: list[Question | None] = []
    if "object_count" in tasks:
        candidates.append(count_question(facts, view))
    if "object_depth" in tasks:
        candidates += [depth_question(facts, view, obj, colour) for obj, colour in zip(objects, MARKER_PAIR)]
    if len(objects) == len(MARKER_PAIR):
        (red, blue), (colour_red, colour_blue) = objects, MARKER_PAIR
        if "left_right" in tasks:
            candidates.append(side_question(facts, view, red, colour_red, blue, colour_blue))
        if "depth_order" in tasks:
            candidates.append(order_question(facts, view, red, colour_red, blue, colour_blue))
    valid = [q for q in candidates if q is not None]
    return [valid[i] for i in rng.permutation(len(valid))[:turns]]


def camera_motion(facts: SceneFacts, rng: np.random.Generator) -> Question | None:
    camera_to_world = facts.scene.camera_to_world
    first, last = 0, len(camera_to_world) - 1
    if first == last:
        return None
    motion = camera_to_world[first, :3, :3].T @ (camera_to_world[last, :3, 3] - camera_to_world[first, :3, 3])
    sideways, forward = motion[0], motion[2]
    if np.hypot(sideways, forward) < MIN_MOTION_M:
        return None
    if abs(forward) >= 1.5 * abs(sideways):
        correct = "moved forward" if forward > 0 else "moved backward"
    elif abs(sideways) >= 1.5 * abs(forward):
        correct = "moved right" if sideways > 0 else "moved left"
    else:
        return None
    motions = ["moved forward", "moved backward", "moved left", "moved right"]
    options, letter = _options([motions[i] for i in rng.permutation(len(motions))], correct)
    question = f"How did the camera move from the first image to the second image? {options} {CHOICE_PROMPT}"
    return Question("camera_motion", "multiple_choice", question, letter, [first, last], [])


GENERATORS: dict[str, Callable[[SceneFacts, np.random.Generator], Question | None]] = {
    "object_distance": object_distance, "object_depth": object_depth, "object_count": object_count,
    "depth_order": depth_order, "left_right": left_right, "camera_motion": camera_motion,
}


def scene_questions(facts: SceneFacts, rng: np.random.Generator, count: int, tasks: tuple[str, ...] = TASKS,
                    attempts: int = 20) -> list[Question]:
    """Up to `count` questions, tasks taken in turn (a task that finds no unambiguous question is passed over)."""
    unknown = set(tasks) - set(GENERATORS)
    if unknown:
        raise ValueError(f"scene_questions: tasks: unknown tasks {sorted(unknown)}; choose from {TASKS}")
    questions: list[Question] = []
    start = int(rng.integers(len(tasks)))
    for turn in range(count * attempts):
        if len(questions) == count:
            break
        question = GENERATORS[tasks[(start + turn) % len(tasks)]](facts, rng)
        if question is not None:
            questions.append(question)
    return questions


def render_qa_samples(
    scene_index: int, *, seed: int, views: int, height: int, width: int, questions_per_scene: int,
    tasks: tuple[str, ...] = TASKS, min_pixels: int = 8, turns: int = 1, level_camera_height_m: float | None = None,
) -> list[tuple[str, dict[str, Any], list[bytes], dict[str, Any], list[dict[str, bytes]]]]:
    """Render one scene and ask about it: [(key, QA record, JPEGs, meta record, depth frames)] for
    `QAShardWriter.write`. turns = 1: `questions_per_scene` single questions (tasks in turn); turns > 1:
    `questions_per_scene` conversations of up to `turns` single-view questions about one view each
    (`view_conversation`; task "conversation"). `level_camera_height_m`: see `scene.sample_scene`."""
    scene = sample_scene(seed, scene_index, views, height, width, level_camera_height_m)
    rendering = render(scene)
    facts = SceneFacts(scene, rendering, min_pixels)
    rng = np.random.default_rng([seed, scene_index, 1])
    units = np.round(rendering.depth_m / DEPTH_SCALE_M)
    depth_units = np.where((units > 0) & (units <= np.iinfo(np.uint16).max), units, 0).astype(np.uint16)
    jpegs = [encode_jpeg(rgb, JPEG_QUALITY) for rgb in rendering.rgb]
    depths = [encode_depth_png(depth, compress_level=1) for depth in depth_units]
    name = scene_name(seed, scene_index)
    if turns == 1:
        conversations = [[q] for q in scene_questions(facts, rng, questions_per_scene, tasks)]
    else:
        single_view = tuple(t for t in tasks if t in SINGLE_VIEW_TASKS)
        conversations = [c for c in (view_conversation(facts, rng, turns, single_view)
                                     for _ in range(questions_per_scene)) if c]
    samples = []
    for number, questions in enumerate(conversations):
        first = questions[0]
        markers = list({(m.colour, m.image): m for q in questions for m in q.markers}.values())
        task, answer_type = (first.task, first.answer_type) if len(questions) == 1 else ("conversation", "free_form")
        record = QARecord(DATASET_NAME, name, task, answer_type, [(q.question, q.answer) for q in questions],
                          len(first.views), markers,
                          turn_tasks=[q.task for q in questions] if len(questions) > 1 else None)
        meta = ClipMeta(
            dataset=DATASET_NAME, scene=name, frame_ids=list(first.views), width=width, height=height,
            K=scene.K[first.views], camera_to_world=scene.camera_to_world[first.views], depth_scale=DEPTH_SCALE_M,
            depth_is_metric=True, has_depth=True,
        )
        key = sanitize_key(f"{DATASET_NAME}__{name}__q{number:03d}")
        samples.append((key, record.to_json(), [jpegs[v] for v in first.views], meta.to_json(),
                        [{"depth.png": depths[v]} for v in first.views]))
    return samples


def _rendered(scenes: int, workers: int, **args: Any) -> Iterator[list]:
    job = partial(render_qa_samples, **args)
    if workers <= 1:
        yield from map(job, range(scenes))
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(job, range(scenes), chunksize=max(1, min(16, scenes // (workers * 8))))


def write_synthetic_qa_shards(
    out_dir: str | Path, scenes: int, views: int, height: int, width: int, seed: int = 0, split: str = "train",
    questions_per_scene: int = 4, tasks: tuple[str, ...] = TASKS, workers: int = 1, samples_per_shard: int = 1000,
    progress: bool = False, turns: int = 1, level_camera_height_m: float | None = None,
) -> dict[str, Any]:
    """Scenes 0..scenes-1 of `seed` -> `<out_dir>/synthetic_qa-<split>-NNNNNN.tar` plus the index; returns the
    index. `turns` > 1 writes conversations (see `render_qa_samples`); `level_camera_height_m`: cameras level at
    that height (see `scene.sample_scene`). The output does not depend on `workers`."""
    check_level_camera_height(level_camera_height_m)
    rendered = _rendered(scenes, workers, seed=seed, views=views, height=height, width=width,
                         questions_per_scene=questions_per_scene, tasks=tuple(tasks), turns=turns,
                         level_camera_height_m=level_camera_height_m)
    if progress:
        from tqdm import tqdm

        rendered = tqdm(rendered, total=scenes, unit="scene", desc=f"synthetic QA {split}")
    with QAShardWriter(out_dir, f"{DATASET_NAME}-{split}", max_samples_per_shard=samples_per_shard) as writer:
        for samples in rendered:
            for key, record, images, meta, frames in samples:
                writer.write(key, record, images, meta=meta, frames=frames)
    return writer.close()
