"""The optimiser and learning-rate schedule of both training stages, and the gradient norms they log.

Official recipe (reference g2vlm-official.md §3.2): AdamW (0.9, 0.95), eps 1e-15, weight decay 0, linear
warmup then cosine down to a floor learning rate. In YAML, the `optimization` argument of a stage:

    model:
      init_args:
        optimization: {learning_rate: 2.0e-4, warmup_steps: 5000}   # the other fields keep the stage's defaults
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.tensor import DTensor


@dataclass(frozen=True)
class Optimization:
    """AdamW with per-part learning rates and a warmup-cosine schedule (official values as defaults; the stages
    give their own learning rate and warmup).

    learning_rate: peak rate. part_learning_rates: optional peak rate per part of `G2VLM.parts` (dino,
    dino_projector, vit, embeddings, semantic_expert, geometric_expert, heads). weight_decay: decoupled decay on
    matrices (biases, norms and LayerScales get none). betas, eps: AdamW moments. warmup_steps: linear warmup
    0 -> peak. min_learning_rate: the floor the cosine ends at, at the run's last step.
    """

    learning_rate: float = 2e-4
    part_learning_rates: dict[str, float] | None = None
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-15
    warmup_steps: int = 5000
    min_learning_rate: float = 1e-7

    @classmethod
    def of(cls, value: Optimization | dict) -> Optimization:
        """`value` itself, or built from its dict form (hyper-parameters of a checkpoint hold the dict)."""
        return cls(**value) if isinstance(value, dict) else value

    def build(self, parts: dict[str, list[nn.Parameter]], total_steps: int
              ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
        """(AdamW over the trainable `parts` (the fused kernel when every parameter is on CUDA), its warmup-cosine
        schedule stepped once per optimizer step over `total_steps`)."""
        groups = adamw_parameter_groups(parts, self.learning_rate, self.weight_decay, self.part_learning_rates)
        on_cuda = all(p.is_cuda for group in groups for p in group["params"])
        optimizer = torch.optim.AdamW(groups, lr=self.learning_rate, betas=tuple(self.betas), eps=self.eps,
                                      fused=on_cuda or None)
        total_steps = max(1, total_steps)
        scheduler = warmup_cosine_schedule(optimizer, min(self.warmup_steps, total_steps), total_steps,
                                           self.min_learning_rate / self.learning_rate)
        return optimizer, scheduler


def adamw_parameter_groups(
    parts: dict[str, list[nn.Parameter]],
    learning_rate: float,
    weight_decay: float,
    part_learning_rates: dict[str, float] | None = None,
) -> list[dict]:
    """Param groups per part and decay class. parts: part name -> trainable parameters.

    Matrices (ndim ≥ 2) get `weight_decay`; biases, norms and LayerScale vectors get none. A part named in
    `part_learning_rates` uses that rate. Each group carries its part name under "name" (for LR logging).
    Unknown part names in `part_learning_rates` raise a ValueError listing the parts.
    """
    part_learning_rates = dict(part_learning_rates or {})
    unknown = set(part_learning_rates) - set(parts)
    if unknown:
        raise ValueError(f"part_learning_rates: unknown parts {sorted(unknown)}; the model has {sorted(parts)}")
    groups = []
    for part, parameters in parts.items():
        rate = part_learning_rates.get(part, learning_rate)
        decayed = [p for p in parameters if p.ndim >= 2]
        not_decayed = [p for p in parameters if p.ndim < 2]
        if decayed:
            groups.append({"name": part, "params": decayed, "lr": rate, "weight_decay": weight_decay})
        if not_decayed:
            groups.append({"name": f"{part}_no_decay", "params": not_decayed, "lr": rate, "weight_decay": 0.0})
    return groups


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_factor: float) -> float:
    """LR multiplier: linear 0 → 1 over `warmup_steps`, then cosine 1 → `min_factor` at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                           min_factor: float) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps, min_factor))


def gradient_norms(parts: dict[str, list[nn.Parameter]]) -> dict[str, torch.Tensor]:
    """L2 norm of the gradients of each part (fp32 0-dim tensors; parts without gradients are left out).

    Sharded gradients (FSDP2's DTensors) give the norm over all shards: a collective, so every rank must call
    this with the same parts at the same step.
    """
    norms = {}
    for part, parameters in parts.items():
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            continue
        norm = torch.nn.utils.get_total_norm(grads)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        norms[part] = norm.float()
    return norms


def total_norm(norms: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The global L2 norm from per-part norms (None without any)."""
    if not norms:
        return None
    return torch.stack(list(norms.values())).pow(2).sum().sqrt()
