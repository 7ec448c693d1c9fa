"""The spatial-QA sample schema (SPAR-7M style): one WebDataset sample = one conversation about 1..N images.

Members of a sample with key KEY (no dots) and image index FFF (000, 001, ...):

    KEY.json             the QA record (`QARecord`)
    KEY.FFF.jpg          the images the conversation is about, 8-bit sRGB JPEG, clean (markers are drawn by
                         the loader onto the semantic (ViT) copy only, as in the official recipe)
    KEY.meta.json        optional geometry, exactly as in the multi-view clip schema (`schema.ClipMeta`, one
                         frame per image), with KEY.FFF.depth.png / .depth.npy when has_depth

Fields of KEY.json:
    dataset, scene (str); task (str, e.g. `depth_prediction_oc` or a synthetic task name);
    answer_type: "numeric" | "multiple_choice" | "free_form";
    conversations: turns {"from": "human" | "gpt", "value": str}, alternating, starting with a human turn and
        ending with a gpt turn (multi-turn conversations are kept whole). The first question may hold exactly
        `num_images` `<image>` placeholders: the images are read there, between the text around them (the
        `Frame-k: <image>` lines of SPAR's video samples); without placeholders the images come before it;
    num_images (int >= 1): the number of KEY.FFF.jpg members;
    markers (optional): drawn on the ViT copy of image `image`, in list order (`qa.markers`); coordinates on SPAR's
        0-1000 scale (pixel = value / 1000 * size): {"kind": "point", "colour": c, "image": i, "xy": [x, y]} or
        {"kind": "box", "colour": c, "image": i, "box": [x1, y1, x2, y2]}; colour (one of MARKER_COLOURS) is the
        word the question uses; optional: "style" (`qa.markers.MARKER_STYLES`, default "scaled"), "rgb" [r, g, b]
        (the drawn colour, default the colour's MARKER_COLOURS value), "label" ("object0", "objectA") and
        "label_fill" (bool), for "spar_cv" markers only;
    reconstruct (optional bool, default true): feed the images to the geometric expert as well (spatial data);
        false for general VQA, which the official recipe runs without DINO images;
    turn_tasks (optional): the task of every turn, when a conversation mixes tasks (then `task` names the mix).

Problems raise `schema.SampleError` (reasons `schema`, `missing_frame`) naming the member and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from g2vlm.datamodules.qa.markers import MARKER_STYLES, label_size
from g2vlm.datamodules.shards.reader import ClipRecord
from g2vlm.datamodules.shards.schema import (
    META_SUFFIX,
    REASON_MISSING_FRAME,
    REASON_SCHEMA,
    ClipMeta,
    SampleError,
    frame_member,
    validate_meta,
)
from g2vlm.datamodules.shards.tar_reader import RawSample

QA_SUFFIX = "json"
ANSWER_TYPES = ("numeric", "multiple_choice", "free_form")
MARKER_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "blue": (0, 0, 255),
    "green": (0, 255, 0),
    "yellow": (255, 255, 0),
}
HUMAN, ASSISTANT = "human", "gpt"
IMAGE_PLACEHOLDER = "<image>"


@dataclass
class Marker:
    """A point (xy: [x, y]) or box (box: [x1, y1, x2, y2]) on the 0-1000 scale of image `image`, drawn in `style`
    (`qa.markers`) in `rgb` (None: the colour's MARKER_COLOURS value), with an optional label ("spar_cv" only)."""

    kind: str
    colour: str
    image: int
    coords: tuple[float, ...]
    style: str = "scaled"
    rgb: tuple[int, int, int] | None = None
    label: str | None = None
    label_fill: bool = False

    @property
    def drawn_rgb(self) -> tuple[int, int, int]:
        return self.rgb if self.rgb is not None else MARKER_COLOURS[self.colour]

    def to_json(self) -> dict[str, Any]:
        key = "xy" if self.kind == "point" else "box"
        record = {"kind": self.kind, "colour": self.colour, "image": self.image, key: [float(v) for v in self.coords]}
        if self.style != "scaled":
            record["style"] = self.style
        if self.rgb is not None:
            record["rgb"] = [int(v) for v in self.rgb]
        if self.label is not None:
            record["label"] = self.label
            record["label_fill"] = bool(self.label_fill)
        return record


@dataclass
class QARecord:
    """The validated KEY.json of one QA sample. turns: [(question, answer), ...] in order."""

    dataset: str
    scene: str
    task: str
    answer_type: str
    turns: list[tuple[str, str]]
    num_images: int
    markers: list[Marker] = field(default_factory=list)
    reconstruct: bool = True
    turn_tasks: list[str] | None = None

    @property
    def final_answer(self) -> str:
        return self.turns[-1][1]

    def to_json(self) -> dict[str, Any]:
        conversations = []
        for question, answer in self.turns:
            conversations += [{"from": HUMAN, "value": question}, {"from": ASSISTANT, "value": answer}]
        record: dict[str, Any] = {
            "dataset": self.dataset, "scene": self.scene, "task": self.task, "answer_type": self.answer_type,
            "conversations": conversations, "num_images": self.num_images,
        }
        if self.markers:
            record["markers"] = [marker.to_json() for marker in self.markers]
        if not self.reconstruct:
            record["reconstruct"] = False
        if self.turn_tasks is not None:
            record["turn_tasks"] = list(self.turn_tasks)
        return record


def _string(record: dict, name: str, where: str) -> str:
    value = record.get(name)
    if not isinstance(value, str) or not value:
        raise SampleError(REASON_SCHEMA, f"{where}: field '{name}' must be a non-empty string, got {value!r}")
    return value


def _marker(item: Any, num_images: int, where: str) -> Marker:
    if not isinstance(item, dict):
        raise SampleError(REASON_SCHEMA, f"{where}: each marker must be an object, got {type(item).__name__}")
    kind = item.get("kind")
    if kind not in ("point", "box"):
        raise SampleError(REASON_SCHEMA, f"{where}: marker 'kind' must be point or box, got {kind!r}")
    colour = item.get("colour")
    if colour not in MARKER_COLOURS:
        raise SampleError(REASON_SCHEMA, f"{where}: marker 'colour' must be one of {sorted(MARKER_COLOURS)}, got {colour!r}")
    image = item.get("image", 0)
    if isinstance(image, bool) or not isinstance(image, int) or not 0 <= image < num_images:
        raise SampleError(REASON_SCHEMA, f"{where}: marker 'image' must be an image index below {num_images}, got {image!r}")
    name, length = ("xy", 2) if kind == "point" else ("box", 4)
    coords = item.get(name)
    if (not isinstance(coords, list) or len(coords) != length
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in coords)):
        raise SampleError(REASON_SCHEMA, f"{where}: marker '{name}' must be {length} numbers, got {coords!r}")
    style = item.get("style", "scaled")
    if style not in MARKER_STYLES:
        raise SampleError(REASON_SCHEMA, f"{where}: marker 'style' must be one of {list(MARKER_STYLES)}, got {style!r}")
    rgb = item.get("rgb")
    if rgb is not None and (not isinstance(rgb, list) or len(rgb) != 3 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in rgb)):
        raise SampleError(REASON_SCHEMA, f"{where}: marker 'rgb' must be 3 integers in 0..255, got {rgb!r}")
    label, label_fill = item.get("label"), item.get("label_fill", False)
    if label is not None:
        try:
            label_size(label if isinstance(label, str) else repr(label))
        except ValueError:
            raise SampleError(REASON_SCHEMA, f"{where}: marker 'label' must be object<digits> or objectA, "
                                             f"got {label!r}") from None
        if style != "spar_cv":
            raise SampleError(REASON_SCHEMA, f"{where}: marker 'label' needs style spar_cv, got {style!r}")
    if not isinstance(label_fill, bool):
        raise SampleError(REASON_SCHEMA, f"{where}: marker 'label_fill' must be a boolean, got {label_fill!r}")
    return Marker(kind, colour, image, tuple(float(v) for v in coords), style,
                  None if rgb is None else tuple(rgb), label, label_fill)


