"""Multi-view loader throughput (`make bench-data`): clips/s and frames/s per loader worker, beside the raw decode
rate of the same files measured in the same run.

For each size (224x224 and 392x518, H x W) it renders synthetic shards at that size (8 views per clip), then:
- raw decode: every JPEG + 16-bit depth PNG of the shards decoded in this process (bytes already in memory);
- pipeline: `TrainClipBatches` through a DataLoader with W workers (tar reading, view sampling, decoding,
  focal crop + resize with the K update, validity masks, collation, hand-off to the main process). The output
  size equals the stored size, all 8 views per clip. Images leave the loader as uint8; the float conversion and
  the colour jitter run on the training device (`MultiViewDataModule.on_after_batch_transfer`), not here.

    python -m g2vlm.benchmarks.data_throughput [--workers 1 2] [--clips 24] [--batches 24] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from g2vlm.datamodules.clip_reader import SkipLog, iter_clip_records
from g2vlm.datamodules.clip_streams import (
    BatchRecipe,
    TrainClipBatches,
    collate,
    prepare_clip,
)
from g2vlm.datamodules.decoding import decode_depth_png, decode_jpeg
from g2vlm.datamodules.synthetic.shards import write_synthetic_shards
from torch.utils.data import DataLoader

SIZES = ((224, 224), (392, 518))
VIEWS = 8
TARGET_RATIO = 0.7  # pipeline with 1 worker vs raw decode


def raw_decode_rate(shards: list[str], repeats: int) -> dict:
    """Frames/s decoding JPEG + depth PNG only, from bytes held in memory."""
    members = []
    for path in shards:
        with tarfile.open(path) as tar:
            members += [(info.name, tar.extractfile(info).read()) for info in tar if info.isfile()]
    jpegs = [data for name, data in members if name.endswith(".jpg")]
    depths = [data for name, data in members if name.endswith(".depth.png")]
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        for data in jpegs:
            decode_jpeg(data)
        for data in depths:
            decode_depth_png(data)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    frames = repeats * len(jpegs)
    return {"frames_per_s": frames / seconds, "clips_per_s": frames / VIEWS / seconds, "frames": frames,
            "cpu_ms_per_frame": cpu_seconds / frames * 1e3}


def children_cpu_seconds() -> float | None:
    """User + system CPU seconds of this process's live children (the loader workers); None without /proc."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    total, parent, ticks = 0.0, os.getpid(), os.sysconf("SC_CLK_TCK")
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == parent:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def pipeline_rate(shards: list[str], size: tuple[int, int], workers: int, batches: int) -> dict:
    """Clips/s and frames/s out of a DataLoader with `workers` workers (first batch excluded: worker start)."""
    recipe = BatchRecipe(
        image_size=size, size_multiple=1, views_min=VIEWS, views_max=VIEWS, val_views=VIEWS, image_budget=2 * VIEWS,
    )
    dataset = TrainClipBatches([shards], None, recipe, batches_per_epoch=(batches + 1) * workers, seed=0)
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, prefetch_factor=4)
    iterator = iter(loader)
    next(iterator)
    clips = 0
    start, cpu_start = time.perf_counter(), children_cpu_seconds()
    for _ in range(batches * workers):
        clips += next(iterator).batch_size
    seconds, cpu_end = time.perf_counter() - start, children_cpu_seconds()
    del iterator
    frames = clips * VIEWS
    return {"clips_per_s": clips / seconds, "frames_per_s": frames / seconds,
            "frames_per_s_per_worker": frames / seconds / workers, "workers": workers,
            # worker CPU per frame: independent of how much of the machine other processes take
            "worker_cpu_ms_per_frame": None if cpu_start is None else (cpu_end - cpu_start) / frames * 1e3}


