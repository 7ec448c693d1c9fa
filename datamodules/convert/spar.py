"""SPAR-7M -> QA shards (`qa.schema`): `g2vlm shard spar --root SPAR7M --out DIR`.

Layout read (SPAR `readme.md`, the Hugging Face release jasonzhango/SPAR-7M; reference data-and-benchmarks.md §1.1):

    ROOT/<source>/qa_jsonl/<split>/<task_type>/<answer_format>/<answer_format>_<count>.jsonl
    ROOT/<source>/images/<scene>/image_color/<frame>.jpg, video_color/frame<i>_<idx>.jpg   (paths in the records
                                                                                        are relative to images/)

with sources rxr, scannet, scannetpp, structured3d and answer formats fill, select, sentence (and judge). The
current release of SPAR-7M ships the annotations only, one archive per source (scannet.tar.gz, ...: qa_jsonl/ and
each scene's video_idx.txt); the images/ folders are materialised from the original datasets by the release's
prepare_{scannet,scannetpp,structured3d}_layout.py (links or copies of the original frames; Structured3D PNGs
re-encoded as JPEG; RxR/Matterport3D has no script). SPAR-7M-RGBD still ships whole (spar-rgbd-*.tar.gz parts).
Links are followed; a record whose image is absent is skipped as `missing_image`.

One record per line (README example; `datasets/draw_marker.py`, `datasets/toy_dataset.py`): id, conversations
(human/gpt turns), image (a list of paths), type (the task, `nav` for rxr's nav_video), markers `<colour>_point`
[[x, y]] and `<colour>_bbox` [[x1, y1, x2, y2]] on the 0-1000 scale, `point_img_idx` / `bbox_img_idx` [[i0, i1, ...]]
(the image of each marker, in an order set per task), `point_list` / `bbox_list` [[...]] (several unnamed markers,
one image index each).

Conversion:
- markers: exactly where and how `draw_marker.py` draws them, task by task (`MARKER_RULES`): which colour goes on
  which image (e.g. spatial_imagination_oc_mv: red on image idx[2], green on idx[0], blue on idx[1];
  obj_spatial_relation_oc_mv: every box on idx[0]), PIL's colours and sizes (style `spar`), and the OpenCV boxes,
  discs and "object<i>" labels of spatial_imagination_map_mv and the `_video` tasks (style `spar_cv`, with the
  official colours, e.g. "yellow" drawn (0, 225, 225) by spatial_imagination_oo_video). Markers are stored, not
  drawn: the loader draws them on the ViT copy only (`qa.markers`);
- questions: video samples (type `nav` or more than 10 images, as `toy_dataset.py`) keep the official loader's
  "Frame-1: <image>\\nFrame-2: <image>\\n...\\n" lines before the question (the template reads image k at its
  placeholder; answers name frames); other samples lose their `<image>` placeholders (the template puts the images
  first, as the official joint-training loader);
- answer_type: select -> multiple_choice; fill -> numeric when the final answer is a number, else free_form;
  sentence / judge -> free_form;
- images are stored as they are when JPEG, re-encoded (quality 95) otherwise, at their own resolution (the
  markers' 20 px are pixels of that resolution).
Records that cannot be used are skipped and counted by reason: bad_json, bad_conversations, bad_images,
unknown_task (a type draw_marker.py does not know), bad_markers (a marker the official renderer could not draw: a
missing colour, a malformed coordinate or image index), missing_image, decode.
Depth and cameras of the RGBD release are not converted yet (the samples carry no geometry members).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from g2vlm.datamodules.convert.common import Skips
from g2vlm.datamodules.qa.schema import ASSISTANT, HUMAN, IMAGE_PLACEHOLDER, Marker, QARecord
from g2vlm.datamodules.qa.shards import QAShardWriter
from g2vlm.datamodules.shards.decoding import decode_jpeg, encode_jpeg
from g2vlm.datamodules.shards.schema import SampleError, sanitize_key

SOURCES = ("rxr", "scannet", "scannetpp", "structured3d")
ANSWER_FORMATS = ("fill", "select", "sentence", "judge")
VIDEO_MIN_IMAGES = 11  # toy_dataset.py: more than 10 images (or type nav) -> a video sample with frame labels
_EMPTY_FRAME_LINE = re.compile(r"^\s*Frame-\d+:\s*$\n?", re.MULTILINE)
_NUMBER = re.compile(r"^\s*-?\d+(\.\d+)?\s*$")

# PIL's colour names, as draw_marker.py passes them to ImageDraw ("green" is (0, 128, 0) there)
PIL_RGB = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 128, 0), "yellow": (255, 255, 0)}
CV_BLUE = (0, 0, 255)  # OpenCV's (0, 0, 255) written into an RGB array: the map and video-point markers
# spatial_imagination_{oo,oc}_video: (colour, RGB drawn, label, slot in bbox_img_idx[0]) in drawing order (BGR
# colours drawn on a BGR copy; "yellow" is BGR (225, 225, 0), i.e. RGB (0, 225, 225))
VIDEO_BOXES = (("green", (0, 255, 0), "object0", 0), ("blue", (0, 0, 255), "object1", 1),
               ("red", (255, 0, 0), "object2", 2), ("yellow", (0, 225, 225), "object3", 3))

# task -> (marker kind, ((colour, slot), ...)) in drawing order; slot None: image 0, else the index of
# <kind>_img_idx[0] naming the image (draw_marker.py). Tasks with other rules are handled by name below.
MARKER_RULES: dict[str, tuple[str, tuple[tuple[str, int | None], ...]]] = {
    # single view: every marker on the one image
    "obj_spatial_relation_oo": ("box", (("red", None), ("blue", None))),
    "depth_prediction_oc": ("point", (("red", None), ("blue", None))),
    "depth_prediction_oo": ("point", (("red", None), ("blue", None), ("green", None))),
    "distance_prediction_oc": ("point", (("red", None),)),
    "distance_prediction_oo": ("point", (("red", None), ("blue", None))),
    "distance_infer_center_oc": ("point", ()),
    "distance_infer_center_oo": ("point", (("red", None), ("blue", None), ("green", None))),
    "spatial_volume_infer": ("box", (("red", None),)),
    "spatial_imagination_oc": ("box", (("red", None), ("blue", None), ("green", None))),
    "spatial_imagination_oo": ("box", (("red", None), ("blue", None), ("green", None), ("yellow", None))),
    # multi view
    "position_matching": ("box", (("red", None),)),
    "view_change_infer": ("point", ()),
    "depth_prediction_oc_mv": ("point", (("red", 0), ("blue", 1))),
    "depth_prediction_oo_mv": ("point", (("red", 0), ("blue", 1), ("green", 2))),
    "distance_prediction_oc_mv": ("point", (("red", 0),)),
    "distance_prediction_oo_mv": ("point", (("red", 0), ("blue", 1))),
    "distance_infer_center_oc_mv": ("point", ()),
    "distance_infer_center_oo_mv": ("point", (("red", 0), ("green", 1), ("blue", 2))),
    "spatial_imagination_oc_mv": ("box", (("red", 2), ("green", 0), ("blue", 1))),
    "spatial_imagination_oo_mv": ("box", (("red", 2), ("green", 0), ("blue", 1), ("yellow", 3))),
    "camera_motion_infer": ("point", ()),
    # video
    "distance_prediction_oo_video": ("point", (("red", 0), ("blue", 1))),
    "spatial_imagination_oc_video_hard": ("point", ()),
    "spatial_imagination_oo_video_hard": ("point", ()),
    "obj_frame_locate": ("box", (("red", 0),)),
    "appearance_order": ("point", ()),
    "room_size": ("point", ()),
    "obj_count": ("point", ()),
    "nav": ("point", ()),
}
SPECIAL_TASKS = ("obj_spatial_relation_oc_mv", "obj_spatial_relation_oo_mv", "spatial_imagination_map_mv",
                 "distance_infer_center_oo_video", "spatial_imagination_oo_video", "spatial_imagination_oc_video")
TASKS = tuple(MARKER_RULES) + SPECIAL_TASKS


class RecordError(ValueError):
    """A SPAR record that cannot be converted; `reason` is the skip counter."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def jsonl_files(root: Path, split: str, sources: tuple[str, ...]) -> Iterator[tuple[str, str, str, Path]]:
    """(source, task folder, answer_format, path) of every QA JSONL file of the split, sorted."""
    for source in sources:
        base = root / source / "qa_jsonl" / split
        for path in sorted(base.glob("*/*/*.jsonl")):
            yield source, path.parent.parent.name, path.parent.name, path


