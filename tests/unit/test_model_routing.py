"""Joint path: routing equals a naive two-expert reference; packed samples do not leak into each other;
the document mask follows the rules; freezing cuts gradients and activations."""

import pytest
import torch

from g2vlm.model.config import model_config
from g2vlm.model.expert_router import attention
from g2vlm.model.g2vlm import G2VLM
from g2vlm.model.packing import Geometry, Text, VitImage, pack


def _model(**changes) -> G2VLM:
    torch.manual_seed(0)
    model = G2VLM(model_config("tiny", **changes))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial values for the zero / constant initialised parts
        for p in model.dino_projector.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
        for layer in model.trunk.layers:
            layer.geometric.attention_scale.uniform_(0.2, 1.0, generator=generator)
            layer.geometric.mlp_scale.uniform_(0.2, 1.0, generator=generator)
    return model.eval()


def _samples(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [
        [
            Text(torch.randint(0, 128, (5,), generator=g)),
            Geometry(torch.rand(2, 3, 16, 16, generator=g)),
            Text(torch.randint(0, 128, (3,), generator=g)),
            VitImage(torch.rand(3, 16, 16, generator=g)),
            Text(torch.randint(0, 128, (4,), generator=g)),
        ],
        [Text(torch.randint(0, 128, (6,), generator=g))],
        [
            Text(torch.randint(0, 128, (2,), generator=g)),
            Geometry(torch.rand(3, 3, 16, 24, generator=g)),
            Text(torch.randint(0, 128, (3,), generator=g)),
        ],
    ]


def _naive_trunk(model: G2VLM, x: torch.Tensor, is_geometric: torch.Tensor, cos, sin, mask) -> torch.Tensor:
    """Both experts on every token, then select per token (the wasteful reference)."""
    select = is_geometric[:, None]
    for layer in model.trunk.layers:
        sem_q, sem_k, sem_v = layer.semantic.qkv(x)
        geo_q, geo_k, geo_v = layer.geometric.qkv(x)
        q = torch.where(select[..., None], geo_q, sem_q)
        k = torch.where(select[..., None], geo_k, sem_k)
        v = torch.where(select[..., None], geo_v, sem_v)
        out = attention(q[None], k[None], v[None], cos[None], sin[None], mask)[0]
        x = torch.where(select, layer.geometric.finish(x, out), layer.semantic.finish(x, out))
    return torch.where(select, model.trunk.geometric_norm(x), model.trunk.semantic_norm(x))


def test_routing_equals_naive_reference():
    model = _model()
    batch = pack(_samples(), model.config)
    out = model(batch)
    # rebuild the trunk input exactly as the model does, then run the naive reference
    semantic = torch.zeros(batch.num_semantic, model.config.width)
    semantic[batch.text_index] = model.embed_tokens(batch.input_ids)
    semantic[batch.vit_index] = model.vision_tower(batch.vit_patches, batch.vit_grid_thw)
    geometric = torch.cat([model.encode_frames(f).flatten(0, 1) for f in batch.geometry_frames])
    x = torch.cat([semantic, geometric])
    is_geometric = torch.arange(batch.num_tokens) >= batch.num_semantic
    cos, sin = model._rope(batch.position_ids)
    reference = _naive_trunk(model, x, is_geometric, cos, sin, batch.dense_mask())
    torch.testing.assert_close(out.semantic_hidden, reference[: batch.num_semantic], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.geometric_hidden, reference[batch.num_semantic :], atol=1e-5, rtol=1e-5)


def test_perturbing_one_sample_leaves_the_others_bit_identical():
    model = _model()
    samples = _samples()
    out = model(pack(samples, model.config), run_heads=True)
    perturbed = _samples()
    perturbed[1] = [Text(torch.randint(0, 128, (6,), generator=torch.Generator().manual_seed(9)))]
    perturbed[2][1] = Geometry(perturbed[2][1].frames.flip(-1))
    batch = pack(perturbed, model.config)
    out2 = model(batch, run_heads=True)
    text0 = batch.text_sample == 0
    assert torch.equal(out.logits[text0], out2.logits[text0])
    assert not torch.equal(out.logits[~text0], out2.logits[~text0])
    geometry0 = slice(0, 2 * 4 * 4)  # sample 0's geometric tokens come first in the geometric part
    assert torch.equal(out.geometric_hidden[geometry0], out2.geometric_hidden[geometry0])
    assert torch.equal(out.geometry[0].depth, out2.geometry[0].depth)
    assert not torch.equal(out.geometry[1].depth, out2.geometry[1].depth)


def test_mask_rules():
    config = model_config("tiny")
    samples = [[Text(torch.arange(2)), Geometry(torch.rand(2, 3, 8, 8)), Text(torch.arange(2))], [Text(torch.arange(3))]]
    mask = pack(samples, config).dense_mask()
    # storage: semantic [s0 t0 t1 t2 t3 | s1 u0 u1 u2] then geometric [s0 frame0 (4) frame1 (4)]
    t = [0, 1, 2, 3]
    u = [4, 5, 6]
    f0, f1 = list(range(7, 11)), list(range(11, 15))
    assert mask[t[1], t[0]] and not mask[t[0], t[1]]  # text causal
    assert not mask[u[0], t[0]] and not mask[t[3], u[0]]  # no cross-sample attention
    assert mask[f0[0], f1[3]] and mask[f1[0], f0[3]]  # global geometry: both directions
    assert mask[f0[2], t[1]] and not mask[f0[0], t[2]]  # geometry sees earlier text, not later text
    assert mask[t[2], f1[3]]  # later text sees all geometry
    frame_mask = pack(samples, config.replace(geometry_attention="frame")).dense_mask()
    assert frame_mask[f1[0], f0[3]] and not frame_mask[f0[0], f1[3]]  # per frame: later frames only see earlier
    assert frame_mask[f0[0], f0[3]]  # inside a frame: bidirectional


def test_frozen_semantic_expert_gets_no_grad_and_keeps_no_activations():
    model = _model()
    model.train()
    batch = pack(_samples(), model.config)
    num_semantic, mlp = batch.num_semantic, model.config.mlp_size

    def saved_shapes(frozen: bool):
        model.freeze("semantic", frozen=frozen)
        model.zero_grad(set_to_none=True)
        shapes = []

        def pack_hook(t):
            shapes.append(tuple(t.shape))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t):
            out = model(batch, run_heads=True)
            loss = out.geometry[0].depth.mean() + out.geometry[1].depth.mean()
        loss.backward()
        return shapes

    unfrozen = saved_shapes(False)
    # the semantic expert's MLP activations (num_semantic, mlp) are kept when it trains ...
    assert (num_semantic, mlp) in unfrozen
    frozen = saved_shapes(True)
    # ... and not when it is frozen; the geometric expert's still are
    assert (num_semantic, mlp) not in frozen
    assert (batch.num_tokens - num_semantic, mlp) in frozen
    semantic_params = [p for layer in model.trunk.layers for p in layer.semantic.parameters()]
    assert all(p.grad is None for p in semantic_params)
    assert model.embed_tokens.weight.grad is None
    assert all(p.grad is not None for layer in model.trunk.layers for p in layer.geometric.parameters())
    model.freeze("semantic", frozen=False)


