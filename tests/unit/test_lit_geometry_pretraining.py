"""GeometryPretraining: optimisation pieces and gradient clipping, on tiny synthetic shards."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from g2vlm.datamodules.multiview.datamodule import MultiViewDataModule
from g2vlm.lit.geometry_pretraining import GeometryPretraining
from g2vlm.lit.optimization import (
    Optimization,
    adamw_parameter_groups,
    gradient_norms,
    total_norm,
    warmup_cosine_factor,
)
from g2vlm.losses.geometry_loss import GeometryLoss


def tiny_data(shards_root) -> MultiViewDataModule:
    folder = shards_root / "data" / "synthetic-tiny"
    return MultiViewDataModule(train_shards=[str(folder / "synthetic-train-000000.tar")], image_size=(32, 32),
                               size_multiple=4, views_min=2, views_max=3, image_budget=6, train_batches_per_epoch=4,
                               num_workers=0, color_jitter=False)


class RecordClippedNorm(L.Callback):
    """Records the total gradient norm the optimizer applied (after clipping; grads are intact right after
    the step, and the closure runs inside `step`, so a pre-hook would see no gradients yet)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        def record(optimizer, args, kwargs):  # noqa: ARG001
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            self.norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
        trainer.optimizers[0].register_step_post_hook(record)


def test_huge_loss_is_clipped_to_norm_one(tiny_synthetic_shards, tmp_path):
    module = GeometryPretraining(preset="tiny", freeze=["vit", "semantic"], loss=GeometryLoss(local_weight=1e6),
                                 optimization=Optimization(learning_rate=1e-3, warmup_steps=1))
    recorder = RecordClippedNorm()
    trainer = L.Trainer(accelerator="cpu", max_steps=2, gradient_clip_val=1.0, callbacks=[recorder], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(module, datamodule=tiny_data(tiny_synthetic_shards))
    assert len(recorder.norms) == 2
    assert trainer.callback_metrics["train/grad_norm/total"] > 100  # the unclipped norm really was huge
    assert all(norm <= 1.0 + 1e-6 for norm in recorder.norms), recorder.norms


def test_configure_model_is_idempotent_and_freezes_by_group():
    module = GeometryPretraining(preset="tiny", freeze=["vit", "semantic"])
    module.configure_model()
    model = module.model
    module.configure_model()
    assert module.model is model
    assert sorted(model.frozen_groups()) == ["semantic", "vit"]


def test_parameter_groups_decay_matrices_only_and_take_part_rates():
    linear = torch.nn.Linear(4, 3)
    norm = torch.nn.LayerNorm(3)
    parts = {"heads": list(linear.parameters()), "geometric_expert": list(norm.parameters())}
    groups = adamw_parameter_groups(parts, learning_rate=1e-3, weight_decay=0.1, part_learning_rates={"heads": 5e-4})
    by_name = {group["name"]: group for group in groups}
    assert by_name["heads"]["params"] == [linear.weight] and by_name["heads"]["weight_decay"] == 0.1
    assert by_name["heads_no_decay"]["params"] == [linear.bias] and by_name["heads_no_decay"]["weight_decay"] == 0.0
    assert by_name["heads"]["lr"] == 5e-4 and by_name["geometric_expert_no_decay"]["lr"] == 1e-3
    with pytest.raises(ValueError, match="unknown parts \\['hedas'\\]"):
        adamw_parameter_groups(parts, 1e-3, 0.0, {"hedas": 1.0})


def test_warmup_cosine_factor_hand_values():
    assert warmup_cosine_factor(0, warmup_steps=4, total_steps=14, min_factor=0.1) == pytest.approx(0.25)
    assert warmup_cosine_factor(3, 4, 14, 0.1) == pytest.approx(1.0)
    assert warmup_cosine_factor(4, 4, 14, 0.1) == pytest.approx(1.0)
    # halfway through the cosine: 0.1 + 0.9 * 0.5 * (1 + cos(pi/2))
    assert warmup_cosine_factor(9, 4, 14, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert warmup_cosine_factor(14, 4, 14, 0.1) == pytest.approx(0.1)
    assert warmup_cosine_factor(100, 4, 14, 0.1) == pytest.approx(0.1)


def test_gradient_norms_per_part_and_in_total():
    """The logged norms (and the one clipping uses): per part, and the total over every part, against the norm of
    all gradients concatenated in float64; parts without gradients are left out, none at all gives None."""
    torch.manual_seed(0)
    parts = {"a": [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))],
             "b": [torch.nn.Parameter(torch.randn(7))], "frozen": [torch.nn.Parameter(torch.randn(2))]}
    for name in ("a", "b"):
        for parameter in parts[name]:
            parameter.grad = torch.randn_like(parameter) * 10
    norms = gradient_norms(parts)
    assert sorted(norms) == ["a", "b"]
    whole = torch.cat([p.grad.double().flatten() for name in ("a", "b") for p in parts[name]]).norm()
    part_a = torch.cat([p.grad.double().flatten() for p in parts["a"]]).norm()
    assert norms["a"].item() == pytest.approx(part_a.item(), rel=1e-6)
    assert total_norm(norms).item() == pytest.approx(whole.item(), rel=1e-6)
    assert total_norm({}) is None
