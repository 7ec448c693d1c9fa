"""G2VLM: the top-level model (DESIGN.md "The model").

    model = G2VLM(model_config("small"))
    out = model.forward_geometry(images)          # images (B, N, 3, H, W) in [0, 1] -> GeometryOutput
    out = model(pack(samples, model.config))     # joint path -> ModelOutput (logits, geometry)

The geometry path has two input formats (model/official_format.py): the clean one of our own training (default)
and the official one (`config.official_input`, chosen by `g2vlm import-weights --official`), which adds the
official prompt prefix and per-frame delimiters through the semantic expert and the official DINO windows. The
joint path is the same for both (its Geometry segments use the configured positions and per-frame DINO).

Parts (for freezing, parameter counts and per-part learning rates): dino, dino_projector, vit,
embeddings (token embedding + LM head), semantic_expert, geometric_expert, heads. Freezing groups:
dino; vit; semantic (embeddings + semantic expert); geometric (projector + geometric expert); heads.
"""

from __future__ import annotations

import torch
from torch import nn

from g2vlm.model.config import ModelConfig
from g2vlm.model.dino_encoder import DinoEncoder, DinoProjector
from g2vlm.model.expert_router import ExpertRouterStack
from g2vlm.model.heads import ContextDecoderBlock, Decoder, DecoderBlock, GeometryHeads
from g2vlm.model.official_format import official_geometric_hidden
from g2vlm.model.outputs import GeometryOutput, ModelOutput
from g2vlm.model.packing import PackedBatch
from g2vlm.model.rope import geometry_positions, mrope_cos_sin
from g2vlm.model.vision_tower import VisionTower

FREEZE_GROUPS: dict[str, tuple[str, ...]] = {
    "dino": ("dino",),
    "vit": ("vit",),
    "semantic": ("embeddings", "semantic_expert"),
    "geometric": ("dino_projector", "geometric_expert"),
    "heads": ("heads",),
}


