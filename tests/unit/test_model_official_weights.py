"""Official G²VLM checkpoint layout -> our model: every official name lands where it should, strictly."""

import dataclasses

import pytest
import torch
from safetensors.torch import save_file
from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from g2vlm.model.config import model_config
from g2vlm.model.g2vlm import G2VLM
from g2vlm.model.official_weights import load_official_g2vlm
from g2vlm.model.weights import WeightLoadingError


def _official_state(model: G2VLM) -> dict[str, torch.Tensor]:
    """An official-layout state dict for `model`, named after the official modules (random values)."""
    g = torch.Generator().manual_seed(0)
    c = model.config
    ours = model.state_dict()
    state = {}

    def put(official, our_key):
        state[official] = torch.randn(ours[our_key].shape, generator=g)

    put("language_model.model.embed_tokens.weight", "embed_tokens.weight")
    put("language_model.lm_head.weight", "lm_head.weight")
    put("language_model.model.norm.weight", "trunk.semantic_norm.weight")
    put("language_model.model.norm_moe_geo.weight", "trunk.geometric_norm.weight")
    for i in range(c.layers):
        for suffix, expert in (("", "semantic"), ("_moe_geo", "geometric")):
            base, mine = f"language_model.model.layers.{i}.", f"trunk.layers.{i}.{expert}."
            put(f"{base}input_layernorm{suffix}.weight", mine + "input_norm.weight")
            put(f"{base}post_attention_layernorm{suffix}.weight", mine + "post_attention_norm.weight")
            for proj in "qkv":
                put(f"{base}self_attn.{proj}_proj{suffix}.weight", mine + f"{proj}_proj.weight")
                put(f"{base}self_attn.{proj}_proj{suffix}.bias", mine + f"{proj}_proj.bias")
            put(f"{base}self_attn.o_proj{suffix}.weight", mine + "o_proj.weight")
            put(f"{base}self_attn.q_norm{suffix}.weight", mine + "q_norm.weight")
            put(f"{base}self_attn.k_norm{suffix}.weight", mine + "k_norm.weight")
            for proj in ("gate_proj", "up_proj", "down_proj"):
                put(f"{base}mlp{suffix}.{proj}.weight", mine + f"mlp.{proj}.weight")
        put(f"language_model.model.layers.{i}.ls1.gamma", f"trunk.layers.{i}.geometric.attention_scale")
        put(f"language_model.model.layers.{i}.ls2.gamma", f"trunk.layers.{i}.geometric.mlp_scale")
        state[f"language_model.model.layers.{i}.self_attn.rotary_emb.inv_freq"] = torch.ones(c.head_dim // 2)
    for key in ours:
        if key.startswith("vision_tower.model."):
            put("vit_model." + key.removeprefix("vision_tower.model."), key)
        if key.startswith("dino_projector."):
            put("dino2llm." + key.removeprefix("dino_projector."), key)
    renames = {"point_decoder": "point_decoder", "point_head": "point_head", "camera_decoder": "camera_decoder",
               "camera_head": "camera_head", "global_points_decoder": "global_point_decoder",
               "global_point_head": "global_point_head", "conf_decoder": "confidence_decoder",
               "conf_head": "confidence_head"}
    for official, mine in renames.items():
        for key in ours:
            if key.startswith(f"heads.{mine}."):
                put(official + key.removeprefix(f"heads.{mine}"), key)
    dino = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
        hidden_size=c.dino.width, num_hidden_layers=c.dino.depth, num_attention_heads=c.dino.heads,
        intermediate_size=4 * c.dino.width, patch_size=c.dino.patch_size, image_size=c.dino.img_size,
        num_register_tokens=c.dino.registers))
    state.update({"dino_model." + k: v for k, v in dino.state_dict().items()})
    return state


@pytest.fixture
def official_model():
    torch.manual_seed(0)
    config = model_config("tiny", geometry_positions="sequential")
    return G2VLM(config.replace(geometry_heads=dataclasses.replace(config.geometry_heads, confidence=True)))


def test_official_layout_loads_strictly(official_model, tmp_path):
    state = _official_state(official_model)
    save_file(state, str(tmp_path / "model.safetensors"))
    assert load_official_g2vlm(official_model, tmp_path) == []
    loaded = official_model.state_dict()
    pairs = {
        "language_model.model.layers.1.self_attn.q_proj_moe_geo.weight": "trunk.layers.1.geometric.q_proj.weight",
        "language_model.model.layers.1.self_attn.q_proj.weight": "trunk.layers.1.semantic.q_proj.weight",
        "language_model.model.layers.0.self_attn.k_norm_moe_geo.weight": "trunk.layers.0.geometric.k_norm.weight",
        "language_model.model.layers.0.mlp_moe_geo.down_proj.weight": "trunk.layers.0.geometric.mlp.down_proj.weight",
        "language_model.model.layers.0.ls2.gamma": "trunk.layers.0.geometric.mlp_scale",
        "language_model.model.norm_moe_geo.weight": "trunk.geometric_norm.weight",
        "global_points_decoder.blocks.0.cross_attn.projk.weight": "heads.global_point_decoder.blocks.0.cross_attn.projk.weight",
        "camera_head.res_conv.1.res_conv3.bias": "heads.camera_head.res_conv.1.res_conv3.bias",
        "conf_head.proj.weight": "heads.confidence_head.proj.weight",
        "dino_model.encoder.layer.1.mlp.fc2.weight": "dino.vit.blocks.1.mlp.fc2.weight",
        "dino2llm.bias": "dino_projector.bias",
        "vit_model.merger.mlp.2.weight": "vision_tower.model.merger.mlp.2.weight",
    }
    for official, mine in pairs.items():
        assert torch.equal(loaded[mine], state[official]), official


def test_official_import_refuses_unknown_keys_and_shared_positions(official_model, tmp_path):
    state = _official_state(official_model)
    state["language_model.model.layers.0.mystery.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightLoadingError, match="mystery"):
        load_official_g2vlm(official_model, tmp_path)
    with pytest.raises(ValueError, match="sequential"):
        load_official_g2vlm(G2VLM(model_config("tiny")), tmp_path)
