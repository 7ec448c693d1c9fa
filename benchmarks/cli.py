"""`g2vlm bench depth|pose|pointmap`: the literature's evaluation protocols on a checkpoint or saved predictions.

    g2vlm bench depth                                   # synthetic held-out set, the demo's checkpoint
    g2vlm bench depth --dataset sintel,nyu --root sintel=/data/sintel/training --root nyu=/data/nyu-v2/val \\
        --ckpt runs/geometry/checkpoints/last.ckpt --out runs/bench/depth.json
    g2vlm bench depth --dataset sintel --root /data/sintel/training --predictions outputs/pi3 --mode video
    g2vlm bench pose --dataset co3dv2 --root /data/co3dv2 --ckpt CKPT
    g2vlm bench pointmap --dataset 7scenes,eth3d --root 7scenes=/data/7scenes --root eth3d=/data/eth3d --ckpt CKPT

Each run prints a table beside the published numbers and, with --out, writes JSON
{"<benchmark>": {"<dataset>": {metrics...}}, "env": {versions, device, date, command, git_commit}}.
Without --ckpt and --predictions the demo's checkpoint (runs/geometry-demo/checkpoints/last.ckpt) is used.
Input resize (checkpoints): width 512 (the published protocols; the synthetic set: its own 64) → the model's
patch grid, see g2vlm.inference. Saved predictions: see g2vlm.benchmarks.reconstruction.predictions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from g2vlm.benchmarks.command import reports_value_errors

DEMO_CHECKPOINT = Path("runs") / "geometry-demo" / "checkpoints" / "last.ckpt"
BENCHMARKS = ("depth", "pose", "pointmap")


def add_to(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="depth / pose / point-map benchmarks with the published protocols",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    depth = _add_common(benchmarks, "depth", "monocular / video depth (synthetic, nyu, sintel, bonn, kitti)")
    depth.add_argument("--mode", choices=("mono", "video"), default="mono",
                       help="mono: per-image IRLS-L1 scale, one image per forward (default, the paper's Table 1); "
                            "video: a sequence per forward, one L1 scale-and-shift per sequence")
    _add_common(benchmarks, "pose", "relative camera pose (synthetic, co3dv2, re10k)")
    _add_common(benchmarks, "pointmap", "multi-view point maps (synthetic, 7scenes, 7scenes-sparse, nrgbd, "
                                        "nrgbd-sparse, eth3d, dtu)")
    from g2vlm.benchmarks.spatial_qa.spar_cli import add_spar

    add_spar(benchmarks)  # spatial QA: its own run (benchmarks/spatial_qa/spar_cli.py)
    from g2vlm.benchmarks.spatial_qa import saved_answers_cli as qa_cli

    qa_cli.add_to(benchmarks)  # MindCube and OmniSpatial saved answers (benchmarks/spatial_qa/saved_answers_cli.py)
    from g2vlm.benchmarks.speed.infer import add_infer
    from g2vlm.benchmarks.speed.train import add_train

    add_train(benchmarks)  # speed: their own runs (benchmarks/speed/train.py, benchmarks/speed/infer.py)
    add_infer(benchmarks)
    parser.set_defaults(run=run)


def _add_common(benchmarks: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = benchmarks.add_parser(name, help=help_text, description=f"{help_text}. {__doc__}",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic", help="dataset name, or several separated by commas (default synthetic)")
    parser.add_argument("--root", action="append", default=[], metavar="[NAME=]DIR",
                        help="prepared dataset folder; NAME=DIR when several datasets are given (repeatable)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--ckpt", help=f"GeometryPretraining checkpoint (default {DEMO_CHECKPOINT} when no --predictions; "
                                             f"read as tensors only, torch.load weights_only=True: runs no code from it)")
    source.add_argument("--predictions", metavar="DIR", help="saved predictions: DIR[/<dataset>]/[<seq>/]<stem>.npy")
    parser.add_argument("--out", metavar="FILE.json", help="write the results and the environment as JSON")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--width", type=int, default=None,
                        help="load width of the input resize (default: 512, the protocol; synthetic: 64)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward in mono depth (default 8)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def parse_roots(values: list[str], datasets: list[str]) -> dict[str, str | None]:
    """--root values -> {dataset: root}. A bare DIR is allowed when exactly one dataset is named."""
    roots: dict[str, str | None] = {name: None for name in datasets}
    for value in values:
        name, separator, folder = value.partition("=")
        if separator and not Path(value).exists():
            if name not in roots:
                raise ValueError(f"--root {value}: {name!r} is not one of the datasets given ({', '.join(datasets)})")
            roots[name] = folder
        elif len(datasets) == 1:
            roots[datasets[0]] = value
        else:
            raise ValueError(f"--root {value}: with several datasets write NAME=DIR")
    return roots


@reports_value_errors
def run(args: argparse.Namespace) -> int:
    import torch

    from g2vlm.benchmarks import report
    from g2vlm.benchmarks.reconstruction.predictions import PredictionFolder
    from g2vlm.inference import GeometryPredictor, load_geometry_model
    from g2vlm.output_paths import check_writable_file

    if args.out:
        check_writable_file(args.out)  # before the evaluation, not after it
    datasets = [name.strip() for name in args.dataset.split(",") if name.strip()]
    if not datasets:
        raise ValueError("--dataset is empty")
    roots = parse_roots(args.root, datasets)
    model = device = None
    if args.predictions is None:
        checkpoint = Path(args.ckpt) if args.ckpt else DEMO_CHECKPOINT
        if args.ckpt is None and not checkpoint.is_file():
            raise ValueError(f"no checkpoint at {checkpoint}: run `make demo` (about 10 minutes on a CPU) to train one, "
                             f"or pass --ckpt CKPT or --predictions DIR")
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model, _ = load_geometry_model(checkpoint, device)
        print(f"[bench] checkpoint {checkpoint} on {report.describe_device(device)}", file=sys.stderr)
    results, tables = {}, []
    for name in datasets:
        dataset = _read_dataset(args.benchmark, name, roots[name])
        predictor = GeometryPredictor(model, device, args.width or dataset.load_width) if model is not None else None
        predictions = PredictionFolder(args.predictions, _folder_names(args.benchmark, name, dataset.name)) \
            if args.predictions is not None else None
        record = _evaluate(args, dataset, predictor, predictions)
        results[dataset.name] = record
        tables.append(_table(args, dataset.name, record, "checkpoint" if model is not None else "predictions"))
    print("\n\n".join(tables))
    if args.out:
        path = report.write_json(args.out, args.benchmark, results, report.environment(device))
        print(f"[bench] results: {path}", file=sys.stderr)
    return 0


def _read_dataset(benchmark: str, name: str, root: str | None):
    if benchmark == "depth":
        from g2vlm.benchmarks.reconstruction.depth_datasets import read_depth_dataset

        return read_depth_dataset(name, root)
    if benchmark == "pose":
        from g2vlm.benchmarks.reconstruction.pose_datasets import read_pose_dataset

        return read_pose_dataset(name, root)
    from g2vlm.benchmarks.reconstruction.pointmap_datasets import read_pointmap_dataset

    return read_pointmap_dataset(name, root)


def _folder_names(benchmark: str, given: str, canonical: str) -> tuple[str, ...]:
    """Dataset folder names a predictions DIR may hold (given name first, then the canonical and official ones)."""
    official = {"nyu": ("nyu-v2",), "co3dv2": ("CO3Dv2",), "re10k": ("Re10K",)}.get(canonical, ())
    return tuple(dict.fromkeys((given, canonical, *official)))


def _evaluate(args: argparse.Namespace, dataset, predictor, predictions) -> dict:
    if args.benchmark == "depth":
        from g2vlm.benchmarks.reconstruction.depth import evaluate_depth

        return evaluate_depth(dataset, args.mode, predictor, predictions, args.batch_size, not args.no_progress)
    if args.benchmark == "pose":
        from g2vlm.benchmarks.reconstruction.pose import evaluate_pose

        return evaluate_pose(dataset, predictor, predictions, not args.no_progress)
    from g2vlm.benchmarks.reconstruction.pointmap import evaluate_pointmap

    return evaluate_pointmap(dataset, predictor, predictions, not args.no_progress)


def _speed(record: dict) -> str:
    """", 261.6 img/s, metrics 6 % of inference" (the model's speed and what scoring adds; empty for predictions)."""
    if not record.get("images_per_s"):
        return ""
    ratio = record.get("metric_time_vs_inference")
    return f", {record['images_per_s']:.1f} img/s" + (f", metrics {100 * ratio:.0f} % of inference time" if ratio else "")


def _table(args: argparse.Namespace, dataset: str, record: dict, source: str) -> str:
    from g2vlm.benchmarks import report
    from g2vlm.benchmarks.reconstruction import published

    if args.benchmark == "depth":
        table = (published.MONO_DEPTH if args.mode == "mono" else published.VIDEO_DEPTH).get(dataset)
        source_tag = "Pi3-T6/G2-T1a" if args.mode == "mono" else "Pi3-T5"
        columns = [("abs_rel", "Abs Rel ↓", ".3f"), ("delta_1", "δ<1.25 ↑", ".3f"), ("sq_rel", "Sq Rel ↓", ".3f"),
                   ("rmse", "RMSE ↓", ".3f"), ("log_rmse", "log RMSE ↓", ".3f"), ("delta_2", "δ<1.25² ↑", ".3f"),
                   ("delta_3", "δ<1.25³ ↑", ".3f")]
        speed = _speed(record)
        title = (f"{dataset}: {args.mode} depth ({record['alignment']}), {record['n_images']} images, "
                 f"{record['n_pixels']:,} pixels, {record['skipped_frames']} skipped{speed}")
    elif args.benchmark == "pose":
        table, source_tag = published.POSE.get(dataset), "Pi3-T1/G2-T1a"
        columns = [(f"{kind}@{tau}", f"{kind}@{tau} ↑", ".2f") for tau in (30, 15, 5) for kind in ("RRA", "RTA", "AUC")]
        speed = _speed(record)
        title = (f"{dataset}: relative pose, {record['n_sequences']} sequences, {record['n_pairs']} pairs, "
                 f"{record['skipped_frames']} frames skipped{speed}; frames: {record['frame_map']}")
    else:
        table, source_tag = published.POINT_MAP.get(dataset), "G2-T1a/Pi3-T3,T4"
        columns = [("accuracy", "Acc ↓", ".3f"), ("completeness", "Comp ↓", ".3f"), ("normal_consistency", "NC ↑", ".3f"),
                   ("accuracy_median", "Acc med ↓", ".3f"), ("completeness_median", "Comp med ↓", ".3f"),
                   ("normal_consistency_median", "NC med ↑", ".3f")]
        speed = _speed(record)
        title = (f"{dataset}: point maps (Umeyama + ICP {record['icp_max_distance']:g}), {record['n_sequences']} "
                 f"sequences, {record['n_images']} images, {record['skipped_frames']} frames skipped{speed}; "
                 f"frames: {record['frame_map']}")
    rows = [(f"this run ({source})", record), *report.published_rows(table, source_tag)]
    if table is None:
        title += "\n(no published numbers for this dataset under this protocol)"
    return report.format_table(title, columns, rows)