def validate_qa_record(record: Any, where: str = "json") -> QARecord:
    """Validate a decoded KEY.json record and return it typed. Raises SampleError naming the field."""
    if not isinstance(record, dict):
        raise SampleError(REASON_SCHEMA, f"{where}: expected a JSON object, got {type(record).__name__}")
    dataset, scene, task = (_string(record, name, where) for name in ("dataset", "scene", "task"))
    answer_type = record.get("answer_type")
    if answer_type not in ANSWER_TYPES:
        raise SampleError(REASON_SCHEMA, f"{where}: field 'answer_type' must be one of {ANSWER_TYPES}, got {answer_type!r}")
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations or len(conversations) % 2:
        raise SampleError(REASON_SCHEMA, f"{where}: field 'conversations' must be a non-empty list of human/gpt pairs")
    turns = []
    for index in range(0, len(conversations), 2):
        pair = conversations[index : index + 2]
        if not all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in pair):
            raise SampleError(REASON_SCHEMA, f"{where}: field 'conversations' turn {index} must be {{from, value: str}} objects")
        if pair[0].get("from") != HUMAN or pair[1].get("from") != ASSISTANT:
            raise SampleError(REASON_SCHEMA, f"{where}: field 'conversations' must alternate human/gpt from turn 0 "
                                             f"(turn {index} is {pair[0].get('from')!r}/{pair[1].get('from')!r})")
        turns.append((pair[0]["value"], pair[1]["value"]))
    num_images = record.get("num_images")
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise SampleError(REASON_SCHEMA, f"{where}: field 'num_images' must be a positive integer, got {num_images!r}")
    placeholders = [question.count(IMAGE_PLACEHOLDER) for question, _ in turns]
    if placeholders[0] not in (0, num_images) or any(placeholders[1:]):
        raise SampleError(REASON_SCHEMA, f"{where}: field 'conversations' must hold {num_images} '{IMAGE_PLACEHOLDER}' "
                                         f"placeholders in its first question or none (found {placeholders})")
    markers = record.get("markers", [])
    if not isinstance(markers, list):
        raise SampleError(REASON_SCHEMA, f"{where}: field 'markers' must be a list")
    reconstruct = record.get("reconstruct", True)
    if not isinstance(reconstruct, bool):
        raise SampleError(REASON_SCHEMA, f"{where}: field 'reconstruct' must be a boolean, got {reconstruct!r}")
    turn_tasks = record.get("turn_tasks")
    if turn_tasks is not None and (not isinstance(turn_tasks, list) or len(turn_tasks) != len(turns)
                                   or not all(isinstance(t, str) and t for t in turn_tasks)):
        raise SampleError(REASON_SCHEMA, f"{where}: field 'turn_tasks' must list one task name per turn ({len(turns)})")
    return QARecord(dataset, scene, task, answer_type, turns, num_images,
                    [_marker(m, num_images, f"{where} markers[{i}]") for i, m in enumerate(markers)], reconstruct,
                    turn_tasks)


