"""SPAR-Bench (and SPAR-Bench-Tiny) as distributed on Hugging Face -> QA shards that `g2vlm bench spar` reads:
`g2vlm shard spar-bench --parquet FILE_OR_DIR --out DIR`.

Read: the parquet files of jasonzhango/SPAR-Bench or jasonzhango/SPAR-Bench-Tiny (`data/test-NNNNN-of-NNNNN.parquet`,
split `test`; 7,211 and 1,000 rows), columns id (int64), img_type ("single_view", "multi_view", ...), format_type
("fill", "select", ...), task, source, image (a list of Hugging Face images: structs {bytes, path}), question,
answer (strings). The images carry their markers already (the benchmark ships them drawn). Files are read a row
group at a time.

Written: one QA sample per row, key `sparbench_<id>`, `<out>/spar_bench-test-NNNNNN.tar` plus its index: the row's
images (JPEG as shipped, anything else re-encoded at quality 95), task and answer as given, answer_type numeric /
multiple_choice / free_form for the numeric, multiple-choice and view_change_infer tasks, and as question the text
the official lmms-eval task gives the model (fudan-zvg/spar `lmms-eval/lmms_eval/tasks/sparbench/utils.py`
`sparbench_doc_to_text` with the yaml's default prompts; its Qwen2-VL model drops `<image>` and puts the images
first, as our template does):

    numeric:          "\\n" + question + "\\nPlease answer the question using a single word or phrase."
    multiple choice:  "\\n" + question + "\\n" + note + "\\nAnswer with the option's letter from the given choices directly."
                      (note: position_matching and camera_motion_infer state the 0-1000 box coordinates; else "")
    view_change_infer: "\\n" + question + "\\n\\n"

Rows that cannot be used are skipped and counted: unknown_task (not one of the 20 tasks), bad_row (a missing or
non-string field), bad_images (no image, or one without bytes), decode (unreadable image bytes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from g2vlm.datamodules.convert.common import Skips
from g2vlm.datamodules.qa.schema import IMAGE_PLACEHOLDER, QARecord
from g2vlm.datamodules.qa.shards import QAShardWriter
from g2vlm.datamodules.shards.decoding import decode_jpeg, encode_jpeg
from g2vlm.datamodules.shards.schema import SampleError, sanitize_key
from g2vlm.metrics.spatial_qa import MULTIPLE_CHOICE_TASKS, NUMERIC_TASKS, SPAR_TASKS

COLUMNS = ("id", "img_type", "format_type", "task", "source", "image", "question", "answer")
NUMERIC_POST_PROMPT = "Please answer the question using a single word or phrase."
CHOICE_POST_PROMPT = "Answer with the option's letter from the given choices directly."
BOX_NOTE = ("The values represent the bounding box coordinates normalized to a 0-1000 scale, with the top-left "
            "corner as the origin of the image.")
BOX_NOTE_TASKS = ("position_matching", "camera_motion_infer")
SHARD_PREFIX = "spar_bench-test"


class RowError(ValueError):
    """A SPAR-Bench row that cannot be converted; `reason` is the skip counter."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def official_prompt(task: str, question: str) -> str:
    """The text lmms-eval's SPAR-Bench task gives the model for one row (default prompts; `<image>` removed)."""
    if task in NUMERIC_TASKS:
        text = "\n" + question + "\n" + NUMERIC_POST_PROMPT
    elif task in MULTIPLE_CHOICE_TASKS:
        note = BOX_NOTE if task in BOX_NOTE_TASKS else ""
        text = "\n" + question + "\n" + note + "\n" + CHOICE_POST_PROMPT
    elif task == "view_change_infer":
        text = "\n" + question + "\n" + "" + "\n" + ""
    else:
        raise RowError("unknown_task", f"task {task!r} is not one of SPAR-Bench's 20 tasks")
    return text.replace(IMAGE_PLACEHOLDER, "")


def answer_type(task: str) -> str:
    if task in NUMERIC_TASKS:
        return "numeric"
    return "multiple_choice" if task in MULTIPLE_CHOICE_TASKS else "free_form"


