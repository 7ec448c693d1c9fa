"""`g2vlm shard DATASET ...`: build shards (WebDataset tars). One nested sub-command per dataset.

Clip shards (multi-view, schema in `g2vlm.datamodules.shards.schema`):

    g2vlm shard synthetic --out DIR --scenes N --views V --size HxW --seed S [--workers W] [--split train]
    g2vlm shard scannet --root RAW --out DIR [--frame-stride 10] [--clip-frames 24] [--clip-step 12] ...
    g2vlm shard co3dv2 --root RAW --out DIR [--categories apple ball ...] ...
    g2vlm shard dl3dv --root RAW --out DIR [--images-dir images_4] ...

Spatial-QA shards (schema in `g2vlm.datamodules.qa.schema`):

    g2vlm shard synthetic-qa --out DIR --scenes N [--views 2] [--size 64x64] [--questions 4] [--tasks a,b]
    g2vlm shard spar --root SPAR7M --out DIR [--split train] [--sources scannet,...]
    g2vlm shard spar-bench --parquet SPAR-Bench/data --out DIR

Each dataset has an `add_<dataset>(subparsers)` function listed in DATASET_PARSERS. The raw-data converters
resume: a re-run with the same --out skips the shards already finished. `g2vlm --help` does not import this
module (the tool registry, `g2vlm.tools`).
"""

from __future__ import annotations

import argparse
import sys
import time

from g2vlm.datamodules.convert.co3dv2 import Co3Dv2
from g2vlm.datamodules.convert.common import ClipOptions, OutputError, RootError, convert_dataset, format_summary
from g2vlm.datamodules.convert.dl3dv import DL3DV
from g2vlm.datamodules.convert.scannet import ScanNet
from g2vlm.datamodules.convert.spar import SOURCES, convert_spar
from g2vlm.datamodules.convert.spar_bench import convert_spar_bench
from g2vlm.datamodules.synthetic.qa import TASKS, write_synthetic_qa_shards
from g2vlm.datamodules.synthetic.shards import write_synthetic_shards


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


