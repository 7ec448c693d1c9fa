"""Offline weight loading: Qwen2-VL (semantic side), DINOv2 (geometric encoder), our own checkpoints.

Nothing is fetched from a hub; `trust_remote_code` is never used; tensors are read from safetensors
or with `torch.load(weights_only=True)`. Every load is strict: the keys a source should provide are
listed, and any missing key that is not on the loader's explicit allow-list, or any unexpected key,
raises a `WeightLoadingError` that names them.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from g2vlm.model.config import DinoConfig, HeadsConfig, ModelConfig, VisionTowerConfig
from g2vlm.model.dino_encoder import dino_state_dict_from_hf
from g2vlm.model.g2vlm import G2VLM


class WeightLoadingError(RuntimeError):
    """A checkpoint does not fit the model: lists missing and unexpected keys."""

    def __init__(self, source: str, missing: list[str], unexpected: list[str], note: str = "") -> None:
        self.missing, self.unexpected = missing, unexpected

        def show(keys):
            return ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")

        message = f"{source}: {len(missing)} missing key(s) [{show(missing)}]; {len(unexpected)} unexpected key(s) [{show(unexpected)}]"
        super().__init__(message + (f". {note}" if note else ""))


# ------------------------------------------------------------------------------------------ reading
def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file, a sharded HF folder (model.safetensors[.index.json]), or a
    torch file read with weights_only=True (a top-level "model" / "state_dict" entry is unwrapped)."""
    path = Path(path)
    if path.is_dir():
        index = path / "model.safetensors.index.json"
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        elif (path / "model.safetensors").is_file():
            files = ["model.safetensors"]
        else:
            raise FileNotFoundError(f"model/weights.py: no model.safetensors[.index.json] in {path}")
        tensors: dict[str, torch.Tensor] = {}
        for name in files:
            tensors.update(read_tensors(path / name))
        return tensors
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_strict(
    module: torch.nn.Module,
    state: dict[str, torch.Tensor],
    expected: list[str],
    allow_missing: list[str],
    source: str,
) -> list[str]:
    """Copy `state` into `module` (keys relative to module). `expected`: the keys this source must cover;
    `allow_missing`: fnmatch patterns that may be absent. Returns the missing keys that were allowed."""
    own = module.state_dict()
    unexpected = sorted(k for k in state if k not in own)
    missing = sorted(k for k in expected if k not in state)
    not_allowed = [k for k in missing if not any(fnmatch.fnmatchcase(k, p) for p in allow_missing)]
    bad_shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if k in own and v.shape != own[k].shape]
    if unexpected or not_allowed or bad_shapes:
        raise WeightLoadingError(source, not_allowed, unexpected, f"shape mismatches: {bad_shapes}" if bad_shapes else "")
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value.to(own[key].dtype))
    return [k for k in missing if k not in not_allowed]


# ------------------------------------------------------------------------------------------ Qwen2-VL
_QWEN_LAYER = {
    "input_layernorm.weight": "input_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "self_attn.q_proj.weight": "q_proj.weight",
    "self_attn.q_proj.bias": "q_proj.bias",
    "self_attn.k_proj.weight": "k_proj.weight",
    "self_attn.k_proj.bias": "k_proj.bias",
    "self_attn.v_proj.weight": "v_proj.weight",
    "self_attn.v_proj.bias": "v_proj.bias",
    "self_attn.o_proj.weight": "o_proj.weight",
    "mlp.gate_proj.weight": "mlp.gate_proj.weight",
    "mlp.up_proj.weight": "mlp.up_proj.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
}


