"""`GeometryPretraining`: stage 1 of the recipe — the geometric expert learns depth, points and cameras.

    lightning fit --config experiments/geometry/demo.yaml

The model is built in `configure_model`, which also shards it under FSDP2 (`g2vlm.lit.fsdp`; the hook is
idempotent). The geometry loss runs in fp32 outside autocast. Every loss term is logged unweighted under
`train/loss/<term>`, the gradient norm of every part under `train/grad_norm/<part>` and in total under
`train/grad_norm/total` (before clipping; over all shards under FSDP2). Norm clipping works under every
strategy, FSDP2 included. Callbacks may guard the training loss through `guard_training_loss` (see
`g2vlm.callbacks.loss_outlier_clipping`).
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.fabric.utilities.throughput import measure_flops

from g2vlm.datamodules.multiview.batch import MultiViewBatch
from g2vlm.lit.fsdp import shard_for_trainer
from g2vlm.lit.optimization import adamw_parameter_groups, gradient_norms, total_norm, warmup_cosine_schedule
from g2vlm.losses.geometry_loss import GeometryLoss
from g2vlm.metrics.depth import DepthMetrics
from g2vlm.metrics.relative_pose import RelativePoseMetrics
from g2vlm.model.config import model_config
from g2vlm.model.g2vlm import FREEZE_GROUPS, G2VLM
from g2vlm.model.outputs import GeometryOutput
from g2vlm.model.weights import load_model, load_strict, same_architecture


def images_in_batch(batch: MultiViewBatch) -> int:
    """Images in a batch (B·N): ThroughputMonitor's `batch_size_fn`, so its samples/s are images/s."""
    return batch.batch_size * batch.num_views