def test_frozen_dino_keeps_no_activations_and_gets_no_grad():
    model = _model()
    model.train()
    model.freeze("dino")
    assert model.frozen_groups() == ["dino"]
    nodes = []

    def walk(fn, seen):
        if fn is None or fn in seen:
            return
        seen.add(fn)
        nodes.append(fn)
        for next_fn, _ in fn.next_functions:
            walk(next_fn, seen)

    out = model.forward_geometry(torch.rand(1, 2, 3, 16, 16))
    walk(out.depth.grad_fn, set())
    dino_params = {id(p) for p in model.dino.parameters()}
    leaves = [n.variable for n in nodes if hasattr(n, "variable")]
    assert leaves and not any(id(v) in dino_params for v in leaves)
    assert any(v is model.dino_projector.weight for v in leaves)
    # no graph node belongs to the encoder: its output enters the graph as a plain tensor
    assert sum(p.numel() for p in model.dino.parameters()) > 0
    model.freeze("dino", frozen=False)
    out = model.forward_geometry(torch.rand(1, 2, 3, 16, 16))
    nodes.clear()
    walk(out.depth.grad_fn, set())
    leaves = [n.variable for n in nodes if hasattr(n, "variable")]
    assert any(id(v) in dino_params for v in leaves)


def _flex_vs_sdpa(device: str, backward: bool):
    sdpa = _model().to(device)
    flex = _model(attention_backend="flex").to(device)
    flex.load_state_dict(sdpa.state_dict())
    batch = pack(_samples(), sdpa.config)
    out_sdpa = sdpa(batch, run_heads=True)
    out_flex = flex(batch, run_heads=True)
    torch.testing.assert_close(out_flex.logits, out_sdpa.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out_flex.geometric_hidden, out_sdpa.geometric_hidden, atol=1e-4, rtol=1e-4)
    if backward:
        for out in (out_sdpa, out_flex):
            (out.logits.square().mean() + out.geometry[0].depth.mean()).backward()
        grad_sdpa = sdpa.trunk.layers[0].geometric.q_proj.weight.grad
        grad_flex = flex.trunk.layers[0].geometric.q_proj.weight.grad
        torch.testing.assert_close(grad_flex, grad_sdpa, atol=1e-4, rtol=1e-3)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_backend_equals_sdpa_on_cpu():
    """Flex attention's eager (unfused) path on CPU against the dense-mask SDPA reference."""
    with torch.no_grad():
        _flex_vs_sdpa("cpu", backward=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_flex_backend_equals_sdpa_on_gpu():
    """Compiled flex attention with a BlockMask against dense-mask SDPA, forward and backward."""
    _flex_vs_sdpa("cuda", backward=True)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = _model()
    model.train()
    model.freeze("dino", frozen=False)
    images = torch.rand(1, 2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    grads, saved = [], []
    for enabled in (False, True):
        model.set_gradient_checkpointing(enabled)
        model.zero_grad(set_to_none=True)
        count = [0]

        def pack_hook(t, count=count):
            count[0] += 1
            return t

        model.forward_geometry(images).depth.mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
        x = torch.randn(1, 8, model.config.width, requires_grad=True)
        cos, sin = torch.ones(1, 8, model.config.head_dim), torch.zeros(1, 8, model.config.head_dim)
        with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t):
            model.trunk.forward_geometry(x, cos, sin)
        saved.append(count[0])
    # a checkpointed layer keeps only its inputs; the final norm (not checkpointed) keeps its own
    assert 3 * saved[1] < saved[0], saved
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
