"""`SpatialReasoning`: stage 2 of the recipe — the semantic expert learns to answer spatial questions while
attending to the geometric expert's tokens (reference g2vlm-official.md §1.7, §2.7, §3.1).

    lightning fit --config experiments/reasoning/tiny.yaml

Variants (paper Fig. 4 / Table 1b; `variant`):
- `ce_only` (the main G²VLM): the geometric expert (and projector) and the heads are frozen; CE trains the
  semantic side.
- `ce_ce` (G²VLM-SR, the released joint_train.sh): the geometric expert is trained by the CE gradients that
  reach it through the shared attention; the heads (unused) are frozen.
- `vg_ce`: the heads run too and the geometry loss (VG) is added for the samples that carry 3D labels; samples
  of one packed batch may have different frame counts (each sample's loss is computed on its own frames).

Loss: CE over answer tokens as a per-token mean over the GLOBAL batch: Σ CE · world_size / (answer tokens summed
over all ranks), so that the gradient average of DDP/FSDP is the true per-token mean (the official trainer's
rule); total = ce_weight · CE + vg_weight · VG (both 1.0 officially). Every term is logged unweighted under
`train/loss/<term>` (`ce` as the global per-token mean). Callbacks may guard the loss through
`guard_training_loss` (the official joint stage has no loss clipping; the `vg_ce` overlay guards `vg`).

Validation: teacher-forced CE, then each sample's final answer is generated (KV cache, greedy, stop at
`<|im_end|>`) and scored: SPAR-Bench tasks by SPAR's rules (`g2vlm.metrics.spatial_qa`), other numeric answers
by MRA of the first number, multiple choice by SPAR's exact match except that an empty answer scores 0,
free-form answers by exact (case-insensitive) match. Logged: `val/qa/score`, `val/qa/numeric_mra`,
`val/qa/choice_accuracy` (synced over ranks) and `val/qa/<task>` (on a single process).

Starting weights (`configure_model`): `init_weights` (our safetensors, or a single-file SpatialReasoning
checkpoint) — else a random model, then `geometry_checkpoint` (a GeometryPretraining checkpoint or our
safetensors: the geometric parts DINO, projector, geometric expert, its norm and the heads, strictly) and
`qwen2vl` (a local Hugging Face Qwen2-VL folder: the semantic side, see `g2vlm.model.weights.load_qwen2vl`).
The rest of the plumbing (freezing, FSDP2, the optimiser and its schedule, gradient-norm logging and clipping, loss
guards) is `g2vlm.lit.base.BaseTask`'s.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.distributed.fsdp import FSDPModule
from torchmetrics import MeanMetric

from g2vlm.datamodules.qa.batch import (
    GeometryPart,
    GeometryTargets,
    ImagePart,
    QABatch,
    QASample,
    TextPart,
    float_image,
)
from g2vlm.datamodules.qa.tokenizer import ChatTokens, load_tokenizer
from g2vlm.lit.base import BaseTask, read_model_state
from g2vlm.lit.fsdp import gathered
from g2vlm.lit.optimization import Optimization
from g2vlm.losses.geometry_loss import GeometryLoss, GeometryTarget
from g2vlm.metrics.spatial_qa import SPAR_TASKS, exact_match, mean_relative_accuracy, parse_number, score_answer
from g2vlm.model.config import model_config
from g2vlm.model.g2vlm import G2VLM
from g2vlm.model.generation import generate
from g2vlm.model.outputs import GeometryOutput
from g2vlm.model.packing import Geometry, PackedBatch, Segment, Text, VitImage, pack
from g2vlm.model.weights import config_from_dict, config_to_dict, load_qwen2vl, load_strict, read_tensors

VARIANTS = ("ce_only", "ce_ce", "vg_ce")
JOINT_STAGE = Optimization(learning_rate=2e-5, warmup_steps=400)  # official joint stage (reference §3.2)
GEOMETRIC_KEYS = re.compile(r"^(dino\.|dino_projector\.|trunk\.layers\.\d+\.geometric\.|trunk\.geometric_norm\.|heads\.)")


def build_model_config(preset: str, overrides: dict | None):
    """The preset with field overrides; nested configs (vit, dino, geometry_heads) merge key by key, and a
    `vit` override on a preset without a vision tower starts from the tower's defaults."""
    data = config_to_dict(model_config(preset))
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and (isinstance(data.get(key), dict) or data.get(key) is None):
            data[key] = {**(data.get(key) or {}), **value}
        else:
            data[key] = value
    try:
        return config_from_dict(data)
    except ValueError as error:
        raise ValueError(f"SpatialReasoning: model_overrides: {error}") from None