def parquet_files(path: str | Path) -> list[Path]:
    """A .parquet file, or every .parquet file under a folder (sorted). Raises ValueError when there is none."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet")) if path.is_dir() else []
    if not files:
        raise ValueError(f"--parquet {path}: no .parquet file there (a SPAR-Bench download holds data/test-*.parquet)")
    return files


def _check_schema(path: Path, schema) -> None:
    import pyarrow as pa

    missing = [name for name in COLUMNS if name not in schema.names]
    if missing:
        raise ValueError(f"{path}: not a SPAR-Bench parquet file: no column(s) {', '.join(missing)} "
                         f"(columns: {', '.join(schema.names)})")
    image = schema.field("image").type
    if not (pa.types.is_list(image) or pa.types.is_large_list(image)) or not pa.types.is_struct(image.value_type) \
            or image.value_type.get_field_index("bytes") < 0:
        raise ValueError(f"{path}: column 'image' is {image}, not a list of Hugging Face images (struct {{bytes, path}})")


def iter_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of one parquet file as dicts, a row group at a time."""
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(path)
    _check_schema(path, handle.schema_arrow)
    for group in range(handle.num_row_groups):
        yield from handle.read_row_group(group, columns=list(COLUMNS)).to_pylist()


def _jpeg(data: bytes, where: str) -> bytes:
    if data[:2] == b"\xff\xd8":
        return data
    return encode_jpeg(decode_jpeg(data, where), quality=95)


def convert_row(row: dict[str, Any], where: str) -> tuple[QARecord, list[bytes]]:
    """One SPAR-Bench row -> (QA record, JPEG images). Raises RowError or SampleError (decode)."""
    for name in ("task", "question", "answer"):
        if not isinstance(row.get(name), str):
            raise RowError("bad_row", f"{where}: field '{name}' is {row.get(name)!r}, not a string")
    task = row["task"]
    try:
        question = official_prompt(task, row["question"])
    except RowError as error:
        raise RowError(error.reason, f"{where}: {error}") from None
    images = row.get("image")
    if not isinstance(images, list) or not images or not all(isinstance(i, dict) and i.get("bytes") for i in images):
        raise RowError("bad_images", f"{where}: field 'image' holds no image bytes")
    jpegs = [_jpeg(image["bytes"], f"{where} image {k}") for k, image in enumerate(images)]
    source = row.get("source") if isinstance(row.get("source"), str) and row.get("source") else "unknown"
    record = QARecord("spar_bench", source, task, answer_type(task), [(question, row["answer"])], len(jpegs))
    return record, jpegs


def convert_spar_bench(parquet: str | Path, out_dir: str | Path, samples_per_shard: int = 1000,
                       progress: bool = False) -> dict[str, Any]:
    """Convert the parquet file(s) -> `<out_dir>/spar_bench-test-NNNNNN.tar` + index. Returns the summary
    {"index": ..., "written": n, "skipped": {reason: n}, "skipped_examples": {reason: the first MAX_EXAMPLES
    messages, each naming the file and row id}, "tasks": {task: n}, "missing_tasks": [...]}."""
    files = parquet_files(parquet)
    skipped = Skips(reasons=None)
    tasks: Counter[str] = Counter()
    keys: Counter[str] = Counter()
    rows = ((path, row) for path in files for row in iter_rows(path))
    if progress:
        from tqdm import tqdm

        rows = tqdm(rows, unit="row", desc="spar-bench")
    with QAShardWriter(out_dir, SHARD_PREFIX, max_samples_per_shard=samples_per_shard) as writer:
        for path, row in rows:
            where = f"{path.name} id {row.get('id')}"
            try:
                record, images = convert_row(row, where)
                base = sanitize_key(f"sparbench_{row.get('id')}")
                keys[base] += 1
                writer.write(base if keys[base] == 1 else f"{base}__{keys[base]}", record, images)
            except (RowError, SampleError) as error:
                skipped.add(error.reason, str(error))
                continue
            tasks[record.task] += 1
    missing = [task for task in SPAR_TASKS if task not in tasks]
    return {"index": writer.close(), "written": sum(tasks.values()), "skipped": dict(skipped.counts),
            "skipped_examples": skipped.examples, "tasks": dict(tasks),
            "missing_tasks": missing}