def stage_costs(shards: list[str], size: tuple[int, int]) -> dict:
    """CPU milliseconds per frame of each pipeline stage, measured in this process (where the time goes)."""
    recipe = BatchRecipe(image_size=size, size_multiple=1, views_min=VIEWS, views_max=VIEWS, val_views=VIEWS,
                         image_budget=2 * VIEWS)
    rng = np.random.default_rng(0)
    clock = time.process_time
    start = clock()
    records = list(iter_clip_records(shards, SkipLog()))
    read = clock() - start
    decode = prepare = batch = 0.0
    for first in range(0, len(records) - 1, 2):  # streaming, as in the loader: nothing kept beyond a batch
        pair = records[first:first + 2]
        start = clock()
        for record in pair:
            record.decode()
        decode += clock() - start
        start = clock()
        items = [prepare_clip(record, list(range(VIEWS)), size, recipe, rng) for record in pair]
        prepare += clock() - start
        start = clock()
        collate(items)
        batch += clock() - start
    frames = (len(records) // 2) * 2 * VIEWS
    per_frame = 1e3 / frames
    return {"read_and_validate_ms": read * per_frame, "decode_ms": decode * per_frame,
            "crop_resize_masks_ms": (prepare - decode) * per_frame, "collate_ms": batch * per_frame}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="loader worker counts (default 1 2)")
    parser.add_argument("--clips", type=int, default=24, help="synthetic clips per size (default 24)")
    parser.add_argument("--batches", type=int, default=24, help="timed batches (2 clips each) per worker (default 24)")
    parser.add_argument("--data-dir", help="keep the rendered shards here (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as inside a DataLoader worker: the raw decode is one process too

    results = []
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(args.data_dir or temporary)
        for height, width in SIZES:
            out = root / f"bench-{height}x{width}"
            if not (out / "synthetic-bench-index.json").exists():
                write_synthetic_shards(out, scenes=args.clips, views=VIEWS, height=height, width=width, seed=0,
                                       split="bench", workers=2, clips_per_shard=max(1, args.clips // 4))
            shards = sorted(str(path) for path in out.glob("synthetic-bench-*.tar"))
            raw = raw_decode_rate(shards, repeats=2)
            row = {"size": f"{height}x{width}", "raw_decode": raw, "pipeline": {},
                   "stage_cpu_ms_per_frame": stage_costs(shards, (height, width))}
            for workers in args.workers:
                row["pipeline"][f"{workers} worker(s)"] = pipeline_rate(shards, (height, width), workers, args.batches)
            results.append(row)

    print(f"multi-view loader throughput ({VIEWS} views per clip, frames/s; raw = JPEG + 16-bit PNG decode only)")
    header = f"{'size HxW':<10} {'raw decode':>11} " + " ".join(f"{name:>22}" for name in results[0]["pipeline"])
    print(header)
    for row in results:
        raw = row["raw_decode"]["frames_per_s"]
        cells = [
            f"{p['frames_per_s_per_worker']:7.1f}/w ({p['frames_per_s_per_worker'] / raw:4.2f}x raw)"
            for p in row["pipeline"].values()
        ]
        print(f"{row['size']:<10} {raw:11.1f} " + " ".join(f"{cell:>22}" for cell in cells))
    print("CPU ms per frame by stage (in-process): " + ", ".join(results[0]["stage_cpu_ms_per_frame"]))
    for row in results:
        print(f"{row['size']:<10} " + "  ".join(f"{value:6.2f}" for value in row["stage_cpu_ms_per_frame"].values()))
    for row in results:
        one = row["pipeline"].get("1 worker(s)")
        if one is not None:
            ratio = one["frames_per_s"] / row["raw_decode"]["frames_per_s"]
            verdict = "meets" if ratio >= TARGET_RATIO else "misses"
            line = (f"{row['size']}: pipeline (1 worker) at {ratio:.2f}x raw decode, "
                    f"{verdict} the {TARGET_RATIO}x target; {one['clips_per_s']:.1f} clips/s")
            if one["worker_cpu_ms_per_frame"]:
                cpu_ratio = row["raw_decode"]["cpu_ms_per_frame"] / one["worker_cpu_ms_per_frame"]
                line += (f"; by CPU time (load-independent): {one['worker_cpu_ms_per_frame']:.2f} ms/frame in the "
                         f"worker vs {row['raw_decode']['cpu_ms_per_frame']:.2f} raw = {cpu_ratio:.2f}x")
            print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
