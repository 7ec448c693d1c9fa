"""`g2vlm.lit.fsdp.shard_model` in one process (a 1-rank gloo group, FSDP2 on the CPU): which modules are FSDP
units, the mixed-precision policy that runs in each (bf16 trunk, fp32 heads, as on GPUs), and that the sharded
model computes what the whole model computes on every path the suite calls (geometry fast path, packed joint
path, KV-cache generation inside `gathered`). The multi-process runs are in tests/integration/test_fsdp_cpu.py."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from g2vlm.lit.fsdp import gathered, shard_model
from g2vlm.model.config import model_config
from g2vlm.model.g2vlm import G2VLM
from g2vlm.model.generation import generate
from g2vlm.model.heads import ContextDecoderBlock, DecoderBlock
from g2vlm.model.packing import Geometry, Text, pack


@pytest.fixture
def mesh(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def tiny_model() -> G2VLM:
    torch.manual_seed(0)
    model = G2VLM(model_config("tiny"))
    with torch.no_grad():  # the projector starts at zero: give every weight a value that reaches the outputs
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def test_units_and_the_precision_each_computes_in(mesh):
    model = tiny_model()
    shard_model(model, mesh, param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    units = [*model.dino.vit.blocks, *model.trunk.layers, *model.vision_tower.model.blocks, model.heads, model,
             *(m for m in model.heads.modules() if isinstance(m, (DecoderBlock, ContextDecoderBlock)))]
    assert all(isinstance(unit, FSDPModule) for unit in units)
    assert all(isinstance(p, DTensor) and p.dtype == torch.float32 for p in model.parameters())  # fp32 masters

    seen: dict[str, torch.dtype] = {}

    def record(name):
        def hook(module, args) -> None:
            seen[name] = module.weight.dtype
        return hook

    model.trunk.layers[0].geometric.q_proj.register_forward_pre_hook(record("trunk layer"))
    model.dino.vit.blocks[0].attn.qkv.register_forward_pre_hook(record("dino block"))
    model.dino_projector.register_forward_pre_hook(record("projector (root unit)"))
    model.heads.point_decoder.blocks[0].mlp.fc1.register_forward_pre_hook(record("head decoder block"))
    model.heads.camera_head.fc_rot.register_forward_pre_hook(record("camera head (heads unit)"))
    output = model.forward_geometry(torch.rand(1, 2, 3, 32, 32))
    assert seen == {"dino block": torch.bfloat16, "projector (root unit)": torch.bfloat16,
                    "trunk layer": torch.bfloat16, "head decoder block": torch.float32,
                    "camera head (heads unit)": torch.float32}
    assert output.depth.dtype == output.camera_to_world.dtype == output.global_points.dtype == torch.float32
    (output.depth.mean() + output.camera_to_world.sum()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(isinstance(g, DTensor) and g.dtype == torch.float32 for g in grads)


def test_sharded_model_computes_what_the_whole_model_computes(mesh):
    whole = tiny_model()
    sharded = copy.deepcopy(whole)
    shard_model(sharded, mesh, param_dtype=torch.float32, reduce_dtype=torch.float32)

    images = torch.rand(1, 2, 3, 32, 32)
    expected, got = whole.forward_geometry(images), sharded.forward_geometry(images)
    for name in ("depth", "camera_to_world", "global_points"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), rtol=1e-5, atol=1e-6)

    ids = torch.arange(5, 20)
    segments = [Text(ids[:6]), Geometry(torch.rand(2, 3, 32, 32)), Text(ids[6:], supervised=True)]
    batch = pack([segments], whole.config)
    torch.testing.assert_close(sharded(batch).logits, whole(batch).logits, rtol=1e-5, atol=1e-6)

    prompt = segments[:2] + [Text(ids[6:9])]
    with gathered(sharded):
        tokens = generate(sharded, prompt, stop_token=0, max_new_tokens=6)
    assert tokens == generate(whole, prompt, stop_token=0, max_new_tokens=6)
    assert all(isinstance(p, DTensor) for p in sharded.parameters())  # resharded after the block


def test_generation_reads_gathered_bf16_weights(mesh):
    """KV-cache generation reads layer weights directly: inside `gathered` it sees the full bf16 weights and its
    float inputs are cast (it never enters the root unit's forward, which casts them otherwise)."""
    model = tiny_model()
    shard_model(model, mesh, param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    ids = torch.arange(5, 14)
    prompt = [Text(ids[:6]), Geometry(torch.rand(2, 3, 32, 32)), Text(ids[6:])]
    with gathered(model):
        assert model.trunk.layers[0].geometric.q_proj.weight.dtype == torch.bfloat16
        tokens = generate(model, prompt, stop_token=-1, max_new_tokens=4)
    assert len(tokens) == 4 and all(isinstance(token, int) for token in tokens)
    assert all(isinstance(p, DTensor) and p.dtype == torch.float32 for p in model.parameters())


def test_packed_path_keeps_the_encoders_in_the_root_unit(mesh):
    """SpatialReasoning's layout: the packed path runs DINO once per geometry sample, so its blocks (and the ViT's)
    must not be units whose calls differ between ranks; the trunk layers and heads still are."""
    model = tiny_model()
    shard_model(model, mesh, encoder_blocks=False)
    assert not any(isinstance(block, FSDPModule) for block in [*model.dino.vit.blocks, *model.vision_tower.model.blocks])
    assert all(isinstance(unit, FSDPModule) for unit in [*model.trunk.layers, model.heads, model])
