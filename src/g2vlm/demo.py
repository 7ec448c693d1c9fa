"""`g2vlm demo` (`make demo`): watch a model learn geometry on this CPU, with no downloads.

1. Renders procedural synthetic rooms into shards (training scenes and held-out scenes), once.
2. Trains the `small` preset with `lightning fit --config experiments/geometry/demo.yaml` (a progress bar;
   TensorBoard logs and checkpoints under runs/geometry-demo/).
3. Evaluates on the held-out scenes, beside three baselines — the untrained model, a constant-depth
   predictor and the mean training depth map (both with identity poses) — and prints one table:
   Abs Rel and δ<1.25 after per-image IRLS-L1 scale alignment (the monocular protocol), and relative-pose
   AUC@30 over all view pairs.
4. Saves a depth comparison PNG (image | GT | prediction | |error|) and a coloured PLY point cloud.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO_ROOT / "experiments" / "geometry" / "demo.yaml"
RUN_DIR = Path("runs") / "geometry-demo"
DATA_DIR = Path("data") / "demo"
IMAGE_SIZE = (64, 64)
VIEWS = 4


def add_to(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="synthetic scenes -> train the small model on CPU -> depth/pose table",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-scenes", type=int, default=4000, help="training scenes to render (default 4000)")
    parser.add_argument("--val-scenes", type=int, default=100, help="held-out scenes (default 100)")
    parser.add_argument("--minutes", type=float, default=7.0, help="training time cap in minutes (default 7)")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes (default 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for training and evaluation (default: torch's; on a machine shared with "
                             "other jobs, 1 avoids OpenMP stalls)")
    parser.add_argument("--skip-training", action="store_true", help="evaluate the existing checkpoint only")
    parser.add_argument("--out", default="runs/geometry-demo/report", help="folder for the table JSON, PNG and PLY")
    parser.set_defaults(run=run)


def make_shards(train_scenes: int, val_scenes: int, workers: int) -> None:
    from g2vlm.datamodules.synthetic.shards import write_synthetic_shards

    for split, scenes, seed in (("train", train_scenes, 0), ("val", val_scenes, 1)):
        index = DATA_DIR / f"synthetic-{split}-index.json"
        if index.is_file() and json.loads(index.read_text()).get("total_clips") == scenes:
            print(f"[demo] {split}: {scenes} scenes already in {DATA_DIR}")
            continue
        for old in DATA_DIR.glob(f"synthetic-{split}-*"):
            old.unlink()
        start = time.perf_counter()
        write_synthetic_shards(DATA_DIR, scenes=scenes, views=VIEWS, height=IMAGE_SIZE[0], width=IMAGE_SIZE[1],
                               seed=seed, split=split, workers=workers, progress=True)
        print(f"[demo] rendered {scenes} {split} scenes in {time.perf_counter() - start:.0f} s")


def train(minutes: float, threads: int | None) -> None:
    max_time = f"00:00:{int(minutes):02d}:{round(60 * (minutes % 1)):02d}"
    command = [sys.executable, "-m", "g2vlm", "fit", "--config", str(DEMO_CONFIG), "--trainer.max_time", max_time]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    print(f"[demo] training: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    print(f"[demo] trained in {(time.perf_counter() - start) / 60:.1f} min")


def val_loader():
    from g2vlm.datamodules.multiview.datamodule import MultiViewDataModule

    data = MultiViewDataModule(val_shards=[str(DATA_DIR / "synthetic-val-*.tar")], image_size=IMAGE_SIZE,
                               size_multiple=8, views_max=VIEWS, val_views=VIEWS, image_budget=32, num_workers=0)
    data.setup("validate")
    return data.val_dataloader()


def mean_training_depth(max_clips: int = 2000):
    """Per-pixel mean of valid training depths over up to `max_clips` clips -> (H, W) tensor."""
    import torch

    from g2vlm.datamodules.multiview.datamodule import MultiViewDataModule

    data = MultiViewDataModule(val_shards=[str(DATA_DIR / "synthetic-train-*.tar")], image_size=IMAGE_SIZE,
                               size_multiple=8, views_max=VIEWS, val_views=VIEWS, image_budget=64, num_workers=0)
    data.setup("validate")
    total = torch.zeros(IMAGE_SIZE, dtype=torch.float64)
    count = torch.zeros(IMAGE_SIZE, dtype=torch.float64)
    clips = 0
    for batch in data.val_dataloader():
        total += (batch.depth_m * batch.valid).sum(dim=(0, 1)).double()
        count += batch.valid.sum(dim=(0, 1)).double()
        clips += batch.batch_size
        if clips >= max_clips:
            break
    return (total / count.clamp(min=1)).float().clamp(min=1e-3)


def evaluate(predict: Callable, loader) -> dict[str, float]:
    """predict(images (B, N, 3, H, W)) -> (depth (B, N, H, W), camera_to_world (B, N, 4, 4))."""
    import torch

    from g2vlm.metrics.depth import DepthMetrics
    from g2vlm.metrics.relative_pose import RelativePoseMetrics

    depth_metrics, pose_metrics = DepthMetrics(alignment="scale"), RelativePoseMetrics(thresholds=(30,))
    with torch.no_grad():
        for batch in loader:
            batch = batch.with_float_images()
            depth, camera_to_world = predict(batch.images)
            depth_metrics.update(depth.flatten(0, 1), batch.depth_m.flatten(0, 1), batch.valid.flatten(0, 1))
            pose_metrics.update(camera_to_world, batch.camera_to_world)
    depth = depth_metrics.compute()
    return {"abs_rel": float(depth["abs_rel"]), "delta_1": float(depth["delta_1"]),
            "auc_30": float(pose_metrics.compute()["AUC@30"])}


def load_trained(checkpoint: Path):
    from g2vlm.lit.geometry_pretraining import GeometryPretraining
    from g2vlm.safe_load import load_checkpoint_file

    load_checkpoint_file(checkpoint)  # refuses a hostile or unreadable file with a clear message (g2vlm.safe_load)
    module = GeometryPretraining.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    return module.eval()


def predictors(trained, mean_depth) -> dict[str, Callable]:
    import torch

    from g2vlm.lit.geometry_pretraining import GeometryPretraining

    torch.manual_seed(0)
    untrained = GeometryPretraining(**{k: v for k, v in trained.hparams.items()})
    untrained.configure_model()
    untrained.eval()

    def identity_poses(images):
        b, n = images.shape[:2]
        return torch.eye(4).expand(b, n, 4, 4)

    def model_prediction(module):
        def predict(images):
            output = module(images)
            return output.depth, output.camera_to_world
        return predict

    return {
        "untrained model": model_prediction(untrained),
        "constant depth": lambda images: (torch.ones(images.shape[:2] + images.shape[-2:]), identity_poses(images)),
        "mean training depth map": lambda images: (mean_depth.expand(images.shape[:2] + mean_depth.shape),
                                                   identity_poses(images)),
        "trained (small preset)": model_prediction(trained),
    }


def save_examples(trained, loader, out_dir: Path) -> tuple[Path, Path]:
    """Depth comparison PNG of the first held-out clip and a PLY of its predicted world points."""
    import numpy as np
    import torch

    from g2vlm.geometry.alignment import irls_l1_scale
    from g2vlm.visual_io import colourise, save_png, write_ply

    batch = next(iter(loader)).with_float_images()
    with torch.no_grad():
        output = trained(batch.images[:1])
    rows = []
    for view in range(batch.num_views):
        gt, valid = batch.depth_m[0, view], batch.valid[0, view]
        scale = irls_l1_scale(output.depth[0, view][valid], gt[valid])
        pred = (output.depth[0, view] * scale).numpy()
        low, high = float(gt[valid].min()), float(gt[valid].max())
        image = (batch.images[0, view].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        error = np.abs(pred - gt.numpy())
        rows.append(np.concatenate([image, colourise(gt.numpy(), valid.numpy(), low, high),
                                    colourise(pred, None, low, high),
                                    colourise(error, valid.numpy(), 0.0, 0.25 * high)], axis=1))
    png = save_png(out_dir / "depth_comparison.png", np.concatenate(rows, axis=0))
    points = output.world_points[0].reshape(-1, 3).numpy()
    colours = (batch.images[0].permute(0, 2, 3, 1).reshape(-1, 3).numpy() * 255).round().astype(np.uint8)
    ply = write_ply(out_dir / "predicted_points.ply", points, colours)
    return png, ply


def print_table(results: dict[str, dict[str, float]]) -> None:
    constant = results["constant depth"]["abs_rel"]
    print("\nheld-out synthetic scenes (64×64, 4 views): depth after per-image scale alignment, poses over all pairs")
    print(f"{'predictor':<26}{'Abs Rel ↓':>11}{'δ<1.25 ↑':>11}{'AUC@30 ↑':>11}{'÷ constant':>12}")
    for name, row in results.items():
        print(f"{name:<26}{row['abs_rel']:>11.3f}{row['delta_1']:>11.3f}{row['auc_30']:>11.1f}"
              f"{row['abs_rel'] / constant:>12.2f}")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    make_shards(args.train_scenes, args.val_scenes, args.workers)
    if not args.skip_training:
        train(args.minutes, args.threads)
    checkpoint = RUN_DIR / "checkpoints" / "last.ckpt"
    if not checkpoint.is_file():
        print(f"[demo] no checkpoint at {checkpoint}: run `g2vlm demo` without --skip-training", file=sys.stderr)
        return 1
    start = time.perf_counter()
    from g2vlm.safe_load import CheckpointError

    try:
        trained = load_trained(checkpoint)
    except CheckpointError as error:
        print(f"[demo] error: {error}", file=sys.stderr)
        return 2
    mean_depth = mean_training_depth()
    results = {name: evaluate(predict, val_loader()) for name, predict in predictors(trained, mean_depth).items()}
    out_dir = Path(args.out)
    png, ply = save_examples(trained, val_loader(), out_dir)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\n[demo] evaluated in {time.perf_counter() - start:.0f} s")
    print(f"[demo] depth comparison: {png}\n[demo] point cloud:       {ply}\n[demo] table (JSON):     {out_dir / 'results.json'}")
    print(f"[demo] checkpoint:       {checkpoint}\n[demo] TensorBoard:      tensorboard --logdir {RUN_DIR / 'tensorboard'}")
    return 0
