"""The geometric image encoder: DINOv2-with-registers through timm, plus the projector into the trunk.

Frames run as one ordinary batched ViT (every frame of a call has one size), which avoids the official
varlen-window bug (reference §7.2 item 5). Only the patch tokens are returned (CLS and registers are
dropped), after the encoder's final LayerNorm, as the official `Dinov2WithRegistersModel` path does.

`forward_official_windows` is the compatibility switch for official weights: the official encoder
(`modeling/g2vlm/dinov2_model.py`) packs the N frames of a sample into one sequence of N·(1 + R + P) tokens
(CLS, R registers, P patches per frame) and runs flash-attn varlen attention with windows built from the patch
counts alone, cu_seqlens = [0, P, 2P, ..., N·P]. So window f covers tokens f·P ... (f+1)·P - 1 of the packed
sequence, which straddle frame boundaries, and the last (1 + R)·N tokens (patch tokens of the last frame) are
in no window: flash-attn leaves their attention output uninitialised (`empty_like`). We give those rows a zero
attention output (the projection then adds only its bias), which is what a zeroed output buffer gives; no
implementation can match the official uninitialised values bit for bit. The released weights were trained with
these windows, so imported official weights use them by default (`OfficialInputConfig.dino_windows`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed, trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from g2vlm.model.config import DinoConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DinoViT(VisionTransformer):
    """timm's VisionTransformer with the DINOv2-with-registers settings (LayerScale 1e-5, register
    tokens, no position embedding on prefix tokens), plus `reset_parameters` for its own tokens so the
    model can be built on the meta device and materialised (to_empty + reset_parameters)."""

    def reset_parameters(self) -> None:
        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.reg_token, std=1e-6)


class ConvStemPatchEmbed(PatchEmbed):
    """timm's PatchEmbed whose single patch-size convolution is replaced by a convolutional stem: log2(patch)
    stride-2 3x3 convolutions, GELU between them, widths doubling up to the embedding width (patch 8, width 64:
    3 -> 16 -> 32 -> 64). Same input and output as PatchEmbed; sees across patch borders, which a ViT trained
    from scratch on little data needs (Xiao et al. 2021, "Early convolutions help transformers see better")."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        patch, width, in_chans = self.patch_size[0], self.proj.out_channels, self.proj.in_channels
        stages = round(math.log2(patch))
        if self.patch_size[0] != self.patch_size[1] or 2**stages != patch or width % 2 ** (stages - 1):
            raise ValueError(f"ConvStemPatchEmbed: a conv stem needs a square power-of-two patch size and a width "
                             f"divisible by patch/2, got patch {self.patch_size} and width {width}")
        layers: list[nn.Module] = []
        for stage in range(stages):
            out = width // 2 ** (stages - 1 - stage)
            layers.append(nn.Conv2d(in_chans, out, kernel_size=3, stride=2, padding=1))
            if stage < stages - 1:
                layers.append(nn.GELU())
            in_chans = out
        self.proj = nn.Sequential(*layers)


def build_dino(config: DinoConfig) -> DinoViT:
    """A random-init DINOv2-reg ViT of the configured size (weights are loaded separately, never downloaded)."""
    if config.stem not in ("patch", "conv"):
        raise ValueError(f"build_dino: DinoConfig.stem must be patch|conv, got {config.stem!r}")
    return DinoViT(
        embed_layer=ConvStemPatchEmbed if config.stem == "conv" else PatchEmbed,
        img_size=config.img_size,
        patch_size=config.patch_size,
        embed_dim=config.width,
        depth=config.depth,
        num_heads=config.heads,
        init_values=1e-5,
        reg_tokens=config.registers,
        no_embed_class=True,
        dynamic_img_size=True,
        num_classes=0,
    )


class DinoProjector(nn.Linear):
    """Linear(DINO width -> trunk width), zero-initialised (weight and bias), as the official `dino2llm`."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


class DinoEncoder(nn.Module):
    """images (B, 3, H, W) in [0, 1] (H, W multiples of the patch size) -> patch tokens (B, h·w, C).

    ImageNet normalisation happens here. A frozen encoder runs under no_grad (no activations kept).
    """

    def __init__(self, config: DinoConfig) -> None:
        super().__init__()
        self.vit = build_dino(config)
        self.patch_size = config.patch_size
        self.frozen = False

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"DinoEncoder: image size {height}x{width} is not a multiple of the patch size {self.patch_size}"
            )
        # per channel with Python constants: no host-to-device copy (a blocking one would sync the step)
        return torch.stack([(images[:, c] - mean) / std for c, (mean, std) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD))],
                           dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self._normalise(images)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            tokens = self.vit.forward_features(x)
        return tokens[:, self.vit.num_prefix_tokens :]

    def forward_official_windows(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, N, 3, H, W) in [0, 1] -> patch tokens (B, N, h·w, C), each sample's N frames attending
        through the official varlen windows (module docstring). With N = 1 only the last 1 + R patch tokens
        differ from `forward`."""
        b, n = images.shape[:2]
        vit = self.vit
        x = self._normalise(images.flatten(0, 1))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))  # (B·N, 1 + R + P, C)
            per_frame = x.shape[1]
            patches = per_frame - vit.num_prefix_tokens
            x = x.reshape(b, n * per_frame, -1)  # each sample's frames packed one after the other
            for block in vit.blocks:
                attended = official_window_attention(block.attn, block.norm1(x), patches, n)
                x = x + block.drop_path1(block.ls1(attended))
                x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
            x = vit.norm(x).reshape(b, n, per_frame, -1)
        return x[:, :, vit.num_prefix_tokens :]


