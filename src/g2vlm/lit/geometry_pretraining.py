"""`GeometryPretraining`: stage 1 of the recipe — the geometric expert learns depth, points and cameras.

    lightning fit --config experiments/geometry/demo.yaml

The shared plumbing (starting weights, freezing, FSDP2, the optimiser and its schedule, gradient-norm logging and
clipping, loss guards) is `g2vlm.lit.base.BaseTask`'s. This stage adds the geometry loss (`g2vlm.losses.
geometry_loss`, fp32 outside autocast), the depth and pose metrics of validation and the FLOPs that
ThroughputMonitor reads.
"""

from __future__ import annotations

import torch
from lightning.fabric.utilities.throughput import measure_flops

from g2vlm.datamodules.multiview.batch import MultiViewBatch
from g2vlm.lit.base import BaseTask
from g2vlm.lit.optimization import Optimization
from g2vlm.losses.geometry_loss import GeometryLoss, GeometryTarget
from g2vlm.metrics.depth import DepthMetrics
from g2vlm.metrics.relative_pose import RelativePoseMetrics
from g2vlm.model.config import model_config
from g2vlm.model.g2vlm import G2VLM
from g2vlm.model.outputs import GeometryOutput

STAGE_1A = Optimization(learning_rate=2e-4, warmup_steps=5000)  # official stage 1a (reference §3.2)


def images_in_batch(batch: MultiViewBatch) -> int:
    """Images in a batch (B·N): ThroughputMonitor's `batch_size_fn`, so its samples/s are images/s."""
    return batch.batch_size * batch.num_views


class GeometryPretraining(BaseTask):
    """Geometry pretraining of a G2VLM preset.

    Args:
        preset: model preset (`tiny`, `small`, `g2vlm-2b`).
        freeze: the groups that are frozen (dino, vit, semantic, geometric, heads); every other group trains.
            Official stage 1 freezes DINO, the ViT and the semantic expert. Groups the preset lacks are ignored.
        loss: the geometry loss with its weights (official defaults).
        optimization: AdamW and its warmup-cosine schedule (`g2vlm.lit.optimization.Optimization`; default the
            official stage 1a: lr 2e-4, (0.9, 0.95), eps 1e-15, no weight decay, 5000 warmup steps, floor 1e-7).
        gradient_checkpointing: activation checkpointing per trunk layer, DINO block and head decoder block.
        compile: regional `torch.compile` of the trunk layers and head blocks (`G2VLM.compile_blocks`); pays on
            CUDA, not at the CPU demo's size.
        init_weights: starting weights: a model file (safetensors written by `g2vlm import-weights`), whose
            stored architecture must be the preset's (its input format, e.g. the official one of imported
            official weights, and its confidence head are kept), or a single-file Lightning checkpoint of this
            module (e.g. the output of `g2vlm consolidate`). Loaded strictly. None: random initialisation.
    """

    def __init__(
        self,
        preset: str = "small",
        freeze: list[str] | None = None,
        loss: GeometryLoss | None = None,
        optimization: Optimization = STAGE_1A,
        gradient_checkpointing: bool = False,
        compile: bool = False,
        init_weights: str | None = None,
    ) -> None:
        super().__init__(model_config(preset), freeze if freeze is not None else ["dino", "vit", "semantic"],
                         optimization, gradient_checkpointing, compile, init_weights)
        self.save_hyperparameters(ignore=["loss"])
        self.loss = loss if loss is not None else GeometryLoss()
        self.flops_per_batch: int | None = None  # read by ThroughputMonitor (FLOPs/s, MFU)
        self._flops_cache: dict[tuple[int, ...], int] = {}
        self._flops_model: list[G2VLM] = []  # a meta-device copy for FLOP counting, kept out of the module tree
        self.val_depth = DepthMetrics(alignment="scale")
        self.val_pose = RelativePoseMetrics(thresholds=(30,))

    def forward(self, images: torch.Tensor) -> GeometryOutput:
        return self.model.forward_geometry(images)

    def measure_flops_per_batch(self, images_shape: tuple[int, ...]) -> int:
        """Forward + backward FLOPs of one batch of images (B, N, 3, H, W), counted for one clip on a
        meta-device copy with the same frozen groups (frozen parts cost no weight gradients) and multiplied by
        B. Cached per (N, H, W): budget batching draws a few dozen distinct clip shapes."""
        batch_size, clip_shape = images_shape[0], tuple(images_shape[1:])
        if clip_shape not in self._flops_cache:
            if not self._flops_model:
                with torch.device("meta"):
                    model = G2VLM(self.model_config)
                self.apply_freeze(model)
                self._flops_model.append(model)
            model = self._flops_model[0]
            images = torch.empty((1, *clip_shape), device="meta")
            self._flops_cache[clip_shape] = measure_flops(
                model, lambda: model.forward_geometry(images),
                loss_fn=lambda out: out.depth.sum() + out.camera_to_world.sum() + out.global_points.sum())
        return batch_size * self._flops_cache[clip_shape]

    def on_train_batch_start(self, batch: MultiViewBatch, batch_idx: int) -> None:
        self.flops_per_batch = self.measure_flops_per_batch(tuple(batch.images.shape))

    # ------------------------------------------------------------------------------------- steps
    def training_losses(self, batch: MultiViewBatch) -> dict[str, torch.Tensor]:
        self.log("train/views", float(batch.num_views), batch_size=batch.batch_size)
        return self.loss(self(batch.images), GeometryTarget.of(batch)).terms()

    def validation_step(self, batch: MultiViewBatch, batch_idx: int) -> None:
        output = self(batch.images)
        losses = self.loss(output, GeometryTarget.of(batch))
        for name, value in losses.terms().items():
            self.log(f"val/loss/{name}", value, batch_size=batch.batch_size, sync_dist=True)
        with_depth = batch.has_depth
        if with_depth.any():  # per-image IRLS-L1 scale alignment, pixel-weighted (the monocular protocol)
            self.val_depth.update(output.depth[with_depth].flatten(0, 1), batch.depth_m[with_depth].flatten(0, 1),
                                  batch.valid[with_depth].flatten(0, 1))
        if batch.num_views > 1:
            self.val_pose.update(output.camera_to_world, batch.camera_to_world)

    def on_validation_epoch_end(self) -> None:
        # compute() already gathers every rank's state, so the values agree across ranks; sync_dist only averages
        # equal values (and keeps a sharded run's logs free of Lightning's epoch-level sync warning)
        if self.val_depth.update_called:
            depth = self.val_depth.compute()
            self.log_dict({f"val/depth/{name}": depth[name] for name in ("abs_rel", "delta_1")}, sync_dist=True)
        if self.val_pose.update_called:
            self.log("val/pose/AUC@30", self.val_pose.compute()["AUC@30"].float(), sync_dist=True)
        self.val_depth.reset()
        self.val_pose.reset()
