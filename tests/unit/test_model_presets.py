"""Presets: g2vlm-2b built on the meta device has the reference parameter counts (g2vlm-official.md §1.1)."""

import pytest
import torch

from g2vlm.model.config import PRESETS, model_config
from g2vlm.model.g2vlm import G2VLM
from g2vlm.model.packing import Geometry, Text, VitImage, pack


def test_g2vlm_2b_parameter_counts_match_reference():
    with torch.device("meta"):
        model = G2VLM(model_config("g2vlm-2b"))
    counts = model.parameter_counts()
    # reference §1.1: "two LLM experts of about 1.31B each, embedding plus untied LM head 0.47B, ViT 0.68B,
    # DINOv2-L 0.30B, and heads about 0.47B"; total about 4.5B
    expected = {
        "semantic_expert": 1.31e9,
        "geometric_expert": 1.31e9,
        "embeddings": 0.47e9,
        "vit": 0.675e9,
        "dino": 0.30e9,
        "heads": 0.47e9,
    }
    for part, value in expected.items():
        assert counts[part] == pytest.approx(value, rel=0.03), (part, counts[part])
    assert sum(counts.values()) == pytest.approx(4.5e9, rel=0.02)
    # exact structural facts: the geometric expert is the semantic one plus LayerScale (2·width per layer)
    assert counts["geometric_expert"] - counts["semantic_expert"] == 28 * 2 * 1536
    assert counts["dino_projector"] == 1024 * 1536 + 1536
    assert counts["embeddings"] == 2 * 151_936 * 1536  # untied LM head
    assert model.frozen_groups() == []  # a config is the architecture; what trains is the LightningModule's `freeze`


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid(name):
    config = model_config(name)
    assert config.head_dim == 2 * sum(config.mrope_section)


def test_unknown_preset_and_bad_fields_are_named():
    with pytest.raises(ValueError, match="unknown preset"):
        model_config("huge")
    with pytest.raises(ValueError, match="kv_heads"):
        model_config("tiny", kv_heads=3)
    with pytest.raises(ValueError, match="geometry_positions"):
        model_config("tiny", geometry_positions="random")


def test_meta_init_then_reset_parameters_restores_the_special_initialisations():
    """FSDP-style materialisation (to_empty + each module's reset_parameters) keeps the zero projector,
    RMSNorm weights of 1 and LayerScale 0.01."""
    with torch.device("meta"):
        model = G2VLM(model_config("tiny"))
    model.to_empty(device="cpu")
    for module in model.modules():
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
    assert torch.equal(model.dino_projector.weight, torch.zeros_like(model.dino_projector.weight))
    assert torch.equal(model.dino_projector.bias, torch.zeros_like(model.dino_projector.bias))
    layer = model.trunk.layers[0]
    assert torch.equal(layer.geometric.attention_scale, torch.full_like(layer.geometric.attention_scale, 0.01))
    assert torch.equal(layer.geometric.mlp_scale, torch.full_like(layer.geometric.mlp_scale, 0.01))
    assert torch.equal(layer.semantic.input_norm.weight, torch.ones_like(layer.semantic.input_norm.weight))
    assert torch.equal(model.trunk.geometric_norm.weight, torch.ones_like(model.trunk.geometric_norm.weight))
    out = model.forward_geometry(torch.rand(1, 2, 3, 16, 16))
    assert out.depth.isfinite().all()
    # with the weights of a normally built model, the materialised one computes the same (buffers included)
    torch.manual_seed(0)
    reference = G2VLM(model_config("tiny")).eval()
    model.load_state_dict(reference.state_dict())
    model.eval()
    samples = [[Text(torch.arange(4)), VitImage(torch.rand(3, 16, 16)), Geometry(torch.rand(2, 3, 16, 16)), Text(torch.arange(3))]]
    batch = pack(samples, model.config)
    with torch.no_grad():
        assert torch.equal(model(batch).logits, reference(batch).logits)