def official_window_attention(attn: nn.Module, x: torch.Tensor, window: int, windows: int) -> torch.Tensor:
    """A timm `Attention` over x (B, T, C) restricted to the official varlen windows: `windows` consecutive
    windows of `window` tokens from the start; rows after windows·window attend to nothing (zero output before
    the projection). -> (B, T, C)."""
    if getattr(attn, "gate", None) is not None:
        raise ValueError("official_window_attention: official windows expect a DINOv2 attention without a gate")
    b, length, _ = x.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    covered = window * windows
    q, k, v = attn.qkv(x).reshape(b, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, T, hd)
    q, k = attn.q_norm(q), attn.k_norm(k)

    def split(t: torch.Tensor) -> torch.Tensor:  # (B, H, T, hd) -> (B·windows, H, window, hd)
        t = t[:, :, :covered].reshape(b, heads, windows, window, head_dim)
        return t.transpose(1, 2).reshape(b * windows, heads, window, head_dim)

    inside = F.scaled_dot_product_attention(split(q), split(k), split(v))
    inside = inside.reshape(b, windows, heads, window, head_dim).transpose(1, 2).reshape(b, heads, covered, head_dim)
    out = torch.cat([inside, inside.new_zeros(b, heads, length - covered, head_dim)], dim=2)
    return attn.proj(attn.norm(out.transpose(1, 2).reshape(b, length, heads * head_dim)))


# A key plan: target key -> (source keys, combine). The target tensor is combine(*sources), or the one source
# itself when combine is None. Plans let a converter run tensor by tensor on a checkpoint read lazily.
KeyPlan = dict[str, tuple[tuple[str, ...], Callable[..., torch.Tensor] | None]]


def _fold_cls_position(cls_token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    return cls_token + position[:, :1]


def _patch_positions(position: torch.Tensor) -> torch.Tensor:
    return position[:, 1:]


def _concatenate(*tensors: torch.Tensor) -> torch.Tensor:
    return torch.cat(tensors)


def hf_dino_key_plan(keys: Iterable[str]) -> tuple[KeyPlan, list[str]]:
    """Hugging Face `Dinov2WithRegistersModel` keys (saved-file layout or transformers 5's in-memory layout,
    optionally under `dinov2_with_registers.` / `model.`) -> a plan for timm `VisionTransformer` keys, and the
    source keys the plan leaves unused (the mask token, which timm has no place for, and any unknown key).

    The HF position embedding includes the CLS slot; timm's DINOv2-reg models do not add position embeddings
    to prefix tokens (`no_embed_class`), so the CLS slot is folded into the CLS token, as timm's own converter
    does. Q, K and V are concatenated into timm's fused qkv.
    """
    keys = list(keys)
    full = {k.removeprefix("dinov2_with_registers.").removeprefix("model."): k for k in keys}

    def source(name: str) -> str:
        if name not in full:
            raise KeyError(f"hf_dino_key_plan: the DINOv2 checkpoint has no {name}")
        return full[name]

    plan: KeyPlan = {
        "cls_token": ((source("embeddings.cls_token"), source("embeddings.position_embeddings")), _fold_cls_position),
        "pos_embed": ((source("embeddings.position_embeddings"),), _patch_positions),
        "reg_token": ((source("embeddings.register_tokens"),), None),
    }
    renames = {"patch_embed.proj": "embeddings.patch_embeddings.projection", "norm": "layernorm"}
    layers = sorted({int(k.split(".")[2]) for k in full if k.startswith("encoder.layer.")})
    for i in layers:
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        # on-disk layout (attention.attention.query / attention.output.dense) or transformers 5's
        # in-memory layout (attention.q_proj / attention.o_proj)
        legacy = src + "attention.attention.query.weight" in full
        qkv_names = ("attention.query", "attention.key", "attention.value") if legacy else ("q_proj", "k_proj", "v_proj")
        for kind in ("weight", "bias"):
            plan[dst + f"attn.qkv.{kind}"] = (tuple(source(src + f"attention.{name}.{kind}") for name in qkv_names),
                                              _concatenate)
        renames.update({dst + "attn.proj": src + ("attention.output.dense" if legacy else "attention.o_proj")})
        renames.update({dst + name: src + name for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2")})
        plan[dst + "ls1.gamma"] = ((source(src + "layer_scale1.lambda1"),), None)
        plan[dst + "ls2.gamma"] = ((source(src + "layer_scale2.lambda1"),), None)
    for target, name in renames.items():
        for kind in ("weight", "bias"):
            plan[f"{target}.{kind}"] = ((source(f"{name}.{kind}"),), None)
    used = {key for sources, _ in plan.values() for key in sources}
    return plan, [key for key in keys if key not in used]


def apply_key_plan(plan: KeyPlan, get: Callable[[str], torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run a plan on tensors given by `get(source key)` -> {target key: tensor}."""
    out = {}
    for target, (sources, combine) in plan.items():
        tensors = [get(key) for key in sources]
        out[target] = tensors[0] if combine is None else combine(*tensors)
    return out


def dino_state_dict_from_hf(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face `Dinov2WithRegistersModel` state dict -> timm `VisionTransformer` state dict
    (`hf_dino_key_plan`); the mask token is dropped, any other unused key raises a KeyError."""
    plan, unused = hf_dino_key_plan(list(state_dict))
    unexpected = [key for key in unused if not key.endswith("embeddings.mask_token")]
    if unexpected:
        raise KeyError(f"dino_state_dict_from_hf: unconverted keys {sorted(unexpected)}")
    return apply_key_plan(plan, state_dict.__getitem__)