class G2VLM(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.dino = DinoEncoder(config.dino)
        self.dino_projector = DinoProjector(config.dino.width, config.width)
        self.trunk = ExpertRouterStack(config)
        self.heads = GeometryHeads(config.width, config.geometry_heads, config.dino.patch_size)
        if config.semantic:
            self.embed_tokens = nn.Embedding(config.vocab_size, config.width)
            self.lm_head = nn.Linear(config.width, config.vocab_size, bias=False)
            self.vision_tower = VisionTower(config.vit, config.width) if config.vit is not None else None
        else:
            self.embed_tokens = self.lm_head = self.vision_tower = None

    # ----------------------------------------------------------------------------------------- parts
    def parts(self) -> dict[str, list[nn.Module]]:
        """Modules of each part (empty list where the model has no such part)."""
        layers = self.trunk.layers
        semantic = [layer.semantic for layer in layers if layer.semantic is not None]
        return {
            "dino": [self.dino],
            "dino_projector": [self.dino_projector],
            "vit": [self.vision_tower] if self.vision_tower is not None else [],
            "embeddings": [m for m in (self.embed_tokens, self.lm_head) if m is not None],
            "semantic_expert": semantic + ([self.trunk.semantic_norm] if self.trunk.semantic_norm is not None else []),
            "geometric_expert": [layer.geometric for layer in layers] + [self.trunk.geometric_norm],
            "heads": [self.heads],
        }

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part (works on the meta device)."""
        return {name: sum(p.numel() for m in modules for p in m.parameters()) for name, modules in self.parts().items()}

    def summary(self) -> str:
        """A table of parameter counts per part, trainable and total."""
        parts = self.parts()
        lines = [f"{'part':<18}{'parameters':>16}{'trainable':>16}"]
        for name, modules in parts.items():
            params = [p for m in modules for p in m.parameters()]
            total = sum(p.numel() for p in params)
            trainable = sum(p.numel() for p in params if p.requires_grad)
            lines.append(f"{name:<18}{total:>16,}{trainable:>16,}")
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        lines.append(f"{'total':<18}{total:>16,}{trainable:>16,}")
        return "\n".join(lines)

    def freeze(self, *groups: str, frozen: bool = True) -> None:
        """Freeze (or with frozen=False unfreeze) groups: dino, vit, semantic, geometric, heads.

        Frozen parameters get requires_grad=False; frozen encoders run under no_grad and frozen experts
        detach their activations, so a frozen part keeps no activations for backward.
        """
        parts = self.parts()
        for group in groups:
            if group not in FREEZE_GROUPS:
                raise ValueError(f"model/g2vlm.py freeze: unknown group {group!r}; choose from {sorted(FREEZE_GROUPS)}")
            for part in FREEZE_GROUPS[group]:
                for module in parts[part]:
                    module.requires_grad_(not frozen)
                    if hasattr(module, "frozen"):
                        module.frozen = frozen

    def frozen_groups(self) -> list[str]:
        """Groups whose parameters are all frozen (groups absent from the model are not listed)."""
        parts = self.parts()
        out = []
        for group, names in FREEZE_GROUPS.items():
            params = [p for name in names for m in parts[name] for p in m.parameters()]
            if params and not any(p.requires_grad for p in params):
                out.append(group)
        return out

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Per-layer activation checkpointing (non-reentrant) of the trunk, of the head decoders' blocks and
        of the DINO encoder's blocks (which matters only when the encoder trains; a frozen one keeps no
        activations)."""
        self.trunk.gradient_checkpointing = enabled
        for module in self.heads.modules():
            if isinstance(module, Decoder):
                module.gradient_checkpointing = enabled
        self.dino.vit.set_grad_checkpointing(enabled)

    def compile_blocks(self, **options) -> None:
        """The `torch.compile` switch: compile each trunk layer's geometry path and each head decoder block
        (regional compilation: the layers share one compiled graph, so compile time does not grow with depth).
        `options` go to `torch.compile` (e.g. `mode`, `backend`). The joint (packed) path stays eager."""
        for layer in self.trunk.layers:
            layer.forward_geometry = torch.compile(layer.forward_geometry, **options)
        for module in self.heads.modules():
            if isinstance(module, (DecoderBlock, ContextDecoderBlock)):
                module.compile(**options)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters per part (for per-part learning rates and gradient-norm logging)."""
        return {
            name: [p for m in modules for p in m.parameters() if p.requires_grad]
            for name, modules in self.parts().items()
        }

    # ------------------------------------------------------------------------------ geometry path
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (M, 3, H, W) in [0, 1] -> trunk-width geometric tokens (M, h·w, D)."""
        return self.dino_projector(self.dino(frames))

    def forward_geometry(self, images: torch.Tensor) -> GeometryOutput:
        """The fast path: images (B, N, 3, H, W) in [0, 1] -> GeometryOutput (fp32).

        Clean format: geometric tokens only, one dense (B, N·h·w, D) batch, attention without any mask. Official
        format (`config.official_input`): the official sequence of model/official_format.py.
        """
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"model/g2vlm.py forward_geometry: images must be (B, N, 3, H, W), got {tuple(images.shape)}")
        b, n, _, height, width = images.shape
        patch = self.config.dino.patch_size
        gh, gw = height // patch, width // patch
        if self.config.official_input is not None:
            hidden = official_geometric_hidden(self, images)
        else:
            tokens = self.encode_frames(images.flatten(0, 1))  # (B·N, P, D)
            x = tokens.reshape(b, n * gh * gw, -1)
            positions, _ = geometry_positions(n, gh, gw, 0, self.config.geometry_positions, device=images.device)
            cos, sin = self._rope(positions)
            hidden = self.trunk.forward_geometry(x, cos[None], sin[None])
        return GeometryOutput(**self.heads(hidden.reshape(b, n, gh * gw, -1), gh, gw))

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        return mrope_cos_sin(positions, c.head_dim, c.rope_theta, c.mrope_section)

    # --------------------------------------------------------------------------------- joint path
    def embed(self, batch: PackedBatch) -> torch.Tensor:
        """Input embeddings of a packed batch (on the model's device) -> (T, D), semantic tokens first: text from
        the token embedding, ViT tokens from the vision tower, geometric tokens from DINO + projector."""
        c = self.config
        parts = []
        if batch.num_semantic:
            if self.embed_tokens is None:
                raise ValueError("model/g2vlm.py: the batch has text or ViT tokens but the model has no semantic side")
            semantic = self.embed_tokens.weight.new_zeros(batch.num_semantic, c.width)
            if batch.input_ids.numel():
                semantic = semantic.index_copy(0, batch.text_index, self.embed_tokens(batch.input_ids))
            if batch.vit_patches is not None:
                vit = self.vision_tower(batch.vit_patches, batch.vit_grid_thw)
                semantic = semantic.index_copy(0, batch.vit_index, vit.to(semantic.dtype))
            parts.append(semantic)
        for frames in batch.geometry_frames:
            parts.append(self.encode_frames(frames).flatten(0, 1))
        return torch.cat(parts, dim=0)

    def forward(self, batch: PackedBatch, run_heads: bool = False) -> ModelOutput:
        """The joint path over a packed batch (see model/packing.py) -> ModelOutput."""
        c = self.config
        batch = batch.to(self.dino_projector.weight.device)
        x = self.embed(batch)
        cos, sin = self._rope(batch.position_ids)
        mask = batch.block_mask() if c.attention_backend == "flex" else batch.sample_blocks()  # once per batch
        semantic_hidden, geometric_hidden = self.trunk.forward_packed(x, batch.num_semantic, cos, sin, mask)
        logits = None
        if batch.input_ids.numel():
            logits = self.lm_head(semantic_hidden.index_select(0, batch.text_index))
        geometry = None
        if run_heads:
            geometry, offset = [], 0
            for n, gh, gw in batch.geometry_grids:
                tokens = geometric_hidden[offset : offset + n * gh * gw].reshape(1, n, gh * gw, -1)
                geometry.append(GeometryOutput(**self.heads(tokens, gh, gw)))
                offset += n * gh * gw
        return ModelOutput(logits, geometry, semantic_hidden, geometric_hidden)