class GeometryPretraining(L.LightningModule):
    """Geometry pretraining of a G2VLM preset.

    Args:
        preset: model preset (`tiny`, `small`, `g2vlm-2b`).
        freeze: the groups that are frozen (dino, vit, semantic, geometric, heads); every other group trains.
            Official stage 1 freezes DINO, the ViT and the semantic expert. Groups the preset lacks are ignored.
        loss: the geometry loss with its weights (official defaults).
        learning_rate: peak AdamW learning rate.
        part_learning_rates: optional peak rate per part (dino, dino_projector, geometric_expert, heads, ...).
        weight_decay: decoupled weight decay on matrices (official 0).
        betas, eps: AdamW moments (official (0.9, 0.95), 1e-15).
        warmup_steps: linear warmup steps.
        min_learning_rate: floor of the cosine schedule (official 1e-7).
        gradient_checkpointing: activation checkpointing per trunk layer, DINO block and head decoder block.
        compile: regional `torch.compile` of the trunk layers and head blocks (`G2VLM.compile_blocks`); pays on
            CUDA, not at the CPU demo's size.
        init_weights: starting weights: a model file (safetensors written by `g2vlm import-weights`), whose
            stored architecture must be the preset's (its input format, e.g. the official one of imported
            official weights, and its confidence head are kept), or a single-file Lightning checkpoint of this module (e.g. the
            output of `g2vlm consolidate`). Loaded strictly. None: random initialisation.
    """

    def __init__(
        self,
        preset: str = "small",
        freeze: list[str] | None = None,
        loss: GeometryLoss | None = None,
        learning_rate: float = 2e-4,
        part_learning_rates: dict[str, float] | None = None,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-15,
        warmup_steps: int = 5000,
        min_learning_rate: float = 1e-7,
        gradient_checkpointing: bool = False,
        init_weights: str | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["loss"])
        self.model_config = model_config(preset)
        self.freeze_groups = list(freeze if freeze is not None else ["dino", "vit", "semantic"])
        self.loss = loss if loss is not None else GeometryLoss()
        self.model: G2VLM | None = None
        self.flops_per_batch: int | None = None  # read by ThroughputMonitor (FLOPs/s, MFU)
        self._flops_cache: dict[tuple[int, ...], int] = {}
        self._flops_model: list[G2VLM] = []  # a meta-device copy for FLOP counting, kept out of the module tree
        self._pre_clip_grad_norm: torch.Tensor | None = None  # set each step by on_before_optimizer_step
        self.val_depth = DepthMetrics(alignment="scale")
        self.val_pose = RelativePoseMetrics(thresholds=(30,))

    # ------------------------------------------------------------------------------------ model
    def configure_model(self) -> None:
        if self.model is not None:
            return
        init_weights = self.hparams.init_weights
        if init_weights and str(init_weights).endswith(".safetensors"):
            self.model = load_model(init_weights)
            if not same_architecture(self.model.config, self.model_config):
                raise ValueError(f"GeometryPretraining: init_weights {init_weights} holds a model whose config "
                                 f"differs from preset {self.hparams.preset!r}; import it with that preset")
            self.model_config = self.model.config  # the file's input format (e.g. official) and heads
        else:
            self.model = G2VLM(self.model_config)
            if init_weights:
                from g2vlm.safe_load import load_checkpoint_file

                state = load_checkpoint_file(init_weights)["state_dict"]
                model_state = {key.removeprefix("model."): value for key, value in state.items()
                               if key.startswith("model.")}
                load_strict(self.model, model_state, list(self.model.state_dict()), [], str(init_weights))
        # `freeze` is authoritative: listed groups frozen, all others trainable (absent groups are no-ops)
        self.model.freeze(*FREEZE_GROUPS, frozen=False)
        self.model.freeze(*self.freeze_groups)
        self.model.set_gradient_checkpointing(self.hparams.gradient_checkpointing)
        if self.hparams.compile:
            self.model.compile_blocks()
        shard_for_trainer(self.model, self._trainer)

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
                model.freeze(*FREEZE_GROUPS, frozen=False)
                model.freeze(*self.freeze_groups)
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
    def _loss(self, batch: MultiViewBatch, output: GeometryOutput):
        return self.loss(
            output.local_points, output.camera_to_world, batch.depth_m, batch.valid, batch.K,
            batch.camera_to_world, batch.has_depth, batch.dataset_names, pred_global_points=output.global_points)

    def training_step(self, batch: MultiViewBatch, batch_idx: int) -> torch.Tensor:
        losses = self._loss(batch, self(batch.images))
        terms = losses.terms()
        for name, value in terms.items():
            self.log(f"train/loss/{name}", value.detach(), batch_size=batch.batch_size, prog_bar=name == "total")
        self.log("train/views", float(batch.num_views), batch_size=batch.batch_size)
        loss = losses.total
        for callback in self.trainer.callbacks:
            guard = getattr(callback, "guard_training_loss", None)
            if guard is not None:
                loss = guard(self.trainer, self, loss, terms)
        return loss

    def validation_step(self, batch: MultiViewBatch, batch_idx: int) -> None:
        output = self(batch.images)
        losses = self._loss(batch, output)
        for name, value in losses.terms().items():
            self.log(f"val/loss/{name}", value, batch_size=batch.batch_size, sync_dist=True)
        with_depth = batch.has_depth
        if with_depth.any():  # per-image IRLS-L1 scale alignment, pixel-weighted (the monocular protocol)
            self.val_depth.update(output.depth[with_depth].flatten(0, 1), batch.depth_m[with_depth].flatten(0, 1),
                                  batch.valid[with_depth].flatten(0, 1))
        if batch.num_views > 1:
            self.val_pose.update(output.camera_to_world, batch.camera_to_world)

    def on_validation_epoch_end(self) -> None:
        if self.val_depth.update_called:
            depth = self.val_depth.compute()
            self.log_dict({f"val/depth/{name}": depth[name] for name in ("abs_rel", "delta_1")})
        if self.val_pose.update_called:
            self.log("val/pose/AUC@30", self.val_pose.compute()["AUC@30"].float())
        self.val_depth.reset()
        self.val_pose.reset()

    # ----------------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        h = self.hparams
        groups = adamw_parameter_groups(self.model.parameter_groups(), h.learning_rate, h.weight_decay,
                                        h.part_learning_rates)
        on_cuda = all(p.is_cuda for group in groups for p in group["params"])
        optimizer = torch.optim.AdamW(groups, lr=h.learning_rate, betas=tuple(h.betas), eps=h.eps,
                                      fused=on_cuda or None)
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = warmup_cosine_schedule(optimizer, min(h.warmup_steps, total_steps), total_steps,
                                           h.min_learning_rate / h.learning_rate)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Log the gradient norm of every part and in total, before clipping (under FSDP2 over all shards: a
        collective on every rank). The total is kept for `configure_gradient_clipping`, which Lightning calls
        next."""
        norms = gradient_norms(self.model.parameter_groups())
        for part, norm in norms.items():
            self.log(f"train/grad_norm/{part}", norm)
        self._pre_clip_grad_norm = total_norm(norms)
        if self._pre_clip_grad_norm is not None:
            self.log("train/grad_norm/total", self._pre_clip_grad_norm)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Norm clipping with the global norm `on_before_optimizer_step` measured, under every strategy (each
        rank scales its own gradient shards by the same factor); value clipping as Lightning does it."""
        if not gradient_clip_val:
            return
        if gradient_clip_algorithm == "value":
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        norm, self._pre_clip_grad_norm = self._pre_clip_grad_norm, None
        if norm is not None:  # None: no gradients this step (e.g. a step dropped by LossOutlierClipping)
            grads = [p for p in self.model.parameters() if p.grad is not None]
            torch.nn.utils.clip_grads_with_norm_(grads, gradient_clip_val, norm)