def _names(text: str) -> tuple[str, ...]:
    """"a, b,,c" -> ("a", "b", "c")."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def add_synthetic_qa(subparsers: argparse._SubParsersAction) -> None:
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
    parser = subparsers.add_parser(
        "spar", help="SPAR-7M QA records and their images -> QA shards",
        description="Convert SPAR-7M (ROOT/<source>/qa_jsonl/<split>/<task>/<format>/*.jsonl with the images under "
                    "ROOT/<source>/images, as the release's archives and its prepare_*_layout.py scripts lay them "
                    "out) into <out>/spar-<split>-NNNNNN.tar plus its index JSON: every task type, markers stored "
                    "as the official renderer draws them, frame labels of video samples kept; unusable records "
                    "skipped, counted by reason, and the first of each named by file and line. Conventions: "
                    "g2vlm.datamodules.convert.spar.",
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
    print(f"wrote {summary['written']} QA samples ({index['total_images']} images) in {len(index['shards'])} shards "
          f"({index['total_bytes'] / 2**20:.1f} MiB) to {args.out} in {time.perf_counter() - start:.1f} s; "
          f"skipped: {_skip_counts(summary)}")
    _print_skip_examples(summary)
    return 0


def _skip_counts(summary: dict) -> str:
    """'reason n, ...' of a QA conversion summary, or 'none'."""
    return ", ".join(f"{reason} {n}" for reason, n in sorted(summary["skipped"].items())) or "none"


def _print_skip_examples(summary: dict) -> None:
    """The first records skipped for each reason, each naming its file and line (or row id) and why."""
    for reason, examples in sorted(summary["skipped_examples"].items()):
        for example in examples:
            print(f"  skipped ({reason}) e.g. {example}")


def add_spar_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "spar-bench", help="SPAR-Bench / SPAR-Bench-Tiny parquet (Hugging Face) -> QA shards for `g2vlm bench spar`",
        description="Convert the parquet files of jasonzhango/SPAR-Bench or jasonzhango/SPAR-Bench-Tiny (e.g. "
                    "`huggingface-cli download jasonzhango/SPAR-Bench --repo-type dataset --local-dir SPAR-Bench`, "
                    "then --parquet SPAR-Bench/data) into <out>/spar_bench-test-NNNNNN.tar plus its index JSON, "
                    "each question as the official lmms-eval task prompts it. Conventions: "
                    "g2vlm.datamodules.convert.spar_bench.",
    )
    parser.add_argument("--parquet", required=True, help="a .parquet file or a folder searched for *.parquet")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--samples-per-shard", type=int, default=1000, help="samples per shard (default 1000)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_spar_bench)


def run_spar_bench(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        summary = convert_spar_bench(args.parquet, args.out, args.samples_per_shard, progress=not args.no_progress)
    except ValueError as error:
        print(f"g2vlm shard spar-bench: error: {error}", file=sys.stderr)
        return 2
    index = summary["index"]
    print(f"wrote {summary['written']} SPAR-Bench questions of {len(summary['tasks'])} tasks "
          f"({index['total_images']} images) in {len(index['shards'])} shards ({index['total_bytes'] / 2**20:.1f} MiB) "
          f"to {args.out} in {time.perf_counter() - start:.1f} s; skipped: {_skip_counts(summary)}")
    _print_skip_examples(summary)
    if summary["missing_tasks"]:
        print(f"g2vlm shard spar-bench: no question of {', '.join(summary['missing_tasks'])}", file=sys.stderr)
    return 0


CONVERSION_EPILOG = (
    "Clips are windows of --clip-frames keyframes (every --frame-stride-th frame with a valid pose) starting every "
    "--clip-step keyframes, stored with the long side at most --long-side px and K updated exactly. Shards "
    "<out>/<dataset>-<split>-NNNNNN.tar close at a scene boundary once they reach --shard-size-mb; finished shards "
    "are recorded in <dataset>-<split>-progress.json, so a re-run with the same options resumes (and writes nothing "
    "when all is done). Bad frames and scenes are skipped, counted and named in the summary at the end."
)


def _add_conversion_options(parser: argparse.ArgumentParser, frame_stride: int) -> None:
    """The options every raw-dataset converter shares."""
    parser.add_argument("--root", required=True, help="the raw dataset folder")
    parser.add_argument("--out", required=True, help="output folder for the shards")
    parser.add_argument("--split", default="train", help="split name in the shard names (default train)")
    parser.add_argument("--scene-list", help="a text file naming the scenes to convert, one per line (default: all)")
    parser.add_argument("--frame-stride", type=int, default=frame_stride,
                        help=f"keep every n-th frame with a valid pose as a keyframe (default {frame_stride})")
    parser.add_argument("--clip-frames", type=int, default=24, help="keyframes per clip (default 24)")
    parser.add_argument("--clip-step", type=int, default=12,
                        help="keyframes between clip starts; below --clip-frames clips overlap (default 12)")
    parser.add_argument("--long-side", type=int, default=640,
                        help="stored long side in px, never upscaled (default 640)")
    parser.add_argument("--shard-size-mb", type=float, default=1024.0,
                        help="close a shard at the first scene boundary past this size (default 1024)")
    parser.add_argument("--workers", type=int, default=1, help="scene-converting processes (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_conversion(dataset, args: argparse.Namespace) -> int:

    command = f"g2vlm shard {dataset.name}"
    try:
        options = ClipOptions(clip_frames=args.clip_frames, clip_step=args.clip_step,
                              frame_stride=args.frame_stride, long_side=args.long_side)
    except ValueError as error:
        print(f"{command}: {error}", file=sys.stderr)
        return 2
    scene_names = None
    if args.scene_list is not None:
        try:
            with open(args.scene_list, encoding="utf-8") as lines:
                scene_names = [line.strip() for line in lines if line.strip()]
        except OSError as error:
            print(f"{command}: --scene-list: {error}", file=sys.stderr)
            return 2
    try:
        summary = convert_dataset(
            dataset, args.out, options, split=args.split, scene_names=scene_names,
            shard_bytes=int(args.shard_size_mb * 2**20), workers=args.workers, progress=not args.no_progress,
        )
    except (RootError, OutputError) as error:
        print(f"{command}: {error}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


def add_scannet(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scannet", help="ScanNet v2 SensReader export (colour, 16-bit mm depth, poses, intrinsics)",
        description="Convert an exported ScanNet v2 (<root>/<scene>/{color/<i>.jpg, depth/<i>.png, pose/<i>.txt, "
                    "intrinsic/intrinsic_depth.txt}) into clip shards: colour resized onto the depth grid with "
                    "intrinsic_depth, depth in mm kept bit for bit (depth_scale 0.001), frames with a non-finite "
                    "pose skipped.",
        epilog=CONVERSION_EPILOG,
    )
    _add_conversion_options(parser, frame_stride=10)
    parser.set_defaults(run=run_scannet)


def run_scannet(args: argparse.Namespace) -> int:
    return _run_conversion(ScanNet(args.root), args)


def add_co3dv2(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "co3dv2", help="Co3Dv2 (frame_annotations.jgz, float16 depth PNGs, foreground masks, PyTorch3D cameras)",
        description="Convert Co3Dv2 (<root>/<category>/frame_annotations.jgz and the sequences' images/, depths/, "
                    "depth_masks/, masks/) into clip shards: one scene per sequence, PyTorch3D NDC cameras "
                    "converted to OpenCV K and camera_to_world, depth as float16 bit for bit in COLMAP units (not "
                    "metric), foreground masks; sequences with viewpoint_quality_score <= 0.5 skipped.",
        epilog=CONVERSION_EPILOG,
    )
    _add_conversion_options(parser, frame_stride=4)
    parser.add_argument("--categories", nargs="+", help="categories to convert (default: all under --root)")
    parser.set_defaults(run=run_co3dv2)


def run_co3dv2(args: argparse.Namespace) -> int:
    return _run_conversion(Co3Dv2(args.root, args.categories), args)


def add_dl3dv(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dl3dv", help="DL3DV-10K (images + Nerfstudio transforms.json; cameras only, no depth)",
        description="Convert DL3DV-10K (<root>/[<subset>/]<scene>/transforms.json + <images-dir>/) into clip "
                    "shards: OpenGL camera-to-world converted to OpenCV, intrinsics scaled to the stored images, "
                    "has_depth false.",
        epilog=CONVERSION_EPILOG,
    )
    _add_conversion_options(parser, frame_stride=4)
    parser.add_argument("--images-dir", default="images_4",
                        help="image folder inside each scene (default images_4, the 960P release)")
    parser.set_defaults(run=run_dl3dv)


def run_dl3dv(args: argparse.Namespace) -> int:
    return _run_conversion(DL3DV(args.root, args.images_dir), args)


DATASET_PARSERS = (add_synthetic, add_synthetic_qa, add_spar, add_spar_bench, add_scannet, add_co3dv2, add_dl3dv)


def add_to(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("shard", help="build clip shards (WebDataset tars) from a dataset",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    datasets = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for add_dataset in DATASET_PARSERS:
        add_dataset(datasets)
