"""Import an official G²VLM checkpoint (InternRobotics/G2VLM layout) through an explicit key map.

The official model (`modeling/g2vlm/g2vlm.py`, `G2VLM(language_model, vit_model, dino_model, config)`) saves
its `state_dict()` (the training code: `save_file(model.state_dict(), "ema.safetensors")`; the release:
`model.safetensors` beside `text_config.json`, `vit_config.json`, `dino_config.json` and the tokenizer). Its
names, per official module class, and ours:

    language_model.model.embed_tokens / language_model.lm_head      embed_tokens / lm_head
    language_model.model.layers.{i}. (Qwen2VLMoTDecoderLayer)        trunk.layers.{i}.
        input_layernorm[_moe_geo], post_attention_layernorm[_moe_geo]   {semantic|geometric}.input_norm / post_attention_norm
        self_attn.{q,k,v,o}_proj[_moe_geo], self_attn.{q,k}_norm[_moe_geo] (PackedAttentionMoT)
                                                                        {semantic|geometric}.{q,k,v,o}_proj / {q,k}_norm
        mlp[_moe_geo].{gate,up,down}_proj (Qwen2MLP)                     {semantic|geometric}.mlp.*
        ls1.gamma / ls2.gamma (LayerScale, geometric tokens only)       geometric.attention_scale / mlp_scale
    language_model.model.norm / norm_moe_geo                        trunk.semantic_norm / trunk.geometric_norm
    vit_model.* (Qwen2VisionTransformerPretrainedModel)             vision_tower.model.* (same inner names)
    dino_model.* (their Dinov2WithRegistersModel, HF names)         dino.vit.* (timm; model/dino_encoder.py plan:
                                                                    Q/K/V fused, the CLS position folded into CLS)
    dino2llm                                                        dino_projector
    point_decoder, camera_decoder (Pi3TransformerDecoder: blocks.{j} BlockRope norm1/attn.qkv/attn.proj/norm2/
        mlp.fc1/fc2, linear_out), global_points_decoder (Pi3ContextTransformerDecoder: CrossBlockRope adds
        norm_y, cross_attn.{q,k,v}_proj/proj, norm3), conf_decoder
                                                                    heads.point_decoder, heads.camera_decoder,
                                                                    heads.global_point_decoder, heads.confidence_decoder
    point_head, global_point_head, conf_head (Pi3LinearPts3d.proj)  heads.point_head, heads.global_point_head,
                                                                    heads.confidence_head
    camera_head (Pi3CameraHead: res_conv.{j}.res_conv{1,2,3}, more_mlps.{0,2}, fc_t, fc_rot)
                                                                    heads.camera_head

Strict: every key of our model must come from the checkpoint with its shape, and every checkpoint key must map,
except the named allow-list OFFICIAL_DROPPED. Confidence-head keys (`conf_decoder.*`, `conf_head.*`, saved when
the official `train_conf_pi3` phase ran) switch our `geometry_heads.confidence` on.

`import_official` converts one tensor at a time from the memory-mapped source straight into the output file,
so the checkpoint is never held in memory, let alone twice. The output is our safetensors checkpoint (the model
config, with the official input format, in its metadata): `g2vlm.model.weights.load_model` reads it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from g2vlm.model.config import (
    DinoConfig,
    HeadsConfig,
    ModelConfig,
    OfficialInputConfig,
    VisionTowerConfig,
    model_config,
)
from g2vlm.model.dino_encoder import KeyPlan, apply_key_plan, hf_dino_key_plan
from g2vlm.model.g2vlm import G2VLM
from g2vlm.model.weights import TensorSource, WeightLoadingError, config_to_dict, write_safetensors

# the named allow-list: checkpoint keys that have no place in our model, and why they may be dropped
OFFICIAL_DROPPED = {
    "dino_model.embeddings.mask_token": "DINOv2's mask token serves masked-image pretraining only; the official "
                                        "model never passes a mask (timm's ViT has no such parameter)",
    "Pi3Loss.*": "the official training loss (e.g. Pi3Loss.point_loss.segformer.*, the SegFormer the confidence "
                 "phase loads); not part of the model",
    "*.rotary_emb.inv_freq": "a rotary buffer (recomputed from rope_theta) that some exports contain",
    "*.rotary_pos_emb.inv_freq": "the ViT's rotary buffer (recomputed) that some exports contain",
}
CONFIDENCE_PREFIXES = ("conf_decoder.", "conf_head.")

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
_LAYER_SCALE_KEY = re.compile(r"language_model\.model\.layers\.(\d+)\.ls([12])\.gamma")
_PREFIXES = {
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


def dropped_by(key: str) -> str | None:
    """The OFFICIAL_DROPPED pattern that allows dropping `key`, or None."""
    return next((pattern for pattern in OFFICIAL_DROPPED if fnmatch.fnmatchcase(key, pattern)), None)


def official_key_plan(keys: list[str]) -> tuple[KeyPlan, dict[str, str], list[str]]:
    """Official checkpoint keys -> (a plan for our keys, {dropped key: its allow-list pattern}, unmapped keys)."""
    plan: KeyPlan = {}
    dropped: dict[str, str] = {}
    unmapped: list[str] = []
    dino_keys: list[str] = []
    for key in keys:
        if pattern := dropped_by(key):
            dropped[key] = pattern
        elif key in _FIXED:
            plan[_FIXED[key]] = ((key,), None)
        elif match := _LAYER_KEY.fullmatch(key):
            layer, part, geo, rest = match.groups()
            expert = "geometric" if geo else "semantic"
            plan[f"trunk.layers.{layer}.{expert}.{_LAYER_PARTS[part]}.{rest}"] = ((key,), None)
        elif match := _LAYER_SCALE_KEY.fullmatch(key):
            name = "attention_scale" if match.group(2) == "1" else "mlp_scale"
            plan[f"trunk.layers.{match.group(1)}.geometric.{name}"] = ((key,), None)
        elif key.startswith("dino_model."):
            dino_keys.append(key)
        elif prefix := next((p for p in _PREFIXES if key.startswith(p)), None):
            plan[_PREFIXES[prefix] + key.removeprefix(prefix)] = ((key,), None)
        else:
            unmapped.append(key)
    if dino_keys:
        dino_plan, unused = hf_dino_key_plan([k.removeprefix("dino_model.") for k in dino_keys])
        plan.update({"dino.vit." + target: (tuple("dino_model." + s for s in sources), combine)
                     for target, (sources, combine) in dino_plan.items()})
        unmapped += ["dino_model." + k for k in unused]  # the mask token was dropped by name above
    return plan, dropped, unmapped


def has_confidence_head(keys: list[str]) -> bool:
    """Whether an official checkpoint carries the confidence decoder and head (the `train_conf_pi3` phase)."""
    return any(key.startswith(CONFIDENCE_PREFIXES) for key in keys)


# ------------------------------------------------------------------------------------------ configuration
# defaults of the official config classes, used for fields a config.json leaves out (transformers writes only
# the fields that differ from the class defaults)
_TEXT_DEFAULTS = {"vocab_size": 152064, "hidden_size": 8192, "intermediate_size": 29568, "num_hidden_layers": 80,
                  "num_attention_heads": 64, "num_key_value_heads": 8, "rms_norm_eps": 1e-5, "rope_theta": 1e6,
                  "hidden_act": "silu"}
_VIT_DEFAULTS = {"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "mlp_ratio": 4, "num_heads": 16,
                 "spatial_merge_size": 2, "temporal_patch_size": 2, "hidden_act": "quick_gelu"}
_DINO_DEFAULTS = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "mlp_ratio": 4,
                  "hidden_act": "gelu", "layer_norm_eps": 1e-6, "image_size": 224, "patch_size": 16,
                  "num_register_tokens": 4, "use_swiglu_ffn": False, "qkv_bias": True}
OFFICIAL_CONFIG_FILES = ("text_config.json", "vit_config.json", "dino_config.json")
# fixed by the official code whatever its config files say
OFFICIAL_MROPE_SECTION = (16, 24, 24)  # PackedAttentionMoT sets rope_scaling["mrope_section"] = [16, 24, 24]
OFFICIAL_HEADS = HeadsConfig(depth=5, heads=16, mlp_ratio=4.0, rope_base=100.0, point_dim=1024, camera_dim=512)
# image sizes of the official chat (`chat_with_recon`) in patches: DINO frames resized to width 518 = 37 patches of
# 14 (a 4:3 photo: 28 × 37 patches, 392 × 518 pixels), Qwen-ViT images 768² snapped to 756² = 27 × 27 merged
# tokens of 28; the import records them in pixels of the imported model (`g2vlm ask` builds its template with them)
OFFICIAL_CHAT_GEOMETRY_PATCHES = (28, 37)
OFFICIAL_CHAT_VIT_TOKENS = (27, 27)


def _read_config(path: Path, defaults: dict) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"import_official: cannot read {path} ({error})") from None
    return {**defaults, **{k: v for k, v in data.items() if k in defaults}}


def _require(path: Path, field: str, value, allowed) -> None:
    if value != allowed:
        raise ValueError(f"import_official: {path} field {field} = {value!r}; our model supports only "
                         f"{allowed!r} (the official G²VLM value)")


def official_config_folder(source: Path) -> Path | None:
    """The folder holding the official config files next to `source` (a folder or a file in it), or None."""
    folder = source if source.is_dir() else source.parent
    return folder if all((folder / name).is_file() for name in OFFICIAL_CONFIG_FILES) else None


def official_model_config(folder: Path) -> ModelConfig:
    """Our ModelConfig from an official folder's text_config.json, vit_config.json and dino_config.json (as
    `g2vlm_utils.load_model_and_tokenizer` reads them: QK-norm on, untied LM head, ViT patch 14), with the heads
    the official G2VLM class builds. The input format is set by the caller."""
    text = _read_config(folder / "text_config.json", _TEXT_DEFAULTS)
    vit = _read_config(folder / "vit_config.json", _VIT_DEFAULTS)
    dino = _read_config(folder / "dino_config.json", _DINO_DEFAULTS)
    _require(folder / "text_config.json", "hidden_act", text["hidden_act"], "silu")
    _require(folder / "vit_config.json", "hidden_act", vit["hidden_act"], "quick_gelu")
    _require(folder / "vit_config.json", "hidden_size", vit["hidden_size"], text["hidden_size"])
    for field, allowed in (("mlp_ratio", 4), ("hidden_act", "gelu"), ("layer_norm_eps", 1e-6), ("use_swiglu_ffn", False),
                           ("qkv_bias", True)):
        _require(folder / "dino_config.json", field, dino[field], allowed)
    width, heads = text["hidden_size"], text["num_attention_heads"]
    return ModelConfig(
        width=width, layers=text["num_hidden_layers"], heads=heads, kv_heads=text["num_key_value_heads"],
        head_dim=width // heads, mlp_size=text["intermediate_size"], rms_eps=float(text["rms_norm_eps"]),
        rope_theta=float(text["rope_theta"]), mrope_section=OFFICIAL_MROPE_SECTION, vocab_size=text["vocab_size"],
        semantic_qk_norm=True, geometry_positions="sequential",
        vit=VisionTowerConfig(depth=vit["depth"], width=vit["embed_dim"], heads=vit["num_heads"],
                              mlp_ratio=vit["mlp_ratio"], patch_size=14, temporal_patch_size=vit["temporal_patch_size"],
                              spatial_merge_size=vit["spatial_merge_size"]),
        dino=DinoConfig(width=dino["hidden_size"], depth=dino["num_hidden_layers"], heads=dino["num_attention_heads"],
                        patch_size=dino["patch_size"], registers=dino["num_register_tokens"],
                        img_size=dino["image_size"]),
        geometry_heads=OFFICIAL_HEADS,
    )


def official_chat_sizes(config: ModelConfig) -> dict[str, list[int]]:
    """The official chat's image sizes (H, W) in pixels of `config`'s patch sizes: geometry_size, vit_size."""
    vit_unit = config.vit.patch_size * config.vit.spatial_merge_size if config.vit is not None else 1
    return {"geometry_size": [n * config.dino.patch_size for n in OFFICIAL_CHAT_GEOMETRY_PATCHES],
            "vit_size": [n * vit_unit for n in OFFICIAL_CHAT_VIT_TOKENS]}


# ------------------------------------------------------------------------------------------ import
@dataclass
class ImportSummary:
    config: ModelConfig
    tensors: int  # tensors written
    source_keys: int  # tensors in the official checkpoint
    dropped: dict[str, str]  # dropped key -> allow-list pattern
    config_source: str  # where the architecture came from


def plan_official_import(source: TensorSource, config: ModelConfig) -> tuple[KeyPlan, dict[str, str], dict[str, torch.Tensor]]:
    """Check an official checkpoint against a model of `config` without reading any tensor data (shapes come
    from the headers). -> (plan, dropped keys, {our key: meta tensor of what the plan produces}).
    Raises WeightLoadingError naming missing, unexpected and unmapped keys and shape mismatches."""
    keys = source.keys()
    plan, dropped, unmapped = official_key_plan(keys)
    label = f"{source.path} (official G²VLM)"
    if unmapped:
        raise WeightLoadingError(label, [], sorted(unmapped), "these checkpoint keys have no place in G2VLM and are not on "
                                 f"the allow-list {sorted(OFFICIAL_DROPPED)}")
    with torch.device("meta"):
        own = G2VLM(config).state_dict()
    missing = sorted(k for k in own if k not in plan)
    unexpected = sorted(k for k in plan if k not in own)
    if missing or unexpected:
        raise WeightLoadingError(label, missing, [f"{k} (from {', '.join(plan[k][0])})" for k in unexpected])
    planned = apply_key_plan({k: plan[k] for k in own}, source.meta)
    bad = [f"{k} {tuple(planned[k].shape)} vs ours {tuple(own[k].shape)}" for k in own if planned[k].shape != own[k].shape]
    if bad:
        raise WeightLoadingError(label, [], [], f"shape mismatches: {bad}")
    return {k: plan[k] for k in own}, dropped, planned


def import_official(source_path: str | Path, out: str | Path, official_input: OfficialInputConfig,
                    preset: str | None = None, tokenizer: str | Path | None = None, progress: bool = True) -> ImportSummary:
    """Convert an official checkpoint (a .safetensors file, or a folder with model.safetensors[.index.json])
    into our checkpoint `out`, strictly, tensor by tensor.

    Architecture: from the official config files next to the checkpoint when they are there (then `preset` must
    be None), else from `preset` (g2vlm-2b by default); the official input format `official_input` and, when the
    checkpoint has them, the confidence heads are switched on. The file also records `tokenizer` (the folder
    the ids came from, for `g2vlm ask`) and the official chat image sizes (`official_chat_sizes`)."""
    source_path = Path(source_path)
    folder = official_config_folder(source_path)
    if folder is not None and preset is not None:
        raise ValueError(f"import_official: {folder} has the official config files "
                         f"{', '.join(OFFICIAL_CONFIG_FILES)}; they define the architecture, do not also give a preset")
    if folder is not None:
        config, config_source = official_model_config(folder), f"{folder}/{{{','.join(OFFICIAL_CONFIG_FILES)}}}"
    else:
        preset = preset or "g2vlm-2b"
        config, config_source = model_config(preset), f"preset {preset}"
    with TensorSource(source_path) as source:
        keys = source.keys()
        heads = dataclasses.replace(config.geometry_heads, confidence=has_confidence_head(keys))
        config = config.replace(geometry_positions="sequential", semantic_qk_norm=True, geometry_heads=heads,
                                official_input=official_input)
        plan, dropped, planned = plan_official_import(source, config)
        items = [(key, planned[key], lambda key=key: apply_key_plan({key: plan[key]}, source.get)[key]) for key in plan]
        metadata = {"g2vlm_config": json.dumps(config_to_dict(config)), "g2vlm_imported_from": str(source_path),
                    "g2vlm_input_format": "official",
                    "g2vlm_datamodule": json.dumps(official_chat_sizes(config))}
        if tokenizer is not None:
            metadata["g2vlm_tokenizer"] = str(Path(tokenizer).resolve())
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_safetensors(out, items, metadata, progress="import" if progress else None)
    return ImportSummary(config, len(plan), len(keys), dropped, config_source)
