"""`GeometryVisualiser`: every N training steps, show what the geometric expert predicts.

Logs to TensorBoard, for the first clip of the current batch:
- `vis/depth`: one row per view — image | ground truth | prediction (scale-aligned to the ground truth per view,
  the monocular protocol) | |error| — under labelled columns, with colour bars in metres
  (`g2vlm.figures.depth_comparison_figure`);
- `vis/point_clouds`: the ground-truth and predicted point clouds with their cameras, rendered side by side from
  one viewpoint, the prediction moved onto the ground truth by one similarity (`g2vlm.figures.point_cloud_figure`);
- `vis/points`: the predicted world points as a coloured point cloud (TensorBoard's mesh plugin).

Interface with the LightningModule: `pl_module(images (1, N, 3, H, W))` returns an object with `depth`
(1, N, H, W), `world_points` (1, N, H, W, 3) and `camera_to_world` (1, N, 4, 4), as `GeometryPretraining` does;
the batch has `images`, `depth_m`, `valid`, `K` and `camera_to_world` (a `MultiViewBatch`).
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from g2vlm.figures import clip_figures


class GeometryVisualiser(L.Callback):
    """Args:
        every_n_steps: log every this many optimizer steps (and at step 0).
        max_points: at most this many points in the logged point cloud (a deterministic subsample).
    """

    def __init__(self, every_n_steps: int = 500, max_points: int = 20000) -> None:
        self.every_n_steps = every_n_steps
        self.max_points = max_points

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step - 1  # the step this batch just took
        loggers = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if step % self.every_n_steps or not loggers:
            return
        # every rank runs the forward (a sharded model gathers its parameters collectively); rank 0 logs
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            output = pl_module(batch.images[:1])
        pl_module.train(was_training)
        if not trainer.is_global_zero:
            return
        writer = loggers[0].experiment
        depth, clouds = clip_figures(batch.images[0], batch.depth_m[0], batch.valid[0], batch.K[0],
                                     batch.camera_to_world[0], output.depth[0], output.world_points[0],
                                     output.camera_to_world[0])
        writer.add_image("vis/depth", depth, step, dataformats="HWC")
        if clouds is not None:
            writer.add_image("vis/point_clouds", clouds, step, dataformats="HWC")
        points = output.world_points[0].reshape(-1, 3).float().cpu()
        colours = (batch.images[0].permute(0, 2, 3, 1).reshape(-1, 3).clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        if len(points) > self.max_points:
            keep = torch.linspace(0, len(points) - 1, self.max_points).long()
            points, colours = points[keep], colours[keep]
        writer.add_mesh("vis/points", vertices=points[None], colors=colours[None], global_step=step)