def clean_question(text: str) -> str:
    """A question without `<image>` placeholders (and the `Frame-k:` lines left empty by their removal)."""
    return _EMPTY_FRAME_LINE.sub("", text.replace(IMAGE_PLACEHOLDER, "")).strip()


def video_question(text: str, num_images: int) -> str:
    """toy_dataset.py's video question: "Frame-1: <image>\\n...Frame-N: <image>\\n" in place of a leading `<video>`
    (added when absent). A question that already holds one placeholder per image is kept as it is."""
    if text.count(IMAGE_PLACEHOLDER) == num_images:
        return text
    if text.count(IMAGE_PLACEHOLDER):
        raise RecordError("bad_conversations", f"the question holds {text.count(IMAGE_PLACEHOLDER)} "
                                               f"'{IMAGE_PLACEHOLDER}' placeholders for {num_images} images")
    if "<video>" not in text:
        text = "<video>\n" + text
    labels = "\n".join(f"Frame-{index + 1}: {IMAGE_PLACEHOLDER}" for index in range(num_images))
    text = text.replace("<video>\n", labels + "\n")
    if text.count(IMAGE_PLACEHOLDER) != num_images:
        raise RecordError("bad_conversations", "the question's '<video>' is not followed by a new line")
    return text


def _present(record: dict, key: str) -> bool:
    return record.get(key) not in (None, [])


