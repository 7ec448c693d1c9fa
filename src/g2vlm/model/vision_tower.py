"""The semantic image encoder: the Qwen2-VL vision tower from transformers (frozen in
both official stages: the LightningModules' `freeze`).

`patchify` turns an image in [0, 1] into the flat patch layout of Qwen2-VL's image processor
(CLIP mean/std, the frame repeated `temporal_patch_size` times, patches grouped by 2×2 merge windows);
the tower then returns one token per merge window, already in the trunk width.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import (
    Qwen2VisionTransformerPretrainedModel,
    Qwen2VLVisionRotaryEmbedding,
)

from g2vlm.model.config import VisionTowerConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def hf_vision_config(config: VisionTowerConfig, out_width: int) -> Qwen2VLVisionConfig:
    """Our VisionTowerConfig -> transformers' Qwen2VLVisionConfig (merger output = trunk width)."""
    return Qwen2VLVisionConfig(
        depth=config.depth,
        embed_dim=config.width,
        hidden_size=out_width,
        num_heads=config.heads,
        mlp_ratio=config.mlp_ratio,
        in_channels=3,
        patch_size=config.patch_size,
        spatial_merge_size=config.spatial_merge_size,
        temporal_patch_size=config.temporal_patch_size,
    )


def patchify(image: torch.Tensor, config: VisionTowerConfig) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """image (3, H, W) in [0, 1], H and W multiples of patch·merge -> (patches (h·w, 3·tp·p²), grid (1, h, w))."""
    p, m, tp = config.patch_size, config.spatial_merge_size, config.temporal_patch_size
    channels, height, width = image.shape
    if height % (p * m) or width % (p * m):
        raise ValueError(f"patchify: image size {height}x{width} is not a multiple of {p * m}")
    mean = torch.tensor(CLIP_MEAN, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=image.dtype, device=image.device).view(3, 1, 1)
    x = (image - mean) / std
    gh, gw = height // p, width // p
    x = x.reshape(channels, gh // m, m, p, gw // m, m, p).permute(1, 4, 2, 5, 0, 3, 6)
    # (gh/m, gw/m, m, m, C, p, p) -> the frame repeated over the temporal patch: (..., C, tp, p, p)
    x = x.unsqueeze(5).expand(-1, -1, -1, -1, -1, tp, -1, -1)
    return x.reshape(gh * gw, channels * tp * p * p), (1, gh, gw)


class VisionRotaryEmbedding(Qwen2VLVisionRotaryEmbedding):
    """transformers' vision rotary embedding plus `reset_parameters`, which recomputes its (non-persistent)
    frequency buffers after meta-device materialisation (to_empty leaves them uninitialised)."""

    def reset_parameters(self) -> None:
        inv_freq, _ = self.compute_axial_rope_parameters(self.config)
        with torch.no_grad():
            self.inv_freq.copy_(inv_freq)
            self.original_inv_freq.copy_(inv_freq)


class VisionTower(nn.Module):
    """Qwen2-VL vision tower. forward(patches (sum of patches, 3·tp·p²), grid_thw (n, 3)) -> (sum of merged tokens, D)."""

    def __init__(self, config: VisionTowerConfig, out_width: int) -> None:
        super().__init__()
        self.config = config
        hf_config = hf_vision_config(config, out_width)
        self.model = Qwen2VisionTransformerPretrainedModel(hf_config)
        self.model.rotary_pos_emb = VisionRotaryEmbedding(hf_config)
        self.frozen = False

    def forward(self, patches: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.model(patches, grid_thw=grid_thw).pooler_output
