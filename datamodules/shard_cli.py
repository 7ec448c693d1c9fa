"""`g2vlm shard DATASET ...`: build clip shards. One nested sub-command per dataset.

    g2vlm shard synthetic --out DIR --scenes N --views V --size HxW --seed S [--workers W] [--split train]
    g2vlm shard scannet --root RAW --out DIR [--frame-stride 10] [--clip-frames 24] [--clip-step 12] ...
    g2vlm shard co3dv2 --root RAW --out DIR [--categories apple ball ...] ...
    g2vlm shard dl3dv --root RAW --out DIR [--images-dir images_4] ...

Each dataset has an `add_<dataset>(subparsers)` function listed in DATASET_PARSERS. The raw-data converters
(convert_cli.py) resume: a re-run with the same --out skips the shards already finished.
"""

from __future__ import annotations

import argparse


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' -> (H, W)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} must look like HxW, e.g. 64x64 or 392x518") from None
    if height <= 0 or width <= 0:
        raise argparse.ArgumentTypeError(f"size {text!r} must be positive")
    return height, width


def add_synthetic(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synthetic", help="procedural textured rooms with objects: exact depth, cameras, object annotations",
        description="Render procedural scenes (one clip of V views each) into <out>/synthetic-<split>-NNNNNN.tar "
                    "plus synthetic-<split>-index.json. Deterministic by --seed, whatever --workers is. Each shard is "
                    "written beside the folder first and recorded in synthetic-<split>-progress.json once in place, "
                    "so the index always lists exactly the finished shards; re-running the same command resumes. "
                    "Existing synthetic-<split> shards written otherwise are refused unless --overwrite.",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--scenes", type=int, required=True, help="number of scenes (clips)")
    parser.add_argument("--views", type=int, default=4, help="views per scene (default 4)")
    parser.add_argument("--size", type=parse_size, default=(64, 64), help="image size HxW (default 64x64)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed; scene i depends only on (seed, i)")
    parser.add_argument("--split", default="train", help="split name in the shard names (default train)")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    parser.add_argument("--clips-per-shard", type=int, default=100, help="clips per shard (default 100)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the synthetic-<split> shards, index and progress file already in --out first")
    parser.set_defaults(run=run_synthetic)


def run_synthetic(args: argparse.Namespace) -> int:
    import sys
    import time

    from g2vlm.datamodules.convert_common import OutputError
    from g2vlm.datamodules.synthetic.shards import write_synthetic_shards

    height, width = args.size
    start = time.perf_counter()
    try:
        index = write_synthetic_shards(
            args.out, scenes=args.scenes, views=args.views, height=height, width=width, seed=args.seed,
            split=args.split, workers=args.workers, clips_per_shard=args.clips_per_shard,
            progress=not args.no_progress, overwrite=args.overwrite,
        )
    except OutputError as error:
        print(f"g2vlm shard synthetic: error: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    print(f"wrote {index['total_clips']} clips, {index['total_frames']} frames in {len(index['shards'])} shards "
          f"({index['total_bytes'] / 2**20:.1f} MiB) to {args.out} in {seconds:.1f} s "
          f"({index['total_frames'] / seconds:.0f} views/s)")
    return 0


from g2vlm.datamodules.convert_cli import add_co3dv2, add_dl3dv, add_scannet  # noqa: E402 (raw-data converters)
from g2vlm.datamodules.qa_shard_cli import (  # noqa: E402 (QA converters: qa_shard_cli.py)
    add_spar,
    add_spar_bench,
    add_synthetic_qa,
)

DATASET_PARSERS = (add_synthetic, add_synthetic_qa, add_spar, add_spar_bench, add_scannet, add_co3dv2, add_dl3dv)


def add_to(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("shard", help="build clip shards (WebDataset tars) from a dataset",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    datasets = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for add_dataset in DATASET_PARSERS:
        add_dataset(datasets)
