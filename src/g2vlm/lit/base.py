"""`BaseTask`: the plumbing both training stages share; `GeometryPretraining` and `SpatialReasoning` fill in hooks.

What lives here, once:
- the model (`configure_model`): built from `init_weights` (a model file of `g2vlm import-weights`, or a single-file
  checkpoint of the same LightningModule, e.g. `g2vlm consolidate`'s output), else at random with the stage's own
  starting weights (`load_starting_weights`); then `freeze` (the one source of truth for what trains: listed groups
  frozen, every other group trainable), activation checkpointing (`gradient_checkpointing`), regional compilation
  and FSDP2 sharding (`g2vlm.lit.fsdp`, the hook is idempotent);
- the training step's frame (`training_step`): the stage's `training_losses`, every term logged unweighted under
  `train/loss/<term>`, and the loss guards of callbacks (`guard_training_loss`, see
  `g2vlm.callbacks.loss_outlier_clipping`);
- the optimiser: AdamW with per-part rates and the warmup-cosine schedule (`g2vlm.lit.optimization.Optimization`);
  the gradient norm of every part under `train/grad_norm/<part>` and in total under `train/grad_norm/total`
  (before clipping; over all shards under FSDP2); norm clipping by that total under every strategy, FSDP2 included.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from pathlib import Path

import lightning as L
import torch

from g2vlm.lit.fsdp import shard_for_trainer
from g2vlm.lit.optimization import Optimization, gradient_norms, total_norm
from g2vlm.model.config import ModelConfig
from g2vlm.model.g2vlm import FREEZE_GROUPS, G2VLM
from g2vlm.model.weights import load_model, load_strict, same_architecture


def model_state(checkpoint_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The G2VLM weights of a LightningModule's state dict (its `model.` keys, without the prefix)."""
    return {key.removeprefix("model."): value for key, value in checkpoint_state.items() if key.startswith("model.")}


def read_model_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The G2VLM weights of a single-file Lightning checkpoint, read without running code from it."""
    from g2vlm.safe_load import load_checkpoint_file

    return model_state(load_checkpoint_file(path)["state_dict"])


class BaseTask(L.LightningModule):
    """A training stage of a G2VLM (module docstring). Subclasses call `super().__init__`, then
    `self.save_hyperparameters(ignore=["loss"])`, and implement `training_losses` (and their validation).

    Args:
        model_config: the architecture the stage builds (or that `init_weights` must hold).
        freeze: the groups that are frozen (dino, vit, semantic, geometric, heads); every other group trains.
        optimization: AdamW and its schedule (or its dict form, as a checkpoint's hyper-parameters hold it).
        gradient_checkpointing: activation checkpointing per trunk layer, DINO block and head decoder block.
        compile: regional `torch.compile` of the trunk layers and head blocks (`G2VLM.compile_blocks`).
        init_weights: starting weights (module docstring); None: the stage's own (`load_starting_weights`).
        shard_encoders: whether each encoder block is its own FSDP unit (`g2vlm.lit.fsdp.shard_model`).
    """

    progress_bar_loss = "total"  # the loss term shown in the progress bar

    def __init__(self, model_config: ModelConfig, freeze: list[str], optimization: Optimization | dict,
                 gradient_checkpointing: bool, compile: bool, init_weights: str | None,
                 shard_encoders: bool = True) -> None:
        super().__init__()
        unknown = sorted(set(freeze) - set(FREEZE_GROUPS))
        if unknown:
            raise ValueError(f"{type(self).__name__}: freeze: unknown groups {unknown}; choose from "
                             f"{sorted(FREEZE_GROUPS)}")
        self.model_config = model_config
        self.freeze_groups = sorted(set(freeze))
        self.optimization = Optimization.of(optimization)
        self.gradient_checkpointing = gradient_checkpointing
        self.compile_blocks = compile
        self.init_weights = init_weights
        self.shard_encoders = shard_encoders
        self.model: G2VLM | None = None
        self._pre_clip_grad_norm: torch.Tensor | None = None  # set each step by on_before_optimizer_step

    def save_hyperparameters(self, *args, ignore=None, frame=None, logger: bool = True) -> None:
        """Lightning's, with dataclass arguments (`optimization`) stored in their dict form: hyper-parameters stay
        plain containers, so a checkpoint loads with torch.load(weights_only=True) (`g2vlm.safe_load`)."""
        super().save_hyperparameters(*args, ignore=ignore, frame=frame or inspect.currentframe().f_back, logger=logger)
        for key, value in list(self.hparams.items()):
            if dataclasses.is_dataclass(value):
                self.hparams[key] = dataclasses.asdict(value)
        self._hparams_initial = copy.deepcopy(self._hparams)

    # ------------------------------------------------------------------------------------ model
    def architecture(self) -> str:
        """How the configured architecture is named in messages (the preset and its changes)."""
        return f"preset {self.hparams.get('preset')!r}"

    def load_starting_weights(self, model: G2VLM) -> None:
        """The stage's own starting weights for a randomly initialised model when no `init_weights` is given."""

    def build_model(self) -> G2VLM:
        """The model with its starting weights (module docstring), loaded strictly."""
        init_weights = self.init_weights
        if init_weights and str(init_weights).endswith(".safetensors"):
            model = load_model(init_weights)
            if not same_architecture(model.config, self.model_config):
                raise ValueError(f"{type(self).__name__}: init_weights {init_weights} holds a model whose config "
                                 f"differs from {self.architecture()}; import it with that architecture")
            self.model_config = model.config  # the file's input format (e.g. official) and heads
            return model
        model = G2VLM(self.model_config)
        if init_weights:
            load_strict(model, read_model_state(init_weights), list(model.state_dict()), [], str(init_weights))
        else:
            self.load_starting_weights(model)
        return model

    def apply_freeze(self, model: G2VLM) -> None:
        """`freeze` on `model`: its groups frozen, every other group trainable (groups it lacks are no-ops)."""
        model.freeze(*FREEZE_GROUPS, frozen=False)
        model.freeze(*self.freeze_groups)

    def configure_model(self) -> None:
        if self.model is not None:
            return
        self.model = self.build_model()
        self.apply_freeze(self.model)
        self.model.set_gradient_checkpointing(self.gradient_checkpointing)
        if self.compile_blocks:
            self.model.compile_blocks()
        shard_for_trainer(self.model, self._trainer, encoder_blocks=self.shard_encoders)

    # ------------------------------------------------------------------------------------- steps
    def training_losses(self, batch) -> dict[str, torch.Tensor]:
        """The stage's losses on a training batch: {"total": the loss to minimise, other terms unweighted}."""
        raise NotImplementedError

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        terms = self.training_losses(batch)
        for name, value in terms.items():
            self.log(f"train/loss/{name}", value.detach(), batch_size=batch.batch_size,
                     prog_bar=name == self.progress_bar_loss)
        loss = terms["total"]
        for callback in self.trainer.callbacks:
            guard = getattr(callback, "guard_training_loss", None)
            if guard is not None:
                loss = guard(self.trainer, self, loss, terms)
        return loss

    # ----------------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        optimizer, scheduler = self.optimization.build(self.model.parameter_groups(),
                                                       int(self.trainer.estimated_stepping_batches))
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
