"""`g2vlm demo` (`make demo`): watch a model learn geometry on this CPU, with no downloads.

1. Renders procedural synthetic rooms into shards (training scenes and held-out scenes), once.
2. Trains the `small` preset with `lightning fit --config experiments/geometry/demo.yaml` (a progress bar;
   TensorBoard logs and checkpoints under runs/geometry-demo/).
3. Evaluates on the held-out scenes, beside three baselines — the untrained model, a constant depth with identity
   poses, and the training means (the mean training depth map with the mean relative poses of the training clips,
   computed from the training shards) — and prints one table: Abs Rel and δ<1.25 after per-image IRLS-L1 scale
   alignment (the monocular protocol); relative-pose AUC@30 and the median rotation and translation-direction
   errors over all view pairs.
4. Saves figures of the first held-out clip: a labelled depth comparison (image | ground truth | prediction |
   |error|, colour bars in metres) and its ground-truth and predicted point clouds rendered side by side with
   their cameras (PNGs), and the predicted points as a coloured PLY.
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
    parser.add_argument("--train-scenes", type=int, default=3000, help="training scenes to render (default 3000)")
    parser.add_argument("--val-scenes", type=int, default=100, help="held-out scenes (default 100)")
    parser.add_argument("--minutes", type=float, default=6.25, help="training time cap in minutes (default 6.25)")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes (default 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for training and evaluation (default 1: the data worker has the other core, "
                             "and a second OpenMP thread stalls as soon as another job shares the cores)")
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
        index = write_synthetic_shards(DATA_DIR, scenes=scenes, views=VIEWS, height=IMAGE_SIZE[0],
                                       width=IMAGE_SIZE[1], seed=seed, split=split, workers=workers, progress=True)
        print(f"[demo] rendered {index['total_clips']} {split} scenes in {time.perf_counter() - start:.0f} s")


def max_time_arg(minutes: float) -> str:
    """`--trainer.max_time` of a budget in minutes, "DD:HH:MM:SS" (rounded to the second)."""
    seconds = round(60 * minutes)
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train(minutes: float, threads: int) -> None:
    command = [sys.executable, "-m", "g2vlm", "fit", "--config", str(DEMO_CONFIG), "--trainer.max_time",
               max_time_arg(minutes)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
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


def training_means(max_clips: int = 2000):
    """The trivial predictor's two parts, from up to `max_clips` training clips (views in their stored order):
    the per-pixel mean of valid depths (H, W) and `mean_relative_pose` of the cameras (N, 4, 4)."""
    import torch

    from g2vlm.datamodules.multiview.datamodule import MultiViewDataModule

    data = MultiViewDataModule(val_shards=[str(DATA_DIR / "synthetic-train-*.tar")], image_size=IMAGE_SIZE,
                               size_multiple=8, views_max=VIEWS, val_views=VIEWS, image_budget=64, num_workers=0)
    data.setup("validate")
    total = torch.zeros(IMAGE_SIZE, dtype=torch.float64)
    count = torch.zeros(IMAGE_SIZE, dtype=torch.float64)
    poses, clips = [], 0
    for batch in data.val_dataloader():
        total += (batch.depth_m * batch.valid).sum(dim=(0, 1)).double()
        count += batch.valid.sum(dim=(0, 1)).double()
        poses.append(batch.camera_to_world)
        clips += batch.batch_size
        if clips >= max_clips:
            break
    return (total / count.clamp(min=1)).float().clamp(min=1e-3), mean_relative_pose(torch.cat(poses))


def mean_relative_pose(camera_to_world):
    """The mean pose of each view relative to view 0 over many clips: (M, N, 4, 4) OpenCV camera_to_world -> (N, 4, 4).

    Rotation: the chordal L2 mean of inverse(P_0)·P_k, i.e. the rotation nearest (Frobenius) to their average.
    Translation: along the principal axis of the unit directions of the relative translations (the axis that
    best fits them up to sign, as the pose metric ignores the sign), oriented towards the majority and as long
    as their mean length. View 0 gets the identity.
    """
    import torch

    from g2vlm.geometry.camera import relative_pose, se3_from_rotation_translation
    from g2vlm.geometry.rotation import nearest_rotation

    poses = camera_to_world.to(torch.float64)
    relative = relative_pose(poses[:, :1], poses)  # (M, N, 4, 4): camera k -> camera 0
    rotation = nearest_rotation(relative[..., :3, :3].mean(0))
    translation = relative[..., :3, 3]  # (M, N, 3)
    length = translation.norm(dim=-1, keepdim=True)
    directions = translation / length.clamp(min=1e-12)
    scatter = torch.einsum("mni,mnj->nij", directions, directions)
    axis = torch.linalg.eigh(scatter).eigenvectors[..., -1]  # (N, 3), largest eigenvalue
    sign = torch.sign((directions * axis).sum(-1).sum(0))
    axis = axis * torch.where(sign == 0, torch.ones_like(sign), sign)[:, None]
    mean = se3_from_rotation_translation(rotation, axis * length.mean(0))
    mean[0] = torch.eye(4, dtype=mean.dtype)
    return mean.float()


def evaluate(predict: Callable, loader) -> dict[str, float]:
    """predict(images (B, N, 3, H, W)) -> (depth (B, N, H, W), camera_to_world (B, N, 4, 4)).

    -> Abs Rel and δ<1.25 after per-image IRLS-L1 scale alignment; AUC@30 and the median rotation and
    translation-direction errors (degrees) over all view pairs."""
    import torch

    from g2vlm.metrics.depth import DepthMetrics
    from g2vlm.metrics.relative_pose import pair_errors_deg, pose_auc

    depth_metrics = DepthMetrics(alignment="scale")
    rotation_errors, translation_errors = [], []
    with torch.no_grad():
        for batch in loader:
            batch = batch.with_float_images()
            depth, camera_to_world = predict(batch.images)
            depth_metrics.update(depth.flatten(0, 1), batch.depth_m.flatten(0, 1), batch.valid.flatten(0, 1))
            rotation, translation = pair_errors_deg(camera_to_world, batch.camera_to_world)
            rotation_errors.append(rotation.flatten())
            translation_errors.append(translation.flatten())
    depth = depth_metrics.compute()
    rotation, translation = torch.cat(rotation_errors), torch.cat(translation_errors)
    return {"abs_rel": float(depth["abs_rel"]), "delta_1": float(depth["delta_1"]),
            "auc_30": float(100 * pose_auc(rotation, translation, 30)),
            "rotation_error_deg": float(rotation.median()), "translation_error_deg": float(translation.median())}


def load_trained(checkpoint: Path):
    from g2vlm.lit.geometry_pretraining import GeometryPretraining
    from g2vlm.safe_load import load_checkpoint_file

    load_checkpoint_file(checkpoint)  # refuses a hostile or unreadable file with a clear message (g2vlm.safe_load)
    module = GeometryPretraining.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    return module.eval()


def predictors(trained, mean_depth, mean_poses) -> dict[str, Callable]:
    """The table's rows: the untrained model, two trivial predictors (a constant depth with identity poses; the
    mean training depth map with the mean training relative poses) and the trained model."""
    import torch

    from g2vlm.lit.geometry_pretraining import GeometryPretraining

    torch.manual_seed(0)
    untrained = GeometryPretraining(**{k: v for k, v in trained.hparams.items()})
    untrained.configure_model()
    untrained.eval()

    def model_prediction(module):
        def predict(images):
            output = module(images)
            return output.depth, output.camera_to_world
        return predict

    def constant(images):
        b, n = images.shape[:2]
        return torch.ones(images.shape[:2] + images.shape[-2:]), torch.eye(4).expand(b, n, 4, 4)

    def means(images):
        b, n = images.shape[:2]
        return mean_depth.expand(images.shape[:2] + mean_depth.shape), mean_poses[:n].expand(b, n, 4, 4)

    return {
        "untrained model": model_prediction(untrained),
        "constant depth, identity poses": constant,
        "training means (depth map, poses)": means,
        "trained (small preset)": model_prediction(trained),
    }


def save_figures(trained, loader, out_dir: Path) -> tuple[Path, Path, Path]:
    """The first held-out clip: a labelled depth comparison (PNG), its ground-truth and predicted point clouds
    rendered side by side (PNG) and the predicted points as a coloured PLY."""
    import torch

    from g2vlm.figures import clip_figures
    from g2vlm.visual_io import save_png, write_ply

    batch = next(iter(loader)).with_float_images()
    with torch.no_grad():
        output = trained(batch.images[:1])
    depth, clouds = clip_figures(
        batch.images[0], batch.depth_m[0], batch.valid[0], batch.K[0], batch.camera_to_world[0], output.depth[0],
        output.world_points[0], output.camera_to_world[0],
        depth_title="held-out clip: depth (each prediction scaled to the ground truth)",
        clouds_title="held-out clip: points and cameras (the prediction moved by one similarity)")
    colours = (batch.images[0].permute(0, 2, 3, 1).reshape(-1, 3) * 255).round().to(torch.uint8).numpy()
    ply = write_ply(out_dir / "predicted_points.ply", output.world_points[0].reshape(-1, 3).numpy(), colours)
    return save_png(out_dir / "depth_comparison.png", depth), save_png(out_dir / "point_clouds.png", clouds), ply


def print_table(results: dict[str, dict[str, float]]) -> None:
    constant = results["constant depth, identity poses"]["abs_rel"]
    print("\nheld-out synthetic scenes (64×64, 4 views): depth after per-image scale alignment; poses over all view "
          "pairs (median errors in degrees)")
    print(f"{'predictor':<35}{'Abs Rel ↓':>10}{'δ<1.25 ↑':>10}{'÷ constant':>12}{'AUC@30 ↑':>10}{'rot. err ↓':>12}"
          f"{'dir. err ↓':>12}")
    for name, row in results.items():
        print(f"{name:<35}{row['abs_rel']:>10.3f}{row['delta_1']:>10.3f}{row['abs_rel'] / constant:>12.2f}"
              f"{row['auc_30']:>10.1f}{row['rotation_error_deg']:>12.1f}{row['translation_error_deg']:>12.1f}")


def run(args: argparse.Namespace) -> int:
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
    rows = predictors(trained, *training_means())
    results = {name: evaluate(predict, val_loader()) for name, predict in rows.items()}
    out_dir = Path(args.out)
    depth_png, cloud_png, ply = save_figures(trained, val_loader(), out_dir)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\n[demo] evaluated in {time.perf_counter() - start:.0f} s")
    print(f"[demo] depth comparison:  {depth_png}\n[demo] point clouds:      {cloud_png}\n"
          f"[demo] predicted points:  {ply}\n[demo] table (JSON):      {out_dir / 'results.json'}")
    print(f"[demo] checkpoint:        {checkpoint}\n[demo] TensorBoard:       tensorboard --logdir {RUN_DIR / 'tensorboard'}"
          f"   (images: depth and point clouds during training)")
    return 0
