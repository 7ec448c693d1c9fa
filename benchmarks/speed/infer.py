"""`g2vlm bench infer` (`make bench-infer`): reconstruction time and peak memory versus the number of views,
printed beside VGGT's published H100 table.

    g2vlm bench infer --out runs/bench/infer.json            # CUDA: g2vlm-2b, 1/8/32/100/200 views at 518×518
    g2vlm bench infer --device cpu                            # CPU: the `small` preset, 1/2/4/8 views at 64×64
    g2vlm bench infer --views 100 --size 392x518

One reconstruction = `G2VLM.forward_geometry` on one clip (B = 1): DINO, the geometric expert over all views
(global attention) and every head (local points, cameras, global points), images already on the device. The
model is the geometric path only (`semantic=False`: the semantic expert, embeddings and ViT are never run by a
reconstruction, so they are not built). On CUDA the encoder, projector and trunk hold bf16 weights and run under
bf16 autocast, the heads hold fp32 weights and run in fp32 (fp32 matmuls may use TF32,
`--fp32-matmul-precision`); on a CPU everything is fp32. Weights are random (timing does not depend on them).
The first `--warmup` runs are not timed; the time is the median of `--steps` runs (CUDA events). Peak memory is
CUDA's max allocated during the timed runs (weights included, as VGGT's table); on a CPU, the process's peak RSS.
FLOPs per reconstruction are counted on a meta-device copy.

VGGT's table (README of facebookresearch/vggt; reference geometry-anchors.md §2.3) times its aggregator only
(no heads) on one H100 with FlashAttention-3 at 518 px; its "GB" is printed as published. The comparison is
therefore conservative for us: our times include the heads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass

from g2vlm.benchmarks.command import reports_value_errors
from g2vlm.benchmarks.speed.train import (
    StepTimer,
    add_common_arguments,
    check_counts,
    free_memory,
    is_out_of_memory,
    peak_memory,
    resolve_device,
)

# frames: (seconds, memory "GB" as published), VGGT aggregator on 1×H100, FlashAttention-3, 518 px
VGGT_H100: dict[int, tuple[float, float]] = {
    1: (0.04, 1.88), 2: (0.05, 2.07), 4: (0.07, 2.45), 8: (0.11, 3.23), 10: (0.14, 3.63), 20: (0.31, 5.58),
    50: (1.04, 11.41), 100: (3.12, 21.15), 200: (8.75, 40.63),
}


@dataclass(frozen=True)
class InferSuite:
    preset: str
    height: int
    width: int
    views: tuple[int, ...]


INFER_SUITES: dict[str, InferSuite] = {
    "full": InferSuite("g2vlm-2b", 518, 518, (1, 8, 32, 100, 200)),
    "cpu": InferSuite("small", 64, 64, (1, 2, 4, 8)),
}


def add_infer(benchmarks: argparse._SubParsersAction) -> None:
    parser = benchmarks.add_parser("infer", help="reconstruction time and peak memory vs number of views (beside VGGT)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=sorted(INFER_SUITES), help="preset, size and view counts (default: full "
                        "on CUDA, cpu on a CPU)")
    parser.add_argument("--views", help="view counts, comma-separated (default: the suite's)")
    parser.add_argument("--size", metavar="HxW", help="frame size (default: the suite's)")
    add_common_arguments(parser, warmup=1, steps=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the trunk layers and head blocks")
    parser.set_defaults(run=run_infer)


def parse_views(text: str) -> tuple[int, ...]:
    try:
        views = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--views {text}: expected comma-separated integers") from None
    if not views or min(views) < 1:
        raise ValueError(f"--views {text}: expected positive view counts")
    return views


def parse_size(text: str, patch: int) -> tuple[int, int]:
    height, separator, width = text.lower().partition("x")
    if not separator or not height.isdigit() or not width.isdigit():
        raise ValueError(f"--size {text}: expected HxW, e.g. 392x518")
    height, width = int(height), int(width)
    if height % patch or width % patch or not height or not width:
        raise ValueError(f"--size {text}: height and width must be positive multiples of the patch size {patch}")
    return height, width


@reports_value_errors
def run_infer(args: argparse.Namespace) -> int:
    from g2vlm.benchmarks import report
    from g2vlm.model.config import model_config

    device = resolve_device(args.device, args.fp32_matmul_precision)
    check_counts(args.warmup, args.steps)
    suite = INFER_SUITES[args.suite or ("full" if device.type == "cuda" else "cpu")]
    config = model_config(suite.preset, semantic=False, vit=None)
    views = parse_views(args.views) if args.views else suite.views
    height, width = parse_size(args.size, config.dino.patch_size) if args.size else (suite.height, suite.width)
    print(f"[bench] infer: {suite.preset}, {height}x{width}, views {views} on {report.describe_device(device)}",
          file=sys.stderr)
    model = reconstruction_model(config, device, args.compile)
    records = [measure_views(model, device, n, height, width, args.warmup, args.steps) for n in views]
    cuda = device.type == "cuda"
    result = {"device": report.describe_device(device), "preset": suite.preset, "height": height, "width": width,
              "weights": "bf16 encoder/projector/trunk, fp32 heads" if cuda else "fp32",
              "fp32_matmul_precision": _matmul_precision() if cuda else None, "compile": args.compile,
              "warmup_runs": args.warmup, "timed_runs": args.steps, "cases": records,
              "vggt_h100_aggregator": {str(n): {"seconds": s, "memory_gb": m} for n, (s, m) in VGGT_H100.items()}}
    print(format_infer_table(result))
    if args.out:
        path = report.write_json(args.out, "infer", result, report.environment(device))
        print(f"[bench] results: {path}", file=sys.stderr)
    return 0


def _matmul_precision() -> str:
    import torch

    return torch.get_float32_matmul_precision()


def reconstruction_model(config, device, compile_blocks: bool):
    """The geometric path of `config` on `device`, eval mode; on CUDA encoder/projector/trunk weights in bf16."""
    import torch

    from g2vlm.model.g2vlm import G2VLM

    with torch.device(device):
        model = G2VLM(config).eval()
    if device.type == "cuda":
        for part in (model.dino, model.dino_projector, model.trunk):
            part.to(torch.bfloat16)
    if compile_blocks:
        model.compile_blocks()
    return model


def reconstruction_flops(config, views: int, height: int, width: int) -> int:
    """Forward FLOPs of one reconstruction, counted on a meta-device copy."""
    import torch
    from lightning.fabric.utilities.throughput import measure_flops

    from g2vlm.model.g2vlm import G2VLM

    with torch.device("meta"):
        model = G2VLM(config).eval()
        images = torch.empty(1, views, 3, height, width)
    with torch.no_grad():
        return measure_flops(model, lambda: model.forward_geometry(images))


def measure_views(model, device, views: int, height: int, width: int, warmup: int, steps: int) -> dict:
    import torch

    record = {"views": views, "tokens": views * (height // model.config.dino.patch_size)
              * (width // model.config.dino.patch_size)}
    print(f"[bench] {views} views, {record['tokens']} trunk tokens", file=sys.stderr)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def reconstruct():
        with torch.no_grad(), autocast:
            return model.forward_geometry(images)

    try:
        images = torch.rand(1, views, 3, height, width, device=device)
        seconds = StepTimer(device).measure(reconstruct, warmup, steps)
    except Exception as error:  # noqa: BLE001 - only out-of-memory is handled
        if not is_out_of_memory(error):
            raise
        images = None
        free_memory(device)
        record["status"] = "out of memory"
        return record
    images = None
    memory_gib, memory_kind = peak_memory(device)
    seconds_median = statistics.median(seconds)
    flops = reconstruction_flops(model.config, views, height, width)
    record.update(status="ok", seconds=seconds_median, seconds_all=seconds, views_per_s=views / seconds_median,
                  flops=flops, achieved_tflops=flops / seconds_median / 1e12, peak_memory_gib=memory_gib,
                  peak_memory_kind=memory_kind)
    free_memory(device)
    return record


def format_infer_table(result: dict) -> str:
    from g2vlm.benchmarks import report

    columns = [("seconds", "time s", ".3f"), ("peak_memory_gib", "peak GiB", ".2f"), ("views_per_s", "views/s", ".2f"),
               ("achieved_tflops", "TFLOP/s", ".3g"), ("vggt_seconds", "VGGT s", ".2f"),
               ("vggt_memory", "VGGT GB", ".2f")]
    rows = []
    for record in result["cases"]:
        vggt = VGGT_H100.get(record["views"], (None, None))
        label = f"{record['views']} views" + ("" if record["status"] == "ok" else f" ({record['status']})")
        rows.append((label, {**record, "vggt_seconds": vggt[0], "vggt_memory": vggt[1]}))
    title = (f"reconstruction ({result['preset']}, {result['height']}x{result['width']}, {result['weights']}) on "
             f"{result['device']}, median of {result['timed_runs']}; VGGT: published, aggregator only, 1×H100, "
             f"FlashAttention-3, 518 px")
    return report.format_table(title, columns, rows)
