"""Offline weight loading: Qwen2-VL (semantic side), DINOv2 (geometric encoder), our own checkpoints.

Nothing is fetched from a hub; `trust_remote_code` is never used; tensors are read from safetensors
or with `torch.load(weights_only=True)`. Every load is strict: the keys a source should provide are
listed, and any missing key that is not on the loader's explicit allow-list, or any unexpected key,
raises a `WeightLoadingError` that names them.

Our model files (`save_model`, `g2vlm import-weights`) are one safetensors file with the model config (and, for
imported files, what else the tools need: input format, tokenizer folder, image sizes) in its metadata. They are
written and read one tensor at a time (`write_safetensors`, `TensorSource`), so a multi-billion-parameter
checkpoint is never held in memory twice.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
import struct
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open

from g2vlm.model.config import DinoConfig, HeadsConfig, ModelConfig, OfficialInputConfig, VisionTowerConfig
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
def safetensors_files(folder: Path) -> list[Path]:
    """The safetensors files of a Hugging Face model folder: the shards its model.safetensors.index.json names,
    or its one model.safetensors."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"safetensors_files: {index} is not a safetensors index (field weight_map: {error})") from None
        files = [folder / name for name in sorted(set(weight_map.values()))]
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise FileNotFoundError(f"safetensors_files: {index} names shards that do not exist: {absent}")
        return files
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    raise FileNotFoundError(f"safetensors_files: no model.safetensors[.index.json] in {folder}")


class TensorSource:
    """Lazy, read-only access to the tensors of a .safetensors file or a (sharded) Hugging Face folder.

    Names, shapes and dtypes come from the file headers; `get(name)` reads one tensor (memory-mapped), so a
    checkpoint larger than memory can be converted one tensor at a time. Use as a context manager."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir():
            files = safetensors_files(path)
        elif path.suffix == ".safetensors" and path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"TensorSource: {path} is neither a .safetensors file nor a folder with "
                                    f"model.safetensors[.index.json]")
        self.path = path
        self._handles = [safe_open(str(f), framework="pt") for f in files]
        self._where: dict[str, object] = {}
        for file, handle in zip(files, self._handles):
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                if name in self._where:
                    raise ValueError(f"TensorSource: tensor {name} appears in two shards of {path} (second: {file})")
                self._where[name] = handle

    def __enter__(self) -> TensorSource:
        return self

    def __exit__(self, *exc) -> None:
        self._handles.clear()
        self._where.clear()

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._where[name].get_slice(name).get_shape())

    def get(self, name: str) -> torch.Tensor:
        return self._where[name].get_tensor(name)

    def meta(self, name: str) -> torch.Tensor:
        """An empty tensor on the meta device with the stored shape and dtype (for planning without reading)."""
        dtype = _SAFETENSORS_DTYPES[self._where[name].get_slice(name).get_dtype()]
        return torch.empty(self.shape(name), dtype=dtype, device="meta")


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                       "BOOL": torch.bool}
_DTYPE_NAMES = {dtype: name for name, dtype in _SAFETENSORS_DTYPES.items()}


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file, a sharded HF folder (model.safetensors[.index.json]), or a
    torch file read with weights_only=True (a top-level "model" / "state_dict" entry is unwrapped)."""
    path = Path(path)
    if path.is_dir():
        tensors: dict[str, torch.Tensor] = {}
        for file in safetensors_files(path):
            tensors.update(read_tensors(file))
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
            raise ValueError(f"check_qwen2vl_config: {folder}/config.json field {name} = {theirs!r}, our config has {ours!r}")
    return bool(getattr(text, "tie_word_embeddings", False) or getattr(hf, "tie_word_embeddings", False))


def load_qwen2vl(model: G2VLM, folder: str | Path) -> list[str]:
    """Semantic expert, final norm, embedding, LM head and vision tower from a local HF Qwen2-VL folder.

    Allow-list of keys the source may lack: the semantic expert's QK-norm weights (stock Qwen2-VL has
    no QK-norm; they keep their initial value 1) and, when the source ties its LM head, `lm_head.weight`
    (copied from the embedding). Returns the allowed missing keys.
    """
    folder = Path(folder)
    if not model.config.semantic:
        raise ValueError("load_qwen2vl: the model was built without the semantic side (semantic=False)")
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


# Fields of model files written before they became training choices (the encoders' `frozen`,
# `gradient_checkpointing`; what trains and checkpointing are the LightningModules' `freeze` and
# `gradient_checkpointing`): `load_model_config` drops them.
RETIRED_FIELDS = (("gradient_checkpointing",), ("dino", "frozen"), ("vit", "frozen"))
_NESTED = {"dino": DinoConfig, "geometry_heads": HeadsConfig, "vit": VisionTowerConfig,
           "official_input": OfficialInputConfig}


def config_from_dict(data: dict) -> ModelConfig:
    """The ModelConfig of `config_to_dict`'s layout. A key that is no field raises a ValueError naming it."""
    data = dict(data)
    for name, cls in (("", ModelConfig), *_NESTED.items()):
        part = data if not name else data.get(name)
        if part is None:
            continue
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(key for key in part if key not in fields)
        if unknown:
            where = f"{name}." if name else ""
            retired = any((*([name] if name else []), key) in RETIRED_FIELDS for key in unknown)
            raise ValueError(f"config_from_dict: {', '.join(where + key for key in unknown)} is not a field of "
                             f"{cls.__name__} (fields: {', '.join(sorted(fields))})" + (
                                 "; which parts train is the LightningModule's `freeze`, activation checkpointing "
                                 "its `gradient_checkpointing`" if retired else ""))
    data["dino"] = DinoConfig(**data["dino"])
    data["geometry_heads"] = HeadsConfig(**data["geometry_heads"])
    data["vit"] = VisionTowerConfig(**data["vit"]) if data.get("vit") is not None else None
    data["mrope_section"] = tuple(data["mrope_section"])
    if data.get("official_input") is not None:
        official = dict(data["official_input"])
        official["prompt_ids"] = tuple(official["prompt_ids"])
        data["official_input"] = OfficialInputConfig(**official)
    return ModelConfig(**data)


