"""The geometric image encoder: DINOv2-with-registers through timm, plus the projector into the trunk.

Frames run as one ordinary batched ViT (every frame of a call has one size), which avoids the official
varlen-window bug (reference §7.2 item 5). Only the patch tokens are returned (CLS and registers are
dropped), after the encoder's final LayerNorm, as the official `Dinov2WithRegistersModel` path does.
"""

from __future__ import annotations

import math

import torch
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
            raise ValueError(f"model/dino_encoder.py: a conv stem needs a square power-of-two patch size and a width "
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
        raise ValueError(f"model/dino_encoder.py: DinoConfig.stem must be patch|conv, got {config.stem!r}")
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

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"model/dino_encoder.py: image size {height}x{width} is not a multiple of the patch size {self.patch_size}"
            )
        # per channel with Python constants: no host-to-device copy (a blocking one would sync the step)
        x = torch.stack([(images[:, c] - mean) / std for c, (mean, std) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD))],
                        dim=1)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            tokens = self.vit.forward_features(x)
        return tokens[:, self.vit.num_prefix_tokens :]


def dino_state_dict_from_hf(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face `Dinov2WithRegistersModel` keys (saved-file layout or transformers 5's in-memory
    layout) -> timm `VisionTransformer` keys.

    The HF position embedding includes the CLS slot; timm's DINOv2-reg models do not add position
    embeddings to prefix tokens (`no_embed_class`), so the CLS slot is folded into the CLS token, as
    timm's own converter does. The mask token has no counterpart and is dropped.
    """
    sd = {k.removeprefix("dinov2_with_registers.").removeprefix("model."): v for k, v in state_dict.items()}
    out: dict[str, torch.Tensor] = {}
    position = sd.pop("embeddings.position_embeddings")
    out["cls_token"] = sd.pop("embeddings.cls_token") + position[:, :1]
    out["pos_embed"] = position[:, 1:]
    out["reg_token"] = sd.pop("embeddings.register_tokens")
    sd.pop("embeddings.mask_token", None)
    out["patch_embed.proj.weight"] = sd.pop("embeddings.patch_embeddings.projection.weight")
    out["patch_embed.proj.bias"] = sd.pop("embeddings.patch_embeddings.projection.bias")
    out["norm.weight"] = sd.pop("layernorm.weight")
    out["norm.bias"] = sd.pop("layernorm.bias")
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layer.")})
    for i in layers:
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        # on-disk layout (attention.attention.query / attention.output.dense) or transformers 5's
        # in-memory layout (attention.q_proj / attention.o_proj)
        legacy = src + "attention.attention.query.weight" in sd
        qkv_names = ("attention.query", "attention.key", "attention.value") if legacy else ("q_proj", "k_proj", "v_proj")
        out_name = "output.dense" if legacy else "o_proj"
        for kind in ("weight", "bias"):
            out[dst + f"attn.qkv.{kind}"] = torch.cat([sd.pop(src + f"attention.{name}.{kind}") for name in qkv_names])
            out[dst + f"attn.proj.{kind}"] = sd.pop(src + f"attention.{out_name}.{kind}")
            out[dst + f"norm1.{kind}"] = sd.pop(src + f"norm1.{kind}")
            out[dst + f"norm2.{kind}"] = sd.pop(src + f"norm2.{kind}")
            out[dst + f"mlp.fc1.{kind}"] = sd.pop(src + f"mlp.fc1.{kind}")
            out[dst + f"mlp.fc2.{kind}"] = sd.pop(src + f"mlp.fc2.{kind}")
        out[dst + "ls1.gamma"] = sd.pop(src + "layer_scale1.lambda1")
        out[dst + "ls2.gamma"] = sd.pop(src + "layer_scale2.lambda1")
    if sd:
        raise KeyError(f"model/dino_encoder.py dino_state_dict_from_hf: unconverted keys {sorted(sd)}")
    return out