def _coords(record: dict, key: str, length: int) -> tuple[float, ...]:
    """`<colour>_point` [[x, y]] / `<colour>_bbox` [[x1, y1, x2, y2]] -> the first marker's numbers."""
    value = record.get(key)
    first = value[0] if isinstance(value, list) and value else None
    return _numbers(first, length, key)


def _numbers(value: Any, length: int, key: str) -> tuple[float, ...]:
    if (not isinstance(value, list) or len(value) != length
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise RecordError("bad_markers", f"'{key}' = {value!r} is not [[{length} numbers]]")
    return tuple(float(v) for v in value)


def _image_indices(record: dict, key: str, count: int, num_images: int) -> list[int]:
    """`point_img_idx` / `bbox_img_idx` [[i0, i1, ...]] -> its first `count` image indices, checked."""
    value = record.get(key)
    indices = value[0] if isinstance(value, list) and value and isinstance(value[0], list) else None
    if indices is None or len(indices) < count:
        raise RecordError("bad_markers", f"'{key}' = {value!r} does not name {count} images as [[i0, i1, ...]]")
    for index in indices[:count]:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < num_images:
            raise RecordError("bad_markers", f"'{key}' = {value!r}: {index!r} is not an image index below {num_images}")
    return list(indices[:count])


def _suffix(kind: str) -> str:
    return "point" if kind == "point" else "bbox"


def record_markers(record: dict, task: str, num_images: int) -> list[Marker]:
    """The markers draw_marker.py draws for a record of `task`, in its drawing order. Raises RecordError."""
    length = {"point": 2, "box": 4}
    if task in MARKER_RULES:
        kind, rules = MARKER_RULES[task]
        slots = [slot for _, slot in rules if slot is not None]
        indices = _image_indices(record, f"{_suffix(kind)}_img_idx", max(slots) + 1, num_images) if slots else []
        return [Marker(kind, colour, 0 if slot is None else indices[slot],
                       _coords(record, f"{colour}_{_suffix(kind)}", length[kind]), "spar", PIL_RGB[colour])
                for colour, slot in rules]
    if task == "obj_spatial_relation_oc_mv":  # every box present on image idx[0]
        colours = [c for c in ("red", "blue", "green") if _present(record, f"{c}_bbox")]
        image = _image_indices(record, "bbox_img_idx", 1, num_images)[0] if colours else 0
        return [Marker("box", c, image, _coords(record, f"{c}_bbox", 4), "spar", PIL_RGB[c]) for c in colours]
    if task == "obj_spatial_relation_oo_mv":  # exactly two of red, blue, green: on idx[0] and idx[1]
        colours = [c for c in ("red", "blue", "green") if _present(record, f"{c}_bbox")]
        if len(colours) != 2:
            raise RecordError("bad_markers", f"obj_spatial_relation_oo_mv needs two of red/blue/green_bbox, got {colours}")
        indices = _image_indices(record, "bbox_img_idx", 2, num_images)
        return [Marker("box", c, i, _coords(record, f"{c}_bbox", 4), "spar", PIL_RGB[c]) for c, i in zip(colours, indices)]
    if task in ("spatial_imagination_map_mv", "distance_infer_center_oo_video"):  # unnamed blue markers, labelled
        kind, key = ("box", "bbox_list") if task == "spatial_imagination_map_mv" else ("point", "point_list")
        value = record.get(key)
        items = value[0] if isinstance(value, list) and value and isinstance(value[0], list) else None
        if items is None:
            raise RecordError("bad_markers", f"'{key}' = {value!r} is not [[marker, ...]]")
        indices = _image_indices(record, f"{_suffix(kind)}_img_idx", len(items), num_images)
        labels = ([f"object{i}" for i in range(len(items))] if kind == "box"
                  else ["objectA"] + [f"object{i}" for i in range(len(items) - 1)])
        return [Marker(kind, "blue", image, _numbers(item, length[kind], key), "spar_cv", CV_BLUE, label, False)
                for item, image, label in zip(items, indices, labels)]
    if task in ("spatial_imagination_oo_video", "spatial_imagination_oc_video"):
        boxes = VIDEO_BOXES if task.startswith("spatial_imagination_oo") else VIDEO_BOXES[:3]
        indices = _image_indices(record, "bbox_img_idx", len(boxes), num_images)
        return [Marker("box", colour, indices[slot], _coords(record, f"{colour}_bbox", 4), "spar_cv", rgb, label, True)
                for colour, rgb, label, slot in boxes]
    raise RecordError("unknown_task", f"type {task!r} is not a task of SPAR's draw_marker.py")


def convert_record(record: dict, source: str, task_folder: str, answer_format: str) -> tuple[QARecord, list[str]]:
    """A SPAR record -> (QA record, image paths relative to <source>/images). Raises RecordError."""
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or len(conversations) < 2 or len(conversations) % 2:
        raise RecordError("bad_conversations", "'conversations' is not a list of human/gpt pairs")
    raw_turns = []
    for index in range(0, len(conversations), 2):
        human, gpt = conversations[index], conversations[index + 1]
        if not (isinstance(human, dict) and isinstance(gpt, dict) and human.get("from") == HUMAN
                and gpt.get("from") == ASSISTANT and isinstance(human.get("value"), str)
                and isinstance(gpt.get("value"), str)):
            raise RecordError("bad_conversations", f"turn {index} is not a human/gpt pair of strings")
        raw_turns.append((human["value"], gpt["value"].strip()))
    images = record.get("image")
    images = [images] if isinstance(images, str) else images
    if not isinstance(images, list) or not images or not all(isinstance(p, str) and p for p in images):
        raise RecordError("bad_images", "'image' is not a path or a list of paths")
    task = record.get("type") or task_folder
    if not isinstance(task, str) or task not in TASKS:
        raise RecordError("unknown_task", f"type {task!r} is not a task of SPAR's draw_marker.py")
    markers = record_markers(record, task, len(images))
    if task == "nav" or len(images) >= VIDEO_MIN_IMAGES:
        first = video_question(raw_turns[0][0], len(images)).strip()
    else:
        first = clean_question(raw_turns[0][0])
    turns = [(first, raw_turns[0][1])] + [(clean_question(q), a) for q, a in raw_turns[1:]]
    if answer_format == "select":
        answer_type = "multiple_choice"
    elif answer_format == "fill" and _NUMBER.match(turns[-1][1]):
        answer_type = "numeric"
    else:
        answer_type = "free_form"
    scene = images[0].split("/")[0]
    return QARecord(f"spar_{source}", scene, task, answer_type, turns, len(images), markers), images


def _jpeg(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\xff\xd8":
        return data
    return encode_jpeg(decode_jpeg(data, str(path)), quality=95)


def convert_spar(root: str | Path, out_dir: str | Path, split: str = "train", sources: tuple[str, ...] = SOURCES,
                 tasks: tuple[str, ...] | None = None, limit: int | None = None, samples_per_shard: int = 1000,
                 progress: bool = False) -> dict[str, Any]:
    """Convert the split's QA records -> `<out_dir>/spar-<split>-NNNNNN.tar` + index. `tasks` selects task
    folders. Returns the summary {"index": ..., "written": n, "skipped": {reason: n}, "skipped_examples": {reason: the
    first MAX_EXAMPLES "file:line: why" messages}}."""
    root = Path(root)
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise ValueError(f"convert_spar: unknown sources {unknown}; SPAR-7M's are {', '.join(SOURCES)}")
    files = list(jsonl_files(root, split, sources))
    absent = sorted(set(tasks or ()) - {task for _, task, _, _ in files})
    if absent:
        raise ValueError(f"convert_spar: no task folder {absent} under <source>/qa_jsonl/{split}/ for sources "
                         f"{', '.join(sources)}; found: {', '.join(sorted({task for _, task, _, _ in files}))}")
    files = [f for f in files if tasks is None or f[1] in tasks]
    if not files:
        raise ValueError(f"{root}: no QA files at <source>/qa_jsonl/{split}/<task>/<format>/*.jsonl for sources "
                         f"{', '.join(sources)} (is --root the folder holding the source folders?)")
    skipped = Skips(reasons=None)
    written = 0
    keys: Counter[str] = Counter()
    lines = _lines(files)
    if progress:
        from tqdm import tqdm

        lines = tqdm(lines, unit="record", desc=f"spar {split}")
    with QAShardWriter(out_dir, f"spar-{split}", max_samples_per_shard=samples_per_shard) as writer:
        for source, task_folder, answer_format, jsonl, number, line in lines:
            if limit is not None and written >= limit:
                break
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise RecordError("bad_json", "not a JSON object")
                qa, paths = convert_record(record, source, task_folder, answer_format)
                images = []
                for relative in paths:
                    path = root / source / "images" / relative
                    if not path.is_file():
                        raise RecordError("missing_image", f"no image {path}")
                    images.append(_jpeg(path))
                base = sanitize_key(f"spar__{source}__{qa.task}__{record.get('id', written)}")
                keys[base] += 1
                key = base if keys[base] == 1 else f"{base}__{keys[base]}"
                writer.write(key, qa, images)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:  # json.loads of bytes decodes them
                skipped.add("bad_json", f"{jsonl}:{number}: {error}")
                continue
            except (RecordError, SampleError) as error:
                skipped.add(error.reason, f"{jsonl}:{number}: {error}")
                continue
            written += 1
    return {"index": writer.close(), "written": written, "skipped": dict(skipped.counts),
            "skipped_examples": skipped.examples}


def _lines(files) -> Iterator[tuple[str, str, str, Path, int, bytes]]:
    """(source, task folder, answer format, file, line number, one non-blank line as bytes) of every JSONL file: a
    line that is not UTF-8 fails in json.loads, as one record, not while reading the file."""
    for source, task, answer_format, path in files:
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield source, task, answer_format, path, number, line