def same_architecture(stored: ModelConfig, preset: ModelConfig) -> bool:
    """Whether a stored model (e.g. an imported official checkpoint) has the preset's architecture. The fields
    its weights dictate are not compared: the input format (official_input, geometry_positions) and whether the
    heads include the confidence head."""
    heads = dataclasses.replace(stored.geometry_heads, confidence=preset.geometry_heads.confidence)
    return stored.replace(official_input=preset.official_input, geometry_positions=preset.geometry_positions,
                          geometry_heads=heads) == preset


def write_safetensors(path: str | Path, tensors: list, metadata: dict[str, str], progress: str | None = None) -> None:
    """Write a .safetensors file tensor by tensor. `tensors`: (name, meta, produce) triples in file order, where
    `meta` is a tensor (any device, meta included) giving the shape and dtype and `produce()` returns the tensor;
    only one produced tensor is held at a time (safetensors' own save_file copies every tensor first).
    `progress`: a label for a progress bar over the tensors (None: no bar)."""
    header, offset = {"__metadata__": metadata}, 0
    for name, meta, _ in tensors:
        if meta.dtype not in _DTYPE_NAMES:
            raise ValueError(f"write_safetensors: {name} has unsupported dtype {meta.dtype}")
        size = meta.numel() * meta.element_size()
        header[name] = {"dtype": _DTYPE_NAMES[meta.dtype], "shape": list(meta.shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # data starts 8-byte aligned, as safetensors writes it
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    entries = tensors
    if progress:
        from tqdm import tqdm

        entries = tqdm(tensors, desc=progress, unit="tensor")
    with open(partial, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for name, meta, produce in entries:
            tensor = produce().detach().to("cpu").contiguous()
            if tensor.shape != meta.shape or tensor.dtype != meta.dtype:
                raise ValueError(f"write_safetensors: {name} produced {tuple(tensor.shape)} "
                                 f"{tensor.dtype}, planned {tuple(meta.shape)} {meta.dtype}")
            f.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
            del tensor
    partial.replace(path)


def save_model(model: G2VLM, path: str | Path) -> None:
    """Our checkpoint: one safetensors file with the model config (JSON) in its metadata (written tensor by
    tensor, see `write_safetensors`)."""
    state = model.state_dict()
    write_safetensors(path, [(name, value, lambda value=value: value) for name, value in state.items()],
                      {"g2vlm_config": json.dumps(config_to_dict(model.config))})


def model_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of one of our model files; ValueError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model_metadata: {path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as error:  # noqa: BLE001 - any failure to parse the header means "not a safetensors file"
        raise ValueError(f"model_metadata: {path} is not a readable safetensors file ({error})") from None
    if "g2vlm_config" not in metadata:
        raise ValueError(f"model_metadata: {path} has no g2vlm_config metadata (not written by save_model or "
                         f"g2vlm import-weights)")
    return metadata


def model_record(path: str | Path) -> dict:
    """What a model file records beside its weights, in the layout of a Lightning checkpoint's record:
    `datamodule_hyper_parameters` (image sizes, when the writer recorded them), `tokenizer` (a folder) and
    `input_format` ("clean" | "official")."""
    metadata = model_metadata(path)
    return {"datamodule_hyper_parameters": json.loads(metadata.get("g2vlm_datamodule", "{}")),
            "tokenizer": metadata.get("g2vlm_tokenizer"),
            "input_format": metadata.get("g2vlm_input_format", "clean")}


def load_model_config(path: str | Path) -> ModelConfig:
    """The model config stored in one of our model files (files written with retired fields included)."""
    data = json.loads(model_metadata(path)["g2vlm_config"])
    for *parents, name in RETIRED_FIELDS:
        part = data
        for parent in parents:
            part = part.get(parent) or {}
        part.pop(name, None)
    return config_from_dict(data)


def load_model(path: str | Path, allow_missing: tuple[str, ...] = ()) -> G2VLM:
    """Build the model from the config stored in `path` and load its weights strictly, one tensor at a time
    (`allow_missing`: fnmatch patterns of keys that may be absent)."""
    model = G2VLM(load_model_config(path))
    own = model.state_dict()
    with TensorSource(path) as source:
        keys = source.keys()
        unexpected = sorted(k for k in keys if k not in own)
        missing = [k for k in own if k not in source]
        not_allowed = [k for k in missing if not any(fnmatch.fnmatchcase(k, p) for p in allow_missing)]
        bad_shapes = [f"{k} {source.shape(k)} vs {tuple(own[k].shape)}" for k in keys
                      if k in own and source.shape(k) != tuple(own[k].shape)]
        if unexpected or not_allowed or bad_shapes:
            raise WeightLoadingError(str(path), not_allowed, unexpected,
                                     f"shape mismatches: {bad_shapes}" if bad_shapes else "")
        with torch.no_grad():
            for key in keys:
                own[key].copy_(source.get(key))
    return model
