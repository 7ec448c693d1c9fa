"""Model configuration: one dataclass tree and a registry of presets.

    from g2vlm.model.config import model_config
    config = model_config("small")            # "tiny" | "small" | "g2vlm-2b"

Official dimensions (`g2vlm-2b`) are those of reference g2vlm-official.md §1.1 and its appendix:
Qwen2-VL-2B trunk (28 layers, width 1536, 12 Q / 2 KV heads of 128, SwiGLU 8960, rope θ 1e6, M-RoPE
sections [16, 24, 24], vocab 151,936, untied LM head), DINOv2-with-registers ViT-L/14, π³ heads
(3 decoders × 5 blocks × 1536, 16 heads, RoPE2D base 100).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal


@dataclass(frozen=True)
class DinoConfig:
    """The geometric image encoder: a timm ViT with DINOv2-with-registers settings (random init; weights
    are loaded separately, never downloaded). The defaults are ViT-L/14 with 4 registers
    (`facebook/dinov2-with-registers-large`, timm `vit_large_patch14_reg4_dinov2`); smaller dims give a
    tiny random ViT of the same family for tests and the CPU demo."""

    width: int = 1024
    depth: int = 24
    heads: int = 16
    patch_size: int = 14
    registers: int = 4
    img_size: int = 518  # size the absolute position embedding is stored at (interpolated otherwise)
    # "patch": DINOv2's one patch-size convolution (official weights); "conv": log2(patch_size) stride-2 3x3
    # convolutions with GELU between them (a convolutional stem, for an encoder trained from scratch)
    stem: Literal["patch", "conv"] = "patch"


@dataclass(frozen=True)
class VisionTowerConfig:
    """The semantic image encoder: the Qwen2-VL vision tower from transformers (`Qwen2VLVisionConfig`);
    its merger projects into the trunk width."""

    depth: int = 32
    width: int = 1280
    heads: int = 16
    mlp_ratio: int = 4
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2


@dataclass(frozen=True)
class HeadsConfig:
    """π³-style geometry heads (reference §1.6): three transformer decoders (local points, camera,
    global points; plus an optional confidence decoder), per-frame attention with RoPE2D. Their width is
    the trunk width (the official heads have no input projection)."""

    depth: int = 5
    heads: int = 16
    mlp_ratio: float = 4.0
    rope_base: float = 100.0
    point_dim: int = 1024  # output width of the point / global-point / confidence decoders
    camera_dim: int = 512  # output width of the camera decoder (and the camera head's MLP width)
    confidence: bool = False
    # dense outputs from the decoder tokens: "pixel_shuffle" (official: one Linear per token, p x p pixels) or
    # "conv" (a convolutional upsampler: 2x upsampling + 3x3 convolution, log2(p) times; no patch-sized blocks)
    upsampler: Literal["pixel_shuffle", "conv"] = "pixel_shuffle"


@dataclass(frozen=True)
class OfficialInputConfig:
    """The official G²VLM input format of the geometric path (`recon_for_eval` in the official
    `modeling/g2vlm/g2vlm.py`), which released weights were trained and evaluated with. Set
    `ModelConfig.official_input` to use it; `g2vlm import-weights --official` does so (model/official_format.py
    describes the token layout, the positions and how it differs from the clean format).

    prompt_ids: `<|im_start|>` then the tokens of "Reconstruct the 3D scene." (the official prompt, its "BOS"
        first), run through the semantic expert as a causal prefix that every geometric token attends to.
    vision_start_id, vision_end_id: `<|vision_start|>` / `<|vision_end|>`, placed around each frame's DINO tokens
        and run through the semantic expert in the same bidirectional attention as the geometric tokens.
    dino_windows: "official" reproduces the official DINO varlen attention windows (computed from patch counts
        while every frame also holds CLS + registers, so they are shifted; model/dino_encoder.py), the
        compatibility switch the released weights need; "frame" attends within each frame, as our clean format.
    """

    prompt_ids: tuple[int, ...]
    vision_start_id: int
    vision_end_id: int
    dino_windows: Literal["official", "frame"] = "official"


@dataclass(frozen=True)
class ModelConfig:
    """The whole model. Trunk fields describe one expert (both experts have the same shape).

    `semantic=False` builds the geometric path only (no embeddings, LM head, vision tower or semantic
    expert); that is what geometry pretraining on the CPU demo needs.

    `official_input`: None (default) = the clean format of our own training: the geometric path sees only the
    DINO tokens. An `OfficialInputConfig` = the official format that imported official weights need (prompt
    prefix and frame delimiters through the semantic expert, sequential positions, official DINO windows).

    A config describes the architecture only: which parts train and activation checkpointing are training
    choices, the LightningModules' `freeze` and `gradient_checkpointing` (`G2VLM.freeze`,
    `G2VLM.set_gradient_checkpointing`); a freshly built G2VLM has every part trainable.
    """

    # trunk (one expert)
    width: int = 1536
    layers: int = 28
    heads: int = 12
    kv_heads: int = 2
    head_dim: int = 128
    mlp_size: int = 8960
    rms_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    mrope_section: tuple[int, int, int] = (16, 24, 24)  # frequency pairs for the t / h / w axes
    layer_scale_init: float = 0.01  # geometric expert's two residual branches
    # semantic side
    semantic: bool = True
    vocab_size: int = 151_936
    semantic_qk_norm: bool = True  # official G²VLM: on; stock Qwen2-VL: off (the parity test)
    vit: VisionTowerConfig | None = field(default_factory=VisionTowerConfig)
    # attention layout of the joint (packed) path; the geometry-only path is always global
    geometry_positions: Literal["shared", "sequential"] = "shared"
    geometry_attention: Literal["global", "frame"] = "global"
    vit_attention: Literal["bidirectional", "causal"] = "bidirectional"  # causal = stock Qwen2-VL
    attention_backend: Literal["sdpa", "flex"] = "sdpa"  # joint path: SDPA per sample (reference) | flex (GPU)
    # geometric side
    dino: DinoConfig = field(default_factory=DinoConfig)
    geometry_heads: HeadsConfig = field(default_factory=HeadsConfig)
    # input format of the geometric path: None = clean (ours), else the official format (imported weights)
    official_input: OfficialInputConfig | None = None

    def __post_init__(self) -> None:
        if self.heads % self.kv_heads:
            raise ValueError(f"ModelConfig: heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if 2 * sum(self.mrope_section) != self.head_dim:
            raise ValueError(
                f"ModelConfig: mrope_section {self.mrope_section} must sum to head_dim/2 = {self.head_dim // 2}"
            )
        if self.geometry_positions not in ("shared", "sequential"):
            raise ValueError(f"ModelConfig: geometry_positions must be shared|sequential, got {self.geometry_positions!r}")
        if self.geometry_attention not in ("global", "frame"):
            raise ValueError(f"ModelConfig: geometry_attention must be global|frame, got {self.geometry_attention!r}")
        if self.attention_backend not in ("sdpa", "flex"):
            raise ValueError(f"ModelConfig: attention_backend must be sdpa|flex, got {self.attention_backend!r}")
        if self.vit_attention not in ("bidirectional", "causal"):
            raise ValueError(f"ModelConfig: vit_attention must be bidirectional|causal, got {self.vit_attention!r}")
        if self.width % self.geometry_heads.heads or (self.width // self.geometry_heads.heads) % 4:
            raise ValueError("ModelConfig: width / geometry_heads.heads must be a multiple of 4 (RoPE2D)")
        if self.semantic and self.vit is not None and self.vit.width % self.vit.heads:
            raise ValueError("ModelConfig: vit.width must be a multiple of vit.heads")
        if self.official_input is not None:
            official = self.official_input
            if not self.semantic:
                raise ValueError("ModelConfig: official_input runs the prompt and delimiters through the semantic "
                                 "expert; it needs semantic=True")
            if self.geometry_positions != "sequential":
                raise ValueError("ModelConfig: official_input needs geometry_positions='sequential' (the official "
                                 "per-frame M-RoPE offsets)")
            ids = (*official.prompt_ids, official.vision_start_id, official.vision_end_id)
            if not official.prompt_ids or any(not 0 <= i < self.vocab_size for i in ids):
                raise ValueError(f"ModelConfig: official_input token ids {ids} must be a non-empty prompt and lie "
                                 f"in [0, vocab_size={self.vocab_size})")
            if official.dino_windows not in ("official", "frame"):
                raise ValueError(f"ModelConfig: official_input.dino_windows must be official|frame, got "
                                 f"{official.dino_windows!r}")

    def replace(self, **changes) -> ModelConfig:
        """A copy with some fields changed (`config.replace(layers=2)`)."""
        return replace(self, **changes)


def tiny() -> ModelConfig:
    """Unit tests: every part present (semantic side included), seconds on CPU."""
    return ModelConfig(
        width=64,
        layers=2,
        heads=4,
        kv_heads=2,
        head_dim=16,
        mlp_size=128,
        rope_theta=10_000.0,
        mrope_section=(2, 3, 3),
        vocab_size=128,
        vit=VisionTowerConfig(depth=2, width=32, heads=4, patch_size=4, temporal_patch_size=2, spatial_merge_size=2),
        dino=DinoConfig(width=32, depth=2, heads=4, patch_size=4, registers=4, img_size=32),
        geometry_heads=HeadsConfig(depth=1, heads=4, point_dim=32, camera_dim=16),
    )


def small() -> ModelConfig:
    """The CPU demo: geometric path only (no Qwen parts), 64×64 images, patch 8, ~4 views.

    Width 64, 3 trunk blocks with global attention across the views, a 1-block DINO-family encoder that is trained
    (a random frozen encoder would only be a fixed random feature map), heads without decoder blocks (the
    residual-MLP camera head). About 0.29M parameters. On a 2-core CPU small and fast wins
    (shared/reference/demo-feasibility.md: the 0.72M variant with 2-block DINO, 4 trunk blocks and 2-block heads
    ran about 1.6x slower per image). Three choices for a model trained from scratch on little data
    (benchmarks/RESULTS.md, "Geometry demo"):
    - a convolutional stem (three stride-2 3x3 convolutions) instead of one 8x8 patch convolution;
    - a convolutional upsampler for the dense outputs instead of the per-token pixel-shuffle Linear, so depth has
      no 8-pixel blocks;
    - RoPE base 20: with 8 frequency pairs per head and M-RoPE's sections (2, 3, 3), base 1e4 turns the column
      axis (the slowest pairs) by 0.02 rad across an 8-token image, i.e. the trunk's attention barely sees
      horizontal position; base 20 turns it by 0.5-1.1 rad."""
    return ModelConfig(
        width=64,
        layers=3,
        heads=4,
        kv_heads=2,
        head_dim=16,
        mlp_size=192,
        rope_theta=20.0,
        mrope_section=(2, 3, 3),
        semantic=False,
        vit=None,
        dino=DinoConfig(width=64, depth=1, heads=4, patch_size=8, registers=4, img_size=64, stem="conv"),
        geometry_heads=HeadsConfig(depth=0, heads=4, point_dim=64, camera_dim=64, upsampler="conv"),
    )


def g2vlm_2b() -> ModelConfig:
    """The official G²VLM-2B dimensions (reference §1.1 and the appendix)."""
    return ModelConfig()


PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "tiny": tiny,
    "small": small,
    "g2vlm-2b": g2vlm_2b,
}


def model_config(name: str, **changes) -> ModelConfig:
    """The preset `name` with optional field changes. Unknown names raise a ValueError listing the presets."""
    if name not in PRESETS:
        raise ValueError(f"model_config: unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    config = PRESETS[name]()
    return config.replace(**changes) if changes else config
