"""SPAR-7M -> QA shards (`qa_schema`): `g2vlm shard spar --root SPAR7M --out DIR`.

Layout read (reference data-and-benchmarks.md §1.1-1.2):

    ROOT/<source>/qa_jsonl/<split>/<task_type>/<answer_format>/<answer_format>_<count>.jsonl
    ROOT/<source>/images/<scene>/image_color/<frame>.jpg        (paths in the records are relative to images/)

with sources rxr, scannet, scannetpp, structured3d and answer formats fill, select, sentence (and judge). One
record per line: id, conversations (human/gpt turns), image (one path or a list), type (the task), markers
`<colour>_point` [[x, y]] and `<colour>_bbox` [[x1, y1, x2, y2]] on the 0-1000 scale with `point_img_idx` /
`bbox_img_idx` naming the image of each marker (in the order red, blue, green, yellow of the markers present).

Conversion:
- `<image>` placeholders (and the `Frame-k:` lines built around them) are removed from the questions: our chat
  template places the images before the first question;
- answer_type: select -> multiple_choice; fill -> numeric when the final answer is a number, else free_form;
  sentence / judge -> free_form (SPAR-Bench tasks are scored by their own rules in any case);
- markers are kept (drawn by the loader on the ViT copy); `point_list` / `bbox_list` (map and video tasks) are
  not drawn and are counted as `markers_not_converted`;
- images are stored as they are when JPEG, re-encoded (quality 95) otherwise; a record whose image is missing
  or unreadable, or whose fields are malformed, is skipped and counted by reason.
Depth and cameras of the RGBD release are not converted yet (the samples carry no geometry members).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from g2vlm.datamodules.decoding import decode_jpeg, encode_jpeg
from g2vlm.datamodules.qa_schema import ASSISTANT, HUMAN, MARKER_COLOURS, Marker, QARecord
from g2vlm.datamodules.qa_shards import QAShardWriter
from g2vlm.datamodules.schema import SampleError, sanitize_key

SOURCES = ("rxr", "scannet", "scannetpp", "structured3d")
ANSWER_FORMATS = ("fill", "select", "sentence", "judge")
_EMPTY_FRAME_LINE = re.compile(r"^\s*Frame-\d+:\s*$\n?", re.MULTILINE)
_NUMBER = re.compile(r"^\s*-?\d+(\.\d+)?\s*$")


class RecordError(ValueError):
    """A SPAR record that cannot be converted; `reason` is the skip counter."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def jsonl_files(root: Path, split: str, sources: tuple[str, ...]) -> Iterator[tuple[str, str, str, Path]]:
    """(source, task, answer_format, path) of every QA JSONL file of the split, sorted."""
    for source in sources:
        base = root / source / "qa_jsonl" / split
        for path in sorted(base.glob("*/*/*.jsonl")):
            yield source, path.parent.parent.name, path.parent.name, path


def clean_question(text: str) -> str:
    return _EMPTY_FRAME_LINE.sub("", text.replace("<image>", "")).strip()


def _indices(value: Any, count: int) -> list[int]:
    """point_img_idx / bbox_img_idx -> one image index per marker (default 0)."""
    if value is None:
        return [0] * count
    if isinstance(value, int):
        return [value] * count
    flat = [v[0] if isinstance(v, list) and v else v for v in value]
    if len(flat) < count or not all(isinstance(v, int) for v in flat[:count]):
        raise RecordError("bad_markers", f"marker image indices {value!r} do not name {count} images")
    return flat[:count]


def record_markers(record: dict, num_images: int) -> list[Marker]:
    markers = []
    for kind, suffix, index_key, length in (("point", "point", "point_img_idx", 2), ("box", "bbox", "bbox_img_idx", 4)):
        present = [(colour, record[f"{colour}_{suffix}"]) for colour in MARKER_COLOURS if f"{colour}_{suffix}" in record]
        for (colour, value), image in zip(present, _indices(record.get(index_key), len(present))):
            coords = value[0] if value and isinstance(value[0], list) else value
            if not isinstance(coords, list) or len(coords) != length:
                raise RecordError("bad_markers", f"{colour}_{suffix} = {value!r} is not {length} numbers")
            if not 0 <= image < num_images:
                raise RecordError("bad_markers", f"{colour}_{suffix} is on image {image} of {num_images}")
            markers.append(Marker(kind, colour, image, tuple(float(v) for v in coords)))
    return markers


