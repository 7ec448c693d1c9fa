"""`g2vlm shard synthetic-qa`, `g2vlm shard spar` and `g2vlm shard spar-bench`: build spatial-QA shards (schema in
`qa_schema`).

    g2vlm shard synthetic-qa --out DIR --scenes N [--views 2] [--size 64x64] [--questions 4] [--tasks a,b]
    g2vlm shard spar --root SPAR7M --out DIR [--split train] [--sources scannet,...]
    g2vlm shard spar-bench --parquet SPAR-Bench/data --out DIR
"""

from __future__ import annotations

import argparse
import time


def _names(text: str) -> tuple[str, ...]:
    """"a, b,,c" -> ("a", "b", "c")."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def add_synthetic_qa(subparsers: argparse._SubParsersAction) -> None:
    from g2vlm.datamodules.shard_cli import parse_size

    parser = subparsers.add_parser(
        "synthetic-qa", help="spatial QA with exact answers about procedural synthetic rooms",
        description="Render procedural scenes and ask questions about them (distances, depths, counts, depth order, "
                    "left/right, camera motion; numeric and multiple choice) into "
                    "<out>/synthetic_qa-<split>-NNNNNN.tar plus its index JSON. Deterministic by --seed.",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--scenes", type=int, required=True, help="number of scenes")
    parser.add_argument("--views", type=int, default=2, help="views rendered per scene (default 2)")
    parser.add_argument("--size", type=parse_size, default=(64, 64), help="image size HxW (default 64x64)")
    parser.add_argument("--questions", type=int, default=4,
                        help="samples per scene (default 4): single questions, or conversations with --turns")
    parser.add_argument("--turns", type=int, default=1,
                        help="questions per sample (default 1); > 1: conversations about one view, two objects "
                             "marked red and blue once (at most 5 questions)")
    parser.add_argument("--tasks", default=None, help="comma-separated tasks (default: all)")
    parser.add_argument("--level-camera-height", type=float, default=None, metavar="M",
                        help="cameras level at this height in metres, no pitch or roll, as from a tripod "
                             "(default: 1.0-1.9 m, looking at objects)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    parser.add_argument("--split", default="train", help="split name in the shard names (default train)")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    parser.add_argument("--samples-per-shard", type=int, default=1000, help="samples per shard (default 1000)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_synthetic_qa)


def run_synthetic_qa(args: argparse.Namespace) -> int:
    import sys

    from g2vlm.datamodules.synthetic.qa import TASKS, write_synthetic_qa_shards

    tasks = TASKS if args.tasks is None else _names(args.tasks)
    height, width = args.size
    start = time.perf_counter()
    try:
        index = write_synthetic_qa_shards(
            args.out, scenes=args.scenes, views=args.views, height=height, width=width, seed=args.seed,
            split=args.split, questions_per_scene=args.questions, tasks=tasks, workers=args.workers,
            samples_per_shard=args.samples_per_shard, progress=not args.no_progress, turns=args.turns,
            level_camera_height_m=args.level_camera_height,
        )
    except ValueError as error:
        print(f"g2vlm shard synthetic-qa: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {index['total_samples']} QA samples ({index['total_images']} images) in {len(index['shards'])} "
          f"shards ({index['total_bytes'] / 2**20:.1f} MiB) to {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


def add_spar(subparsers: argparse._SubParsersAction) -> None:
    from g2vlm.datamodules.spar import SOURCES

    parser = subparsers.add_parser(
        "spar", help="SPAR-7M QA records and their images -> QA shards",
        description="Convert SPAR-7M (ROOT/<source>/qa_jsonl/<split>/<task>/<format>/*.jsonl with the images under "
                    "ROOT/<source>/images, as the release's archives and its prepare_*_layout.py scripts lay them "
                    "out) into <out>/spar-<split>-NNNNNN.tar plus its index JSON: every task type, markers stored "
                    "as the official renderer draws them, frame labels of video samples kept; unusable records "
                    "skipped and counted by reason. Conventions: g2vlm.datamodules.spar.",
    )
    parser.add_argument("--root", required=True, help="SPAR-7M folder holding the source folders (rxr, scannet, ...)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--split", default="train", help="train or val (default train)")
    parser.add_argument("--sources", default=",".join(SOURCES), help=f"comma-separated (default {','.join(SOURCES)})")
    parser.add_argument("--tasks", default=None, help="comma-separated task folders (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many samples")
    parser.add_argument("--samples-per-shard", type=int, default=1000, help="samples per shard (default 1000)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_spar)


def run_spar(args: argparse.Namespace) -> int:
    import sys

    from g2vlm.datamodules.spar import convert_spar

    start = time.perf_counter()
    sources = _names(args.sources)
    tasks = None if args.tasks is None else _names(args.tasks)
    try:
        summary = convert_spar(args.root, args.out, args.split, sources, tasks, args.limit, args.samples_per_shard,
                               progress=not args.no_progress)
    except ValueError as error:
        print(f"g2vlm shard spar: error: {error}", file=sys.stderr)
        return 2
    index = summary["index"]
    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(summary["skipped"].items())) or "none"
    print(f"wrote {summary['written']} QA samples ({index['total_images']} images) in {len(index['shards'])} shards "
          f"({index['total_bytes'] / 2**20:.1f} MiB) to {args.out} in {time.perf_counter() - start:.1f} s; "
          f"skipped: {skipped}")
    return 0


def add_spar_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "spar-bench", help="SPAR-Bench / SPAR-Bench-Tiny parquet (Hugging Face) -> QA shards for `g2vlm bench spar`",
        description="Convert the parquet files of jasonzhango/SPAR-Bench or jasonzhango/SPAR-Bench-Tiny (e.g. "
                    "`huggingface-cli download jasonzhango/SPAR-Bench --repo-type dataset --local-dir SPAR-Bench`, "
                    "then --parquet SPAR-Bench/data) into <out>/spar_bench-test-NNNNNN.tar plus its index JSON, "
                    "each question as the official lmms-eval task prompts it. Conventions: "
                    "g2vlm.datamodules.spar_bench.",
    )
    parser.add_argument("--parquet", required=True, help="a .parquet file or a folder searched for *.parquet")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--samples-per-shard", type=int, default=1000, help="samples per shard (default 1000)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_spar_bench)


def run_spar_bench(args: argparse.Namespace) -> int:
    import sys

    from g2vlm.datamodules.spar_bench import convert_spar_bench

    start = time.perf_counter()
    try:
        summary = convert_spar_bench(args.parquet, args.out, args.samples_per_shard, progress=not args.no_progress)
    except ValueError as error:
        print(f"g2vlm shard spar-bench: error: {error}", file=sys.stderr)
        return 2
    index = summary["index"]
    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(summary["skipped"].items())) or "none"
    print(f"wrote {summary['written']} SPAR-Bench questions of {len(summary['tasks'])} tasks "
          f"({index['total_images']} images) in {len(index['shards'])} shards ({index['total_bytes'] / 2**20:.1f} MiB) "
          f"to {args.out} in {time.perf_counter() - start:.1f} s; skipped: {skipped}")
    if summary["missing_tasks"]:
        print(f"g2vlm shard spar-bench: no question of {', '.join(summary['missing_tasks'])}", file=sys.stderr)
    return 0
