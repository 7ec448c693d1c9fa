"""How much the geometry demo learns per training step, independent of the machine's speed.

    python -m g2vlm.benchmarks.demo_learning --steps 1800 --out runs/demo-learning/new.json
    python -m g2vlm.benchmarks.demo_learning --steps 1500 --model '{"dino": {"stem": "patch"}}' \\
        --loss '{"normal_weight": 1.0, "normal_datasets": ["synthetic"]}' --out runs/demo-learning/old.json

Trains `GeometryPretraining` in-process on the demo's shards (data/demo/, made by `g2vlm demo`) as
experiments/geometry/demo.yaml does — a Lightning Trainer, the module's own training_step and configure_optimizers
(AdamW (0.9, 0.95) at the demo's rates, warm-up then cosine over `--steps`), norm clipping 1.0, colour jitter — for a fixed number of steps, then scores the held-out scenes with the demo's own
`evaluate`. On a machine shared with other jobs the wall clock says little, so the budget is counted in steps and
the process CPU seconds per step are reported beside the scores: divide a time budget by an idle machine's seconds
per step (`--threads` as the demo runs) to know how many steps it buys.
Output JSON: the arguments, parameters, CPU seconds per step, held-out scores, the mean training loss terms
every `--log-every` steps beside the camera_rotation term of identity rotations on the same batches (to see
whether the camera branch leaves the level of that trivial predictor), and `relative_pose_correlation`: per camera
axis, how the predicted relative poses of the held-out view pairs follow the ground truth (rotation about x = pitch,
which one image shows against the floor; about y = yaw and the translations, which need the views compared).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import kornia.geometry.conversions
import lightning as L
import torch

from g2vlm import demo
from g2vlm.datamodules.multiview.datamodule import MultiViewDataModule
from g2vlm.geometry.camera import relative_pose
from g2vlm.geometry.rotation import rotation_angle
from g2vlm.lit.geometry_pretraining import GeometryPretraining
from g2vlm.lit.optimization import Optimization
from g2vlm.losses.geometry_loss import GeometryLoss
from g2vlm.model import config as model_configs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, required=True, help="optimizer steps (the cosine schedule ends there)")
    parser.add_argument("--model", default="{}",
                        help='JSON changes to the small preset, sub-configs as objects: \'{"dino": {"stem": "patch"}}\'')
    parser.add_argument("--loss", default='{"normal_weight": 0.0}', help="JSON GeometryLoss arguments")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--min-learning-rate", type=float, default=2e-5)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--log-every", type=int, default=100, help="steps per logged mean of the loss terms")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-budget", type=int, default=32,
                        help="images per training batch (the demo's 32: 8 clips of 4 views)")
    parser.add_argument("--out", required=True, help="JSON report")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    changes = json.loads(args.model)
    base = model_configs.small()
    config = base.replace(**{k: v for k, v in changes.items() if k not in ("dino", "geometry_heads")},
                          dino=replace(base.dino, **changes.get("dino", {})),
                          geometry_heads=replace(base.geometry_heads, **changes.get("geometry_heads", {})))
    model_configs.PRESETS["demo-learning"] = lambda: config
    optimization = Optimization(learning_rate=args.learning_rate, weight_decay=args.weight_decay,
                                warmup_steps=args.warmup_steps, min_learning_rate=args.min_learning_rate)
    module = GeometryPretraining(preset="demo-learning", freeze=[], loss=GeometryLoss(**json.loads(args.loss)),
                                 optimization=optimization)
    data = MultiViewDataModule(train_shards=[str(demo.DATA_DIR / "synthetic-train-*.tar")], image_size=demo.IMAGE_SIZE,
                               size_multiple=8, views_min=demo.VIEWS, views_max=demo.VIEWS,
                               image_budget=args.image_budget,
                               num_workers=0, crop_scale_range=(1.0, 1.0), color_jitter=True, seed=args.seed,
                               train_batches_per_epoch=args.steps)
    loss_log = LossLog(args.log_every)
    cpu_start = time.process_time()
    with tempfile.TemporaryDirectory() as folder:
        trainer = L.Trainer(accelerator="cpu", max_steps=args.steps, gradient_clip_val=1.0, limit_val_batches=0,
                            num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[loss_log], default_root_dir=folder)
        trainer.fit(module, datamodule=data)
    cpu_per_step = (time.process_time() - cpu_start) / args.steps
    module.eval()

    predicted, ground_truth = [], []

    def predict(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = module(images)
        predicted.append(output.camera_to_world)
        return output.depth, output.camera_to_world

    def recorded(loader):
        for batch in loader:
            ground_truth.append(batch.camera_to_world)
            yield batch

    scores = demo.evaluate(predict, recorded(demo.val_loader()))
    correlation = relative_pose_correlation(torch.cat(predicted), torch.cat(ground_truth))
    report = {"args": vars(args), "parameters": sum(p.numel() for p in module.parameters()),
              "cpu_s_per_step": cpu_per_step, **scores, "relative_pose_correlation": correlation,
              "train_loss": loss_log.rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "train_loss"}))
    return 0


class LossLog(L.Callback):
    """Mean of every logged training loss term over each `every` steps: rows {"step": s, term: mean}, plus
    `camera_rotation_of_identity`: the camera_rotation term that identity rotations (the trivial predictor) get on
    the same batches — the mean geodesic angle of the ground-truth relative rotations over all ordered view pairs."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.rows: list[dict] = []
        self._sums: dict[str, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for key, value in trainer.callback_metrics.items():
            if key.startswith("train/loss/") and key != "train/loss/total":
                name = key.removeprefix("train/loss/")
                self._sums[name] = self._sums.get(name, 0.0) + float(value)
        identity = float(identity_rotation_loss(batch.camera_to_world))
        self._sums["camera_rotation_of_identity"] = self._sums.get("camera_rotation_of_identity", 0.0) + identity
        if trainer.global_step % self.every == 0:
            self.rows.append({"step": trainer.global_step,
                              **{name: total / self.every for name, total in self._sums.items()}})
            self._sums = {}
            print(json.dumps(self.rows[-1]), flush=True)


def identity_rotation_loss(camera_to_world: torch.Tensor) -> torch.Tensor:
    """The camera_rotation loss of identity rotations: (B, N, 4, 4) poses -> mean over clips and ordered pairs i≠j
    of the angle of R_i^T R_j (radians)."""
    poses = camera_to_world.double()
    relative = relative_pose(poses[:, :, None], poses[:, None, :])  # (B, N, N, 4, 4)
    pairs = ~torch.eye(poses.shape[1], dtype=torch.bool)
    return rotation_angle(relative[:, pairs, :3, :3], torch.eye(3, dtype=torch.float64)).mean()


def relative_pose_correlation(pred_camera_to_world: torch.Tensor, gt_camera_to_world: torch.Tensor) -> dict[str, float]:
    """Pearson correlation, over all view pairs i < j of all clips, between predicted and ground-truth relative poses
    inverse(P_j)·P_i (the pose metric's pairs), per component in camera j's axes (OpenCV: x right, y down, z
    forward): the rotation vector's x (pitch), y (yaw) and z (roll) and the translation's x, y and z (the
    translations divided by their pair-mean length per clip first, so clips of any scale weigh alike).
    (M, N, 4, 4) poses x2 -> {"rotation_x_pitch", "rotation_y_yaw", "rotation_z_roll", "translation_x", ...}."""
    pred, gt = pred_camera_to_world.double(), gt_camera_to_world.double()
    n = pred.shape[1]
    i, j = torch.triu_indices(n, n, offset=1)
    columns = {}
    for name, poses in (("pred", pred), ("gt", gt)):
        relative = relative_pose(poses[:, j], poses[:, i])  # (M, pairs, 4, 4)
        translation = relative[..., :3, 3]
        translation = translation / translation.norm(dim=-1).mean(-1).clamp(min=1e-12)[:, None, None]
        columns[name] = torch.cat([kornia.geometry.conversions.rotation_matrix_to_axis_angle(relative[..., :3, :3]),
                                   translation], dim=-1).reshape(-1, 6)
    names = ("rotation_x_pitch", "rotation_y_yaw", "rotation_z_roll", "translation_x", "translation_y", "translation_z")
    return {name: float(torch.corrcoef(torch.stack([columns["pred"][:, k], columns["gt"][:, k]]))[0, 1])
            for k, name in enumerate(names)}


if __name__ == "__main__":
    raise SystemExit(main())