def sample_target(geometry: GeometryTargets) -> GeometryTarget:
    """A QA sample's 3D labels as the geometry loss's target: a batch of one clip."""
    return GeometryTarget(geometry.depth_m[None], geometry.valid[None], geometry.K[None],
                          geometry.camera_to_world[None],
                          torch.full((1,), geometry.has_depth, device=geometry.depth_m.device), [geometry.dataset])


def to_segments(parts) -> list[Segment]:
    """QA parts (datamodules.qa.batch) -> the model's packing segments, images as float in [0, 1]."""
    segments: list[Segment] = []
    for part in parts:
        if isinstance(part, TextPart):
            segments.append(Text(part.ids, part.supervised))
        elif isinstance(part, ImagePart):
            segments.append(VitImage(float_image(part.image)))
        elif isinstance(part, GeometryPart):
            segments.append(Geometry(float_image(part.frames)))
        else:
            raise TypeError(f"SpatialReasoning: unknown QA part {type(part).__name__}")
    return segments


def score_qa(task: str, answer_type: str, prediction: str, answer: str) -> float:
    """Score in [0, 1] of one generated answer (rules in the module docstring). SPAR-Bench answers are scored as
    they come, unstripped, as its official lmms-eval task does; other answers are stripped first."""
    if task in SPAR_TASKS:
        return score_answer(task, prediction, answer)
    prediction = prediction.strip()
    if answer_type == "numeric":
        number = parse_number(prediction, task)
        return mean_relative_accuracy(number, float(answer)) if number is not None else 0.0
    if answer_type == "multiple_choice":
        return exact_match(prediction, answer) if prediction else 0.0
    return float(prediction.lower() == answer.strip().lower())