def qwen2vl_to_g2vlm_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Qwen2-VL keys (hub layout `model.layers.*` / `visual.*`, or transformers 5's
    `model.language_model.*` / `model.visual.*`) -> our keys. Returns (mapped, unmapped source keys)."""
    out, unmapped = {}, []
    for key, value in state.items():
        if key.startswith(("visual.", "model.visual.")):
            out["vision_tower.model." + key.split("visual.", 1)[1]] = value
            continue
        if key == "lm_head.weight":
            out["lm_head.weight"] = value
            continue
        text_key = key.removeprefix("model.").removeprefix("language_model.")
        if text_key == "embed_tokens.weight":
            out["embed_tokens.weight"] = value
        elif text_key == "norm.weight":
            out["trunk.semantic_norm.weight"] = value
        elif (match := re.fullmatch(r"layers\.(\d+)\.(.+)", text_key)) and match.group(2) in _QWEN_LAYER:
            out[f"trunk.layers.{match.group(1)}.semantic.{_QWEN_LAYER[match.group(2)]}"] = value
        else:
            unmapped.append(key)
    return out, unmapped


def check_qwen2vl_config(config: ModelConfig, folder: Path) -> bool:
    """Compare a local Qwen2-VL folder's config.json with ours; raise naming the first mismatch.
    Returns whether the source ties its LM head to the embedding."""
    from transformers import AutoConfig  # local folder only; no remote code

    hf = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    text = hf.text_config
    rope = text.rope_parameters or {}
    checks = {
        "hidden_size": (text.hidden_size, config.width),
        "num_hidden_layers": (text.num_hidden_layers, config.layers),
        "num_attention_heads": (text.num_attention_heads, config.heads),
        "num_key_value_heads": (text.num_key_value_heads, config.kv_heads),
        "intermediate_size": (text.intermediate_size, config.mlp_size),
        "vocab_size": (text.vocab_size, config.vocab_size),
        "rope_theta": (float(rope.get("rope_theta")), float(config.rope_theta)),
        "mrope_section": (tuple(rope.get("mrope_section", ())), tuple(config.mrope_section)),
        "rms_norm_eps": (float(text.rms_norm_eps), float(config.rms_eps)),
    }
    if config.vit is not None:
        vision = hf.vision_config
        checks.update(
            {
                "vision_config.depth": (vision.depth, config.vit.depth),
                "vision_config.embed_dim": (vision.embed_dim, config.vit.width),
                "vision_config.num_heads": (vision.num_heads, config.vit.heads),
                "vision_config.patch_size": (vision.patch_size, config.vit.patch_size),
                "vision_config.hidden_size": (vision.hidden_size, config.width),
            }
        )
    for name, (theirs, ours) in checks.items():
        if theirs != ours:
            raise ValueError(f"model/weights.py: {folder}/config.json field {name} = {theirs!r}, our config has {ours!r}")
    return bool(getattr(text, "tie_word_embeddings", False) or getattr(hf, "tie_word_embeddings", False))


def load_qwen2vl(model: G2VLM, folder: str | Path) -> list[str]:
    """Semantic expert, final norm, embedding, LM head and vision tower from a local HF Qwen2-VL folder.

    Allow-list of keys the source may lack: the semantic expert's QK-norm weights (stock Qwen2-VL has
    no QK-norm; they keep their initial value 1) and, when the source ties its LM head, `lm_head.weight`
    (copied from the embedding). Returns the allowed missing keys.
    """
    folder = Path(folder)
    if not model.config.semantic:
        raise ValueError("model/weights.py load_qwen2vl: the model was built without the semantic side (semantic=False)")
    tied = check_qwen2vl_config(model.config, folder)
    mapped, unmapped = qwen2vl_to_g2vlm_keys(read_tensors(folder))
    if tied and "lm_head.weight" not in mapped:
        mapped["lm_head.weight"] = mapped["embed_tokens.weight"]
    own = model.state_dict()
    prefixes = ("trunk.semantic_norm.", "embed_tokens.", "lm_head.", "vision_tower.")
    expected = [k for k in own if k.startswith(prefixes) or re.match(r"trunk\.layers\.\d+\.semantic\.", k)]
    allow = ["trunk.layers.*.semantic.q_norm.weight", "trunk.layers.*.semantic.k_norm.weight"]
    if unmapped:
        raise WeightLoadingError(f"{folder} (Qwen2-VL)", [], sorted(unmapped), "these source keys have no place in G2VLM")
    return load_strict(model, mapped, expected, allow, f"{folder} (Qwen2-VL)")


# ------------------------------------------------------------------------------------------ DINOv2
def load_dino(model: G2VLM, source: str | Path) -> list[str]:
    """DINOv2-with-registers weights into the geometric encoder, from a Hugging Face
    `Dinov2WithRegistersModel` folder (or its safetensors file) or a timm / original-DINOv2 checkpoint.
    Nothing may be missing; the HF/original `mask_token` is dropped by the layout conversion."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = read_tensors(source)
    if any(k.startswith(("embeddings.", "encoder.layer.")) or ".embeddings." in k for k in state):
        state = dino_state_dict_from_hf(state)
    vit = model.dino.vit
    # timm's own filter: original DINOv2 layout -> timm, and position-embedding resampling to our grid
    state = checkpoint_filter_fn(state, vit)
    return load_strict(vit, state, list(vit.state_dict()), [], f"{source} (DINOv2)")


# ------------------------------------------------------------------------------------------ ours
def config_to_dict(config: ModelConfig) -> dict:
    return asdict(config)


def config_from_dict(data: dict) -> ModelConfig:
    data = dict(data)
    data["dino"] = DinoConfig(**data["dino"])
    data["geometry_heads"] = HeadsConfig(**data["geometry_heads"])
    data["vit"] = VisionTowerConfig(**data["vit"]) if data.get("vit") is not None else None
    data["mrope_section"] = tuple(data["mrope_section"])
    return ModelConfig(**data)


def save_model(model: G2VLM, path: str | Path) -> None:
    """Our checkpoint: one safetensors file with the model config (JSON) in its metadata."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"g2vlm_config": json.dumps(config_to_dict(model.config))})


def load_model(path: str | Path, allow_missing: tuple[str, ...] = ()) -> G2VLM:
    """Build the model from the config stored in `path` and load its weights strictly
    (`allow_missing`: fnmatch patterns of keys that may be absent)."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if "g2vlm_config" not in metadata:
        raise ValueError(f"model/weights.py: {path} has no g2vlm_config metadata (not written by save_model)")
    model = G2VLM(config_from_dict(json.loads(metadata["g2vlm_config"])))
    load_strict(model, read_tensors(path), list(model.state_dict()), list(allow_missing), str(path))
    return model