def convert_record(record: dict, source: str, task: str, answer_format: str) -> tuple[QARecord, list[str]]:
    """A SPAR record -> (QA record, image paths relative to <source>/images). Raises RecordError."""
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or len(conversations) < 2 or len(conversations) % 2:
        raise RecordError("bad_conversations", "'conversations' is not a list of human/gpt pairs")
    turns = []
    for index in range(0, len(conversations), 2):
        human, gpt = conversations[index], conversations[index + 1]
        if not (isinstance(human, dict) and isinstance(gpt, dict) and human.get("from") == HUMAN
                and gpt.get("from") == ASSISTANT and isinstance(human.get("value"), str)
                and isinstance(gpt.get("value"), str)):
            raise RecordError("bad_conversations", f"turn {index} is not a human/gpt pair of strings")
        turns.append((clean_question(human["value"]), gpt["value"].strip()))
    images = record.get("image")
    images = [images] if isinstance(images, str) else images
    if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
        raise RecordError("bad_images", "'image' is not a path or a list of paths")
    if answer_format == "select":
        answer_type = "multiple_choice"
    elif answer_format == "fill" and _NUMBER.match(turns[-1][1]):
        answer_type = "numeric"
    else:
        answer_type = "free_form"
    scene = images[0].split("/")[0]
    qa = QARecord(f"spar_{source}", scene, str(record.get("type") or task), answer_type, turns, len(images),
                  record_markers(record, len(images)))
    return qa, images


def _jpeg(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\xff\xd8":
        return data
    return encode_jpeg(decode_jpeg(data, str(path)), quality=95)


def convert_spar(root: str | Path, out_dir: str | Path, split: str = "train", sources: tuple[str, ...] = SOURCES,
                 tasks: tuple[str, ...] | None = None, limit: int | None = None, samples_per_shard: int = 1000,
                 progress: bool = False) -> dict[str, Any]:
    """Convert the split's QA records -> `<out_dir>/spar-<split>-NNNNNN.tar` + index. Returns the summary
    {"index": ..., "written": n, "skipped": {reason: n}, "markers_not_converted": n}."""
    root = Path(root)
    files = [f for f in jsonl_files(root, split, sources) if tasks is None or f[1] in tasks]
    if not files:
        raise ValueError(f"{root}: no QA files at <source>/qa_jsonl/{split}/<task>/<format>/*.jsonl for sources "
                         f"{', '.join(sources)} (is --root the folder holding the source folders?)")
    skipped: Counter[str] = Counter()
    written, not_converted = 0, 0
    keys: Counter[str] = Counter()
    lines = _lines(files)
    if progress:
        from tqdm import tqdm

        lines = tqdm(lines, unit="record", desc=f"spar {split}")
    with QAShardWriter(out_dir, f"spar-{split}", max_samples_per_shard=samples_per_shard) as writer:
        for source, task, answer_format, line in lines:
            if limit is not None and written >= limit:
                break
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise RecordError("bad_json", "not a JSON object")
                qa, paths = convert_record(record, source, task, answer_format)
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
            except json.JSONDecodeError:
                skipped["bad_json"] += 1
                continue
            except RecordError as error:
                skipped[error.reason] += 1
                continue
            except SampleError as error:
                skipped[error.reason] += 1
                continue
            not_converted += int("point_list" in record or "bbox_list" in record)
            written += 1
    return {"index": writer.close(), "written": written, "skipped": dict(skipped),
            "markers_not_converted": not_converted}


def _lines(files) -> Iterator[tuple[str, str, str, str]]:
    for source, task, answer_format, path in files:
        with open(path) as handle:
            for line in handle:
                if line.strip():
                    yield source, task, answer_format, line
