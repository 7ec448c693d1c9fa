"""`g2vlm shard scannet|co3dv2|dl3dv`: the raw-dataset converters' sub-commands (registered in shard_cli.py).

Only argparse at import time (`g2vlm --help` stays fast); the converters load inside `run`.
"""

from __future__ import annotations

import argparse
import sys

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
    from g2vlm.datamodules.convert_common import (
        ClipOptions,
        OutputError,
        RootError,
        convert_dataset,
        format_summary,
    )

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
    from g2vlm.datamodules.convert_scannet import ScanNet

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
    from g2vlm.datamodules.convert_co3dv2 import Co3Dv2

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
    from g2vlm.datamodules.convert_dl3dv import DL3DV

    return _run_conversion(DL3DV(args.root, args.images_dir), args)
