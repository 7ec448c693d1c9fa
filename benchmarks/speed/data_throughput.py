"""Multi-view loader throughput (`make bench-data`): clips/s and frames/s per loader worker, beside the raw decode
rate of the same files measured in the same run.

Four cases, stored size -> loader output size (H x W), on synthetic shards (8 views per clip):
- 224x224 -> 224x224 and 392x518 -> 392x518: frames stored at the output size. The focal crop factor is drawn
  from the default (0.8, 1.0), so nearly every clip is cropped and resized back up: every frame pays an upscale
  on top of a small decode, the loader's largest share of the work (its worst case);
- 480x640 -> 224x224 and 480x640 -> 392x518: frames stored as the converters write real data (long side 640,
  `ClipOptions.long_side`; ScanNet's 4:3), cropped and resized down, as training on converted shards runs.
For each stored size it renders the shards once, then, `--repeats` times in turn (so that changes of machine
load hit both alike; medians are reported):
- raw decode: every JPEG + 16-bit depth PNG of the shards decoded in this process (bytes already in memory), with
  the decoders the loader uses and nothing else;
- pipeline: the training loader of `MultiViewDataModule` (the DataLoader settings training uses) with W workers:
  tar reading, validation, view sampling, decoding, focal crop + resize with the K update, depth masking, batch
  assembly, hand-off to the main process (through shared memory, as for any tensor); all 8 views per clip; as many clips per
  batch as the shipped pretraining recipe at that output size holds (`clips_per_batch`: 12 at 224x224, 2 at
  392x518), since the hand-off and the other per-batch costs (about 4 ms a batch on a 2-core VM) are spread over
  the batch. Images leave the loader as uint8 and depth as uint16 units; the float conversions and the colour
  jitter run on the training device (`MultiViewDataModule.on_after_batch_transfer`), not here.

Wall-clock rates depend on what else runs on the machine; CPU time does much less: the worker's CPU seconds per
frame (its process CPU clock, found through /proc's list of children) beside the raw decode's CPU seconds per frame
give a ratio that load disturbs less, though not entirely (caches and memory bandwidth are shared). The main
process's CPU per frame (receiving the batches) is printed too. Stage costs are measured in this process.

    python -m g2vlm.benchmarks.speed.data_throughput [--workers 1 2] [--clips 24] [--batches 24] [--repeats 3]
        [--data-dir DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from g2vlm.datamodules.multiview.batch_assembly import BatchAssembler, ScratchBuffer
from g2vlm.datamodules.multiview.datamodule import MultiViewDataModule
from g2vlm.datamodules.multiview.streams import BatchRecipe, clip_crop_box
from g2vlm.datamodules.shards.decoding import decode_depth_png, decode_jpeg
from g2vlm.datamodules.shards.reader import iter_clip_records
from g2vlm.datamodules.shards.schema import frame_member
from g2vlm.datamodules.shards.skip_log import SkipLog
from g2vlm.datamodules.synthetic.shards import write_synthetic_shards

CONVERTED_HW = (480, 640)  # what the converters store (long side ClipOptions.long_side = 640) for 4:3 footage
# The shipped pretraining recipe at each output size: its image budget sets the clips per batch
RECIPES = {(224, 224): "pretrain_224.yaml", (392, 518): "pretrain_518.yaml"}
RECIPE_DIR = Path(__file__).resolve().parents[2] / "experiments" / "geometry"
CASES = (  # (stored H x W, loader output H x W)
    ((224, 224), (224, 224)),
    ((392, 518), (392, 518)),
    (CONVERTED_HW, (224, 224)),
    (CONVERTED_HW, (392, 518)),
)
VIEWS = 8
TARGET_RATIO = 0.6  # the floor: pipeline with 1 worker vs raw decode


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


def children_cpu_seconds() -> dict[int, float] | None:
    """CPU seconds (user + system, all threads) of each live child of this process (the loader workers), by pid;
    None without /proc. Read from the child's process CPU clock (nanoseconds; Linux encodes it as
    (~pid << 3) | 2), else from /proc/PID/stat (clock ticks: 10 ms steps, several % of a short measurement)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    seconds, parent, ticks = {}, os.getpid(), os.sysconf("SC_CLK_TCK")
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) != parent:
            continue
        pid = int(stat.parent.name)
        try:
            seconds[pid] = time.clock_gettime((~pid << 3) | 2)
        except OSError:  # no per-process CPU clock (or the process ended): tick counts
            seconds[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return seconds


def _cpu_spent(start: dict[int, float] | None, end: dict[int, float] | None) -> float | None:
    """CPU seconds the children alive at both readings spent between them."""
    if start is None or end is None:
        return None
    return sum(end[pid] - start[pid] for pid in start.keys() & end.keys())


def clips_per_batch(size: tuple[int, int]) -> int:
    """8-view clips in the image budget of the shipped pretraining recipe at output `size` (pretrain_224.yaml: 96
    images -> 12; pretrain_518.yaml: 18 -> 2), so the per-batch costs are spread as in training."""
    recipe = yaml.safe_load((RECIPE_DIR / RECIPES[tuple(size)]).read_text())
    return recipe["data"]["init_args"]["image_budget"] // VIEWS


def training_loader(shards: str, size: tuple[int, int], workers: int, batches: int):
    """The training DataLoader of `MultiViewDataModule` over the shard pattern `shards` (one shard set) for 8-view
    clips at `size`, `clips_per_batch(size)` clips a batch."""
    datamodule = MultiViewDataModule(
        train_shards=[shards], image_size=size, size_multiple=1, views_min=VIEWS, views_max=VIEWS,
        image_budget=clips_per_batch(size) * VIEWS, train_batches_per_epoch=batches, num_workers=workers,
        seed=0,
    )
    return datamodule.train_dataloader()


def pipeline_rate(shards: str, size: tuple[int, int], workers: int, batches: int) -> dict:
    """Clips/s and frames/s out of the training loader with `workers` workers (first batch of each worker
    excluded: worker start), with the CPU time of the workers and of the main process per frame."""
    iterator = iter(training_loader(shards, size, workers, (batches + 1) * workers))
    for _ in range(workers):
        next(iterator)
    clips = 0
    start, cpu_start, main_start = time.perf_counter(), children_cpu_seconds(), time.process_time()
    for _ in range(batches * workers):
        clips += next(iterator).batch_size
    seconds, cpu_end, main_cpu = time.perf_counter() - start, children_cpu_seconds(), time.process_time() - main_start
    del iterator
    frames = clips * VIEWS
    worker_cpu = _cpu_spent(cpu_start, cpu_end)
    return {"clips_per_s": clips / seconds, "frames_per_s": frames / seconds,
            "frames_per_s_per_worker": frames / seconds / workers, "workers": workers,
            # worker CPU per frame: independent of how much of the machine other processes take
            "worker_cpu_ms_per_frame": None if worker_cpu is None else worker_cpu / frames * 1e3,
            "main_cpu_ms_per_frame": main_cpu / frames * 1e3}


def stage_costs(shards: list[str], size: tuple[int, int]) -> dict:
    """CPU milliseconds per frame of each pipeline stage, measured in this process (where the time goes):
    tar reading + meta validation; JPEG + PNG decoding; the rest of batch assembly (crop, resize, depth gather and
    masking, K update, writes into the batch tensors, as in a worker)."""
    clock = time.process_time
    start = clock()
    records = list(iter_clip_records(shards, SkipLog()))
    read = clock() - start
    clips = min(clips_per_batch(size), len(records))
    recipe = BatchRecipe(image_size=size, size_multiple=1, views_min=VIEWS, views_max=VIEWS, val_views=VIEWS,
                         image_budget=clips * VIEWS)
    rng = np.random.default_rng(0)
    scratch = ScratchBuffer()  # as in a loader worker
    decode = assemble = 0.0
    frames = list(range(VIEWS))
    for first in range(0, len(records) - clips + 1, clips):  # streaming, as in the loader
        batch = BatchAssembler(clips, VIEWS, size, scratch)
        for record in records[first:first + clips]:
            start = clock()
            for index in frames:
                decode_jpeg(record.members[frame_member(index, "jpg")])
                decode_depth_png(record.members[frame_member(index, "depth.png")])
            decode += clock() - start
            start = clock()
            batch.add(record, frames, clip_crop_box(record, frames, size, recipe, rng))
            assemble += clock() - start
    per_frame = 1e3 / ((len(records) // clips) * clips * VIEWS)
    return {"read_and_validate_ms": read * per_frame, "decode_ms": decode * per_frame,
            "crop_resize_assemble_ms": (assemble - decode) * per_frame}


def _median_rows(rows: list[dict]) -> dict:
    """Field-wise median of measurement dicts (numbers), other fields from the first."""
    return {key: statistics.median(row[key] for row in rows) if isinstance(value, (int, float)) else value
            for key, value in rows[0].items()}


def _paired_ratios(raws: list[dict], pipelines: list[dict]) -> dict:
    """Pipeline (per worker) vs raw decode, each repeat against the raw decode measured just before it (the two
    saw about the same machine load): medians and ranges, by wall clock and by CPU time."""
    wall = [run["frames_per_s_per_worker"] / raw["frames_per_s"] for raw, run in zip(raws, pipelines)]
    cpu = [raw["cpu_ms_per_frame"] / run["worker_cpu_ms_per_frame"] for raw, run in zip(raws, pipelines)
           if run["worker_cpu_ms_per_frame"]]
    return {"wall_ratio": statistics.median(wall), "wall_ratio_range": [min(wall), max(wall)],
            "cpu_ratio": statistics.median(cpu) if cpu else None,
            "cpu_ratio_range": [min(cpu), max(cpu)] if cpu else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="loader worker counts (default 1 2)")
    parser.add_argument("--clips", type=int, default=24, help="synthetic clips per stored size (default 24)")
    parser.add_argument("--batches", type=int, default=24, help="timed batches per worker (default 24)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="measurements of each rate, medians reported (default 3)")
    parser.add_argument("--data-dir", help="keep the rendered shards here (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as inside a DataLoader worker: the raw decode is one process too

    results = []
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(args.data_dir or temporary)
        for stored_hw, output_hw in CASES:
            out = root / f"bench-{stored_hw[0]}x{stored_hw[1]}"
            if not (out / "synthetic-bench-index.json").exists():
                write_synthetic_shards(out, scenes=args.clips, views=VIEWS, height=stored_hw[0], width=stored_hw[1],
                                       seed=0, split="bench", workers=2, clips_per_shard=max(1, args.clips // 4))
            shards = sorted(str(path) for path in out.glob("synthetic-bench-*.tar"))
            raws, pipelines = [], {workers: [] for workers in args.workers}
            pattern = str(out / "synthetic-bench-*.tar")
            for _ in range(args.repeats):
                raws.append(raw_decode_rate(shards, repeats=2))
                for workers in args.workers:
                    pipelines[workers].append(pipeline_rate(pattern, output_hw, workers, args.batches))
            results.append({
                "case": f"{stored_hw[0]}x{stored_hw[1]} -> {output_hw[0]}x{output_hw[1]}",
                "stored": list(stored_hw), "output": list(output_hw), "repeats": args.repeats,
                "raw_decode": _median_rows(raws),
                "pipeline": {f"{workers} worker(s)": {**_median_rows(rows), **_paired_ratios(raws, rows)}
                             for workers, rows in pipelines.items()},
                "stage_cpu_ms_per_frame": stage_costs(shards, output_hw),
                "all_measurements": {"raw_decode": raws, **{f"{w} worker(s)": rows for w, rows in pipelines.items()}},
            })

    print(f"multi-view loader throughput ({VIEWS} views per clip, frames/s, median of {args.repeats}; ratios paired "
          "with the raw decode measured just before; raw = JPEG + 16-bit PNG decode only)")
    print(f"{'stored -> output HxW':<20} {'raw decode':>11} "
          + " ".join(f"{name:>22}" for name in results[0]["pipeline"]))
    for row in results:
        raw = row["raw_decode"]["frames_per_s"]
        cells = [f"{p['frames_per_s_per_worker']:7.1f}/w ({p['wall_ratio']:4.2f}x raw)"
                 for p in row["pipeline"].values()]
        print(f"{row['case']:<20} {raw:11.1f} " + " ".join(f"{cell:>22}" for cell in cells))
    print("CPU ms per frame by stage (in-process): " + ", ".join(results[0]["stage_cpu_ms_per_frame"]))
    for row in results:
        print(f"{row['case']:<20} " + "  ".join(f"{value:6.2f}" for value in row["stage_cpu_ms_per_frame"].values()))
    for row in results:
        one = row["pipeline"].get("1 worker(s)")
        if one is not None:
            verdict = "meets" if one["wall_ratio"] >= TARGET_RATIO else "misses"
            low, high = one["wall_ratio_range"]
            line = (f"{row['case']}: pipeline (1 worker) at {one['wall_ratio']:.2f}x raw decode by wall clock "
                    f"({low:.2f}-{high:.2f}), {verdict} the {TARGET_RATIO}x floor; {one['clips_per_s']:.1f} clips/s")
            if one["cpu_ratio"] is not None:
                verdict = "meets" if one["cpu_ratio"] >= TARGET_RATIO else "misses"
                low, high = one["cpu_ratio_range"]
                line += (f"; by CPU time (load-independent): {one['worker_cpu_ms_per_frame']:.2f} ms/frame in the "
                         f"worker vs {row['raw_decode']['cpu_ms_per_frame']:.2f} raw = {one['cpu_ratio']:.2f}x "
                         f"({low:.2f}-{high:.2f}), {verdict} it; main process "
                         f"{one['main_cpu_ms_per_frame']:.2f} ms/frame")
            print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
