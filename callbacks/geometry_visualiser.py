"""`GeometryVisualiser`: every N training steps, show what the geometric expert predicts.

Logs to TensorBoard, for the first clip of the current batch:
- `vis/depth`: one row per view — image | GT depth | predicted depth (scale-aligned to GT per view, the
  monocular protocol) | |error| — all depths on one colour ramp;
- `vis/points`: the predicted world points of the clip as a coloured point cloud (TensorBoard's mesh plugin).

Interface with the LightningModule: `pl_module(images (1, N, 3, H, W))` returns an object with `depth`
(1, N, H, W) and `world_points` (1, N, H, W, 3), as `GeometryPretraining` does.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from g2vlm.geometry.alignment import irls_l1_scale
from g2vlm.visual_io import colourise


def depth_comparison(image: torch.Tensor, depth_m: torch.Tensor, valid: torch.Tensor,
                     pred_depth: torch.Tensor) -> np.ndarray:
    """Rows of image | GT | aligned prediction | |error| for N views -> (N·H, 4·W, 3) uint8.

    image (N, 3, H, W) in [0, 1]; depth_m, pred_depth (N, H, W); valid (N, H, W) bool.
    """
    rows = []
    for view in range(image.shape[0]):
        gt, mask = depth_m[view].float(), valid[view]
        pred = pred_depth[view].float()
        if mask.any():
            pred = pred * irls_l1_scale(pred[mask], gt[mask])
            low, high = float(gt[mask].min()), float(gt[mask].max())
        else:
            low, high = float(pred.min()), float(pred.max())
        rgb = (image[view].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        error = (pred - gt).abs().cpu().numpy()
        rows.append(np.concatenate([
            rgb,
            colourise(gt.cpu().numpy(), mask.cpu().numpy(), low, high),
            colourise(pred.cpu().numpy(), None, low, high),
            colourise(error, mask.cpu().numpy(), 0.0, 0.25 * max(high, 1e-6)),
        ], axis=1))
    return np.concatenate(rows, axis=0)


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
        grid = depth_comparison(batch.images[0], batch.depth_m[0], batch.valid[0], output.depth[0])
        writer.add_image("vis/depth", grid, step, dataformats="HWC")
        points = output.world_points[0].reshape(-1, 3).float().cpu()
        colours = (batch.images[0].permute(0, 2, 3, 1).reshape(-1, 3).clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        if len(points) > self.max_points:
            keep = torch.linspace(0, len(points) - 1, self.max_points).long()
            points, colours = points[keep], colours[keep]
        writer.add_mesh("vis/points", vertices=points[None], colors=colours[None], global_step=step)
