"""The geometry-only fast path: shapes, output parametrisation, no attention mask, frame permutation."""

import pytest
import torch
import torch.nn.functional as F

from g2vlm.geometry.camera import se3_inverse
from g2vlm.model.config import model_config
from g2vlm.model.g2vlm import G2VLM


def _randomise(model: G2VLM, seed: int = 0) -> G2VLM:
    """Give zero-initialised parts (DINO projector) random values so every path carries signal."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.dino_projector.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
        for layer in model.trunk.layers:
            layer.geometric.attention_scale.fill_(0.5)
            layer.geometric.mlp_scale.fill_(0.5)
    return model


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return _randomise(G2VLM(model_config("tiny", semantic=False, vit=None))).eval()


def test_shapes_and_parametrisation(tiny_model):
    images = torch.rand(2, 3, 3, 32, 40)
    out = tiny_model.forward_geometry(images)
    assert out.depth.shape == (2, 3, 32, 40)
    assert out.local_points.shape == out.world_points.shape == out.global_points.shape == (2, 3, 32, 40, 3)
    assert out.camera_to_world.shape == (2, 3, 4, 4)
    assert out.confidence is None
    assert (out.depth > 0).all()
    torch.testing.assert_close(out.local_points[..., 2], out.depth)
    rotation = out.camera_to_world[..., :3, :3]
    torch.testing.assert_close(rotation @ rotation.transpose(-1, -2), torch.eye(3).expand_as(rotation), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotation), torch.ones(2, 3), atol=1e-5, rtol=0)
    expected_world = torch.einsum("bnij,bnhwj->bnhwi", rotation, out.local_points) + out.camera_to_world[
        :, :, None, None, :3, 3
    ]
    torch.testing.assert_close(out.world_points, expected_world)


def test_outputs_fp32_under_autocast(tiny_model):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny_model.forward_geometry(torch.rand(1, 2, 3, 32, 32))
    for name in ("depth", "local_points", "camera_to_world", "world_points", "global_points"):
        assert getattr(out, name).dtype == torch.float32, name


def test_fast_path_calls_attention_without_mask(tiny_model, monkeypatch):
    calls = []
    original = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, *args, **kwargs):
        calls.append((q.shape, attn_mask, kwargs.get("is_causal", False)))
        return original(q, k, v, attn_mask, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    images = torch.rand(2, 3, 3, 32, 32)
    tiny_model.forward_geometry(images)
    trunk_calls = [c for c in calls if c[0][-2] == 3 * 8 * 8]  # the trunk attends over all N·P tokens
    assert len(trunk_calls) == tiny_model.config.layers
    assert all(mask is None and not causal for _, mask, causal in trunk_calls)
    assert all(shape[0] == 2 for shape, _, _ in trunk_calls)  # one dense batch of B samples, no packing


def _relative_poses(camera_to_world: torch.Tensor) -> torch.Tensor:
    """(N, 4, 4) -> (N, N, 4, 4): inverse(P_i) · P_j."""
    inverse = se3_inverse(camera_to_world)
    return inverse[:, None] @ camera_to_world[None, :]


def test_shared_positions_global_attention_are_permutation_equivariant(tiny_model):
    assert tiny_model.config.geometry_positions == "shared"
    torch.manual_seed(1)
    images = torch.rand(1, 4, 3, 32, 32)
    order = torch.tensor([2, 0, 3, 1])
    out = tiny_model.forward_geometry(images)
    shuffled = tiny_model.forward_geometry(images[:, order])
    torch.testing.assert_close(shuffled.depth, out.depth[:, order], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(shuffled.local_points, out.local_points[:, order], atol=1e-5, rtol=1e-4)
    relative = _relative_poses(out.camera_to_world[0])
    relative_shuffled = _relative_poses(shuffled.camera_to_world[0])
    torch.testing.assert_close(relative_shuffled, relative[order][:, order], atol=1e-5, rtol=1e-4)


def test_sequential_positions_break_permutation_equivariance():
    """The control: with the official per-frame offsets the same shuffle changes the outputs."""
    torch.manual_seed(0)
    model = _randomise(G2VLM(model_config("tiny", semantic=False, vit=None, geometry_positions="sequential"))).eval()
    images = torch.rand(1, 4, 3, 32, 32)
    order = torch.tensor([2, 0, 3, 1])
    out = model.forward_geometry(images)
    shuffled = model.forward_geometry(images[:, order])
    assert (shuffled.depth - out.depth[:, order]).abs().max() > 1e-4


def test_small_preset_trains_a_step():
    torch.manual_seed(0)
    model = G2VLM(model_config("small"))
    counts = model.parameter_counts()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 200_000 <= trainable <= 1_000_000, counts  # the CPU demo: small and fast beats big and slow
    images = torch.rand(2, 4, 3, 64, 64)
    out = model.forward_geometry(images)
    loss = out.depth.log().abs().mean() + out.global_points.abs().mean() + out.camera_to_world[..., :3, 3].abs().mean()
    loss.backward()
    assert model.dino_projector.weight.grad is not None and model.dino_projector.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.heads.parameters() if p.requires_grad)
