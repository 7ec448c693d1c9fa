"""Import an official G²VLM checkpoint (InternRobotics/G2VLM layout) through an explicit key map.

The key names come from the official modules (reference g2vlm-official.md §1): the MoT trunk
`language_model.model.layers.{i}` with `*_moe_geo` twins of every semantic weight and LayerScale
`ls1` / `ls2` (geometric tokens only), final norms `norm` / `norm_moe_geo`, `language_model.lm_head`,
the Qwen ViT `vit_model.*`, the Hugging Face DINOv2-reg `dino_model.*`, the projector `dino2llm`, and the
π³ heads (`point_decoder`, `point_head`, `camera_decoder`, `camera_head`, `global_points_decoder`,
`global_point_head`, `conf_decoder`, `conf_head`), whose inner names our heads share.

Official weights assume the official positions: build the model with `geometry_positions="sequential"`
and semantic QK-norm on. Loading is strict: every model key must be provided (no allow-list by
default) and every source key must map, except non-persistent rotary buffers some exports contain.
This map was written from the official source code; it has not yet been run against the released
checkpoint files (none are available offline here).
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import torch

from g2vlm.model.dino_encoder import dino_state_dict_from_hf
from g2vlm.model.g2vlm import G2VLM
from g2vlm.model.weights import WeightLoadingError, load_strict, read_tensors

IGNORED_SOURCE_KEYS = ("*rotary_emb.inv_freq", "*rotary_pos_emb.inv_freq")

_LAYER_PARTS = {
    "input_layernorm": "input_norm",
    "post_attention_layernorm": "post_attention_norm",
    "self_attn.q_proj": "q_proj",
    "self_attn.k_proj": "k_proj",
    "self_attn.v_proj": "v_proj",
    "self_attn.o_proj": "o_proj",
    "self_attn.q_norm": "q_norm",
    "self_attn.k_norm": "k_norm",
    "mlp": "mlp",
}
_LAYER_KEY = re.compile(
    r"language_model\.model\.layers\.(\d+)\.(input_layernorm|post_attention_layernorm|self_attn\.[qkvo]_proj|"
    r"self_attn\.[qk]_norm|mlp)(_moe_geo)?\.(.+)"
)
_HEAD_PREFIXES = {
    "point_decoder.": "heads.point_decoder.",
    "point_head.": "heads.point_head.",
    "camera_decoder.": "heads.camera_decoder.",
    "camera_head.": "heads.camera_head.",
    "global_points_decoder.": "heads.global_point_decoder.",
    "global_point_head.": "heads.global_point_head.",
    "conf_decoder.": "heads.confidence_decoder.",
    "conf_head.": "heads.confidence_head.",
    "dino2llm.": "dino_projector.",
    "vit_model.": "vision_tower.model.",
}
_FIXED = {
    "language_model.model.embed_tokens.weight": "embed_tokens.weight",
    "language_model.lm_head.weight": "lm_head.weight",
    "language_model.model.norm.weight": "trunk.semantic_norm.weight",
    "language_model.model.norm_moe_geo.weight": "trunk.geometric_norm.weight",
}


def official_to_g2vlm_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official G²VLM keys -> ours. Returns (mapped, source keys that have no place in our model)."""
    out: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    dino: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in IGNORED_SOURCE_KEYS):
            continue
        if key in _FIXED:
            out[_FIXED[key]] = value
        elif match := _LAYER_KEY.fullmatch(key):
            layer, part, geo, rest = match.groups()
            expert = "geometric" if geo else "semantic"
            out[f"trunk.layers.{layer}.{expert}.{_LAYER_PARTS[part]}.{rest}"] = value
        elif match := re.fullmatch(r"language_model\.model\.layers\.(\d+)\.ls([12])\.gamma", key):
            name = "attention_scale" if match.group(2) == "1" else "mlp_scale"
            out[f"trunk.layers.{match.group(1)}.geometric.{name}"] = value
        elif key.startswith("dino_model."):
            dino[key.removeprefix("dino_model.")] = value
        elif prefix := next((p for p in _HEAD_PREFIXES if key.startswith(p)), None):
            out[_HEAD_PREFIXES[prefix] + key.removeprefix(prefix)] = value
        else:
            unmapped.append(key)
    if dino:
        out.update({"dino.vit." + k: v for k, v in dino_state_dict_from_hf(dino).items()})
    return out, unmapped


def load_official_g2vlm(model: G2VLM, path: str | Path, allow_missing: tuple[str, ...] = ()) -> list[str]:
    """Load an official checkpoint (a .safetensors file or a folder with model.safetensors[.index.json])
    into `model`, strictly. Returns the allowed missing keys."""
    if model.config.geometry_positions != "sequential":
        raise ValueError(
            "model/official_weights.py: official weights were trained with the official per-frame position "
            "offsets; build the model with geometry_positions='sequential'"
        )
    mapped, unmapped = official_to_g2vlm_keys(read_tensors(path))
    if unmapped:
        raise WeightLoadingError(f"{path} (official G²VLM)", [], sorted(unmapped), "these source keys have no place in G2VLM")
    return load_strict(model, mapped, list(model.state_dict()), list(allow_missing), f"{path} (official G²VLM)")