class SpatialReasoning(BaseTask):
    """Joint spatial-reasoning training of a G2VLM (see the module docstring).

    Args:
        tokenizer: LOCAL tokenizer folder (the QADataModule's; `${data.init_args.tokenizer}` in YAML).
        preset: model preset; model_overrides: ModelConfig fields changed on it (e.g. give `small` a semantic side).
        variant: ce_only | ce_ce | vg_ce.
        freeze: groups frozen besides those the variant fixes (default dino and vit, as officially).
        loss: the geometry loss of `vg_ce`; ce_weight, vg_weight: loss weights (official 1.0, 1.0).
        init_weights, geometry_checkpoint, qwen2vl: starting weights (module docstring).
        optimization: AdamW and its warmup-cosine schedule (`g2vlm.lit.optimization.Optimization`; default the
            official joint stage: lr 2e-5, (0.9, 0.95), eps 1e-15, no weight decay, 400 warmup steps, floor 1e-7).
        gradient_checkpointing: activation checkpointing per trunk layer, DINO block and head decoder block.
        max_new_tokens: generation length in validation (SPAR-Bench: 100); generate_in_validation: whether to.
    """

    progress_bar_loss = "ce"

    def __init__(
        self,
        tokenizer: str,
        preset: str = "tiny",
        model_overrides: dict | None = None,
        variant: str = "ce_ce",
        freeze: list[str] | None = None,
        loss: GeometryLoss | None = None,
        ce_weight: float = 1.0,
        vg_weight: float = 1.0,
        init_weights: str | None = None,
        geometry_checkpoint: str | None = None,
        qwen2vl: str | None = None,
        optimization: Optimization = JOINT_STAGE,
        gradient_checkpointing: bool = False,
        max_new_tokens: int = 100,
        generate_in_validation: bool = True,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"SpatialReasoning: variant must be one of {VARIANTS}, got {variant!r}")
        config = build_model_config(preset, model_overrides)
        if not config.semantic:
            raise ValueError(f"SpatialReasoning: preset {preset!r} has no semantic side; set model_overrides "
                             f"{{semantic: true, vit: {{...}}, vocab_size: ...}}")
        fixed = {"ce_only": ["geometric", "heads"], "ce_ce": ["heads"], "vg_ce": []}[variant]
        freeze = sorted(set(fixed) | set(freeze if freeze is not None else ["dino", "vit"]))
        if variant != "ce_only" and "geometric" in freeze:
            raise ValueError(f"SpatialReasoning: variant {variant!r} trains the geometric expert; do not freeze it")
        # the packed path runs DINO per sample: the encoders stay in the root FSDP unit (g2vlm.lit.fsdp.shard_model)
        super().__init__(config, freeze, optimization, gradient_checkpointing, False, init_weights,
                         shard_encoders=False)
        self.save_hyperparameters(ignore=["loss"])
        self.tokenizer = load_tokenizer(tokenizer)
        if len(self.tokenizer) > self.model_config.vocab_size:
            raise ValueError(f"SpatialReasoning: tokenizer {tokenizer} has {len(self.tokenizer)} tokens, more than "
                             f"the model's vocab_size {self.model_config.vocab_size}")
        self.chat_tokens = ChatTokens.of(self.tokenizer, tokenizer)
        self.loss = loss if loss is not None else GeometryLoss()
        self.val_score, self.val_numeric, self.val_choice = MeanMetric(), MeanMetric(), MeanMetric()
        self._val_tasks: dict[str, list[float]] = defaultdict(list)

    # ------------------------------------------------------------------------------------ model
    def architecture(self) -> str:
        return f"preset {self.hparams.preset!r} with model_overrides {self.hparams.model_overrides}"

    def load_starting_weights(self, model: G2VLM) -> None:
        if self.hparams.geometry_checkpoint:
            self.load_geometry(model, self.hparams.geometry_checkpoint)
        if self.hparams.qwen2vl:
            load_qwen2vl(model, self.hparams.qwen2vl)

    @staticmethod
    def load_geometry(model: G2VLM, path: str | Path) -> None:
        """The geometric parts from a GeometryPretraining checkpoint (.ckpt) or our safetensors, strictly: every
        geometric key of `model` must be there with its shape; the source's other keys are ignored."""
        path = Path(path)
        state = read_tensors(path) if path.suffix == ".safetensors" else read_model_state(path)
        geometric = {k: v for k, v in state.items() if GEOMETRIC_KEYS.match(k)}
        expected = [k for k in model.state_dict() if GEOMETRIC_KEYS.match(k)]
        load_strict(model, geometric, expected, [], f"{path} (geometry)")

    # ------------------------------------------------------------------------------------- steps
    def pack(self, batch: QABatch) -> PackedBatch:
        return pack([to_segments(sample.parts) for sample in batch.samples], self.model_config)

    @property
    def world_size(self) -> int:
        return self._trainer.world_size if self._trainer is not None else 1

    def _global_sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (a collective: every rank calls it)."""
        return value if self.world_size == 1 else self._trainer.strategy.reduce(value.clone(), reduce_op="sum")

    def _losses(self, batch: QABatch, run_heads: bool) -> dict[str, torch.Tensor]:
        packed = self.pack(batch)
        sharded = isinstance(self.model, FSDPModule)
        output = self.model(packed, run_heads=run_heads and not sharded)
        labels = packed.text_labels.to(output.logits.device)
        ce_sum = F.cross_entropy(output.logits.float(), labels, ignore_index=-100, reduction="sum")
        tokens = self._global_sum((labels != -100).sum().float())
        losses = {"ce_objective": ce_sum * self.world_size / tokens.clamp(min=1),
                  "ce": self._global_sum(ce_sum.detach()) / tokens.clamp(min=1)}
        if run_heads and sharded:
            geometry, every_call = self._heads_equally_often(packed, output.geometric_hidden)
            losses.update(self._geometry_losses(batch.samples, geometry))
            losses["vg"] = losses["vg"] + every_call
        elif run_heads:
            losses.update(self._geometry_losses(batch.samples, output.geometry))
        return losses

    def _heads_equally_often(self, packed: PackedBatch, hidden: torch.Tensor) -> tuple[list[GeometryOutput], torch.Tensor]:
        """The heads on each geometry sample, as `G2VLM.forward` runs them, for a sharded model, where each call
        of a unit is a collective (all-gather; reduce-scatter in backward) that every rank must make as often as
        the others. Ranks with fewer geometry samples than the most on any rank also run the heads on a one-patch
        zero input. -> (the samples' outputs, a zero that depends on every call's local_points, camera_to_world and
        global_points: the outputs the geometry loss reads, so every call has the same backward on every rank)."""
        samples = len(packed.geometry_grids)
        most = self._trainer.strategy.reduce(torch.tensor(float(samples), device=hidden.device), reduce_op="max")
        outputs, extra, offset = [], [], 0
        for frames, grid_h, grid_w in packed.geometry_grids:
            tokens = hidden[offset : offset + frames * grid_h * grid_w].reshape(1, frames, grid_h * grid_w, -1)
            outputs.append(GeometryOutput(**self.model.heads(tokens, grid_h, grid_w)))
            offset += frames * grid_h * grid_w
        for _ in range(int(most.item()) - samples):
            dummy = torch.zeros(1, 1, 1, hidden.shape[-1], dtype=hidden.dtype, device=hidden.device, requires_grad=True)
            extra.append(GeometryOutput(**self.model.heads(dummy, 1, 1)))
        every_call = hidden.new_zeros((), dtype=torch.float32)
        for output in outputs + extra:
            every_call = every_call + 0.0 * (output.local_points.sum() + output.camera_to_world.sum()
                                             + output.global_points.sum())
        return outputs, every_call

    def _geometry_losses(self, samples: list[QASample], outputs) -> dict[str, torch.Tensor]:
        """Mean over the samples with 3D labels of each one's geometry loss (its own frame count)."""
        with_geometry = [s for s in samples if any(isinstance(p, GeometryPart) for p in s.parts)]
        terms: dict[str, list[torch.Tensor]] = defaultdict(list)
        for sample, output in zip(with_geometry, outputs):
            if sample.geometry is None:
                continue
            result = self.loss(output, sample_target(sample.geometry))
            for name, value in result.terms().items():
                terms[name].append(value)
        if not terms:  # keep the heads in the graph (no labelled sample in this batch): a zero VG
            zero = sum(o.depth.sum() for o in outputs) * 0.0 if outputs else torch.zeros((), device=self.device)
            return {"vg": zero}
        out = {f"vg_{name}": torch.stack(values).mean() for name, values in terms.items() if name != "total"}
        out["vg"] = torch.stack(terms["total"]).mean()
        return out

    def training_losses(self, batch: QABatch) -> dict[str, torch.Tensor]:
        h = self.hparams
        self.log("train/tokens", float(batch.num_tokens), batch_size=batch.batch_size)
        losses = self._losses(batch, run_heads=h.variant == "vg_ce")
        total = h.ce_weight * losses["ce_objective"] + (h.vg_weight * losses["vg"] if "vg" in losses else 0.0)
        return {"total": total, **{k: v for k, v in losses.items() if k != "ce_objective"}}

    def answer(self, sample: QASample, max_new_tokens: int | None = None) -> str:
        """Greedy answer to a sample's final question (its prompt), decoded without special tokens and not stripped
        (SPAR-Bench scores answers as lmms-eval returns them; `score_qa` strips the others)."""
        tokens = generate(self.model, to_segments(sample.prompt), self.chat_tokens.im_end,
                          max_new_tokens or self.hparams.max_new_tokens)
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def validation_step(self, batch: QABatch, batch_idx: int) -> None:
        losses = self._losses(batch, run_heads=False)
        self.log("val/loss/ce", losses["ce"], batch_size=batch.batch_size, sync_dist=True)
        if not self.hparams.generate_in_validation:
            return
        with gathered(self.model):  # generation reads the layers' weights directly (no-op unless sharded)
            answers = [self.answer(sample) for sample in batch.samples]
        for sample, answer in zip(batch.samples, answers):
            score = score_qa(sample.task, sample.answer_type, answer, sample.answer)
            self.val_score.update(score)
            if sample.answer_type == "numeric":
                self.val_numeric.update(score)
            elif sample.answer_type == "multiple_choice":
                self.val_choice.update(score)
            self._val_tasks[sample.task].append(score)

    def on_validation_epoch_end(self) -> None:
        if not self.hparams.generate_in_validation:
            return
        for name, metric in (("score", self.val_score), ("numeric_mra", self.val_numeric),
                             ("choice_accuracy", self.val_choice)):
            if metric.update_called:
                self.log(f"val/qa/{name}", metric.compute())
            metric.reset()
        if self.world_size == 1:
            for task, scores in sorted(self._val_tasks.items()):
                self.log(f"val/qa/{task}", sum(scores) / len(scores))
        self._val_tasks.clear()