@dataclass
class QASampleRecord:
    """A QA sample whose record (and geometry meta, when present) is valid and whose image members are all
    present; nothing decoded yet."""

    key: str
    url: str
    qa: QARecord
    meta: ClipMeta | None
    members: dict[str, bytes]

    def clip(self) -> ClipRecord:
        """The geometry part as a multi-view clip record (decodes images, depth, K and poses). Needs meta."""
        if self.meta is None:
            raise ValueError(f"QASampleRecord.clip: {self.key} has no '{META_SUFFIX}' (no geometry)")
        return ClipRecord(self.key, self.url, self.meta, self.members)


def parse_qa_sample(raw: RawSample) -> QASampleRecord:
    """Validate KEY.json (and KEY.meta.json when present) and the presence of every image/depth member."""
    if QA_SUFFIX not in raw.members:
        raise SampleError(REASON_SCHEMA, f"{raw.key}: no '{QA_SUFFIX}' member (not a QA sample)")
    where = f"{raw.key}.{QA_SUFFIX}"
    try:
        record = json.loads(raw.members[QA_SUFFIX])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SampleError(REASON_SCHEMA, f"{where}: not valid JSON ({error})") from None
    qa = validate_qa_record(record, where)
    for index in range(qa.num_images):
        if frame_member(index, "jpg") not in raw.members:
            raise SampleError(REASON_MISSING_FRAME, f"{raw.key}: image {index} has no '{frame_member(index, 'jpg')}' member")
    meta = None
    if META_SUFFIX in raw.members:
        try:
            meta_record = json.loads(raw.members[META_SUFFIX])
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SampleError(REASON_SCHEMA, f"{raw.key}.{META_SUFFIX}: not valid JSON ({error})") from None
        meta = validate_meta(meta_record, f"{raw.key}.{META_SUFFIX}")
        if meta.num_frames != qa.num_images:
            raise SampleError(REASON_SCHEMA, f"{raw.key}.{META_SUFFIX}: 'frame_ids' lists {meta.num_frames} frames, "
                                             f"{where} 'num_images' is {qa.num_images}")
        for index in range(meta.num_frames):
            if meta.has_depth and not (frame_member(index, "depth.png") in raw.members
                                       or frame_member(index, "depth.npy") in raw.members):
                raise SampleError(REASON_MISSING_FRAME, f"{raw.key}: frame {index} has no depth member (has_depth is true)")
    return QASampleRecord(raw.key, raw.url, qa, meta, raw.members)
