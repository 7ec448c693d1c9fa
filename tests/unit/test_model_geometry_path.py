"""The geometry-only fast path: shapes, output parametrisation, no attention mask, frame permutation; the official
input format (token order, positions, DINO windows) and that it changes the geometry."""

import pytest
import torch
import torch.nn.functional as F

from g2vlm.geometry.camera import se3_inverse
from g2vlm.model.config import OfficialInputConfig, model_config
from g2vlm.model.dino_encoder import DinoEncoder
from g2vlm.model.g2vlm import G2VLM
from g2vlm.model.official_format import GEOMETRIC_TOKEN, official_layout
from g2vlm.model.rope import geometry_positions


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


# ------------------------------------------------------------------------------ the official input format
OFFICIAL = OfficialInputConfig(prompt_ids=(9, 1, 2), vision_start_id=7, vision_end_id=8)


def test_official_layout_token_order_and_filled_positions():
    """Two frames of 2 × 3 DINO tokens after a 3-token prompt, written out by hand from the official rules
    (prepare_prompts_addbos + prepare_dino_images_none + get_rope_index_image_3D_dino)."""
    layout = official_layout(OFFICIAL, num_frames=2, grid_h=2, grid_w=3)
    geo = GEOMETRIC_TOKEN
    assert layout.token_ids.tolist() == [9, 1, 2, 7, geo, geo, geo, geo, geo, geo, 8, 7, geo, geo, geo, geo, geo, geo, 8]
    assert layout.prompt_length == 3

    def frame(base):  # t = base, h = base + row, w = base + col, row-major
        return [(base, base + r, base + c) for r in range(2) for c in range(3)]

    text = [(p, p, p) for p in range(3)]
    expected = text + [(3, 3, 3)] + frame(4) + [(7, 7, 7)] + [(8, 8, 8)] + frame(9) + [(12, 12, 12)]
    assert [tuple(column) for column in layout.positions.T.tolist()] == expected
    # the delimiters fill the gaps that `sequential` leaves: the same DINO positions as the clean sequential layout
    sequential, end = geometry_positions(2, 2, 3, 3, "sequential")
    assert torch.equal(layout.positions[:, layout.token_ids == geo], sequential) and end == 13
    # storage order: prompt, delimiters, DINO tokens
    order = layout.storage_order()
    assert layout.token_ids[order].tolist() == [9, 1, 2, 7, 8, 7, 8] + [geo] * 12


def _tiny_dino():
    """A random tiny DINOv2-reg encoder (patch 4, 4 registers) whose LayerScales (1e-5 at initialisation) are 1, so
    that attention carries signal."""
    torch.manual_seed(0)
    encoder = DinoEncoder(model_config("tiny").dino)
    with torch.no_grad():
        for block in encoder.vit.blocks:
            block.ls1.gamma.fill_(1.0)
            block.ls2.gamma.fill_(1.0)
    return encoder.eval()


def test_official_dino_windows_straddle_frames():
    """Two frames of 4 × 4 patches: the packed sequence holds 2 × (1 + 4 + 16) tokens and the official windows
    are [0, 16) and [16, 32). So frame 0's first 11 patches (rows 5..15) see only frame 0, its last 5 patches
    (rows 16..20) share a window with frame 1's CLS, registers and first 6 patches, and frame 1's last 10 patches
    (rows 32..41) are in no window: each depends on its own pixels only."""
    encoder = _tiny_dino()
    images = torch.rand(1, 2, 3, 16, 16)

    def moved_by(rows: slice, cols: slice) -> torch.Tensor:
        """(2 frames, 16 patches): which patch tokens change when frame 1's pixels [rows, cols] change."""
        changed = images.clone()
        changed[0, 1, :, rows, cols] = torch.rand(changed[0, 1, :, rows, cols].shape)
        with torch.no_grad():
            base, other = encoder.forward_official_windows(images), encoder.forward_official_windows(changed)
        return (base - other).abs().amax(-1)[0] > 1e-6

    moved = moved_by(slice(0, 8), slice(0, 8))  # frame 1's patches 0, 1, 4, 5 (all in window 1)
    assert not moved[0, :11].any()  # frame 0's first window never sees frame 1
    assert moved[0, 11:].all()  # its last 5 patches share window 1 with frame 1's first patches
    assert moved[1, :6].all() and not moved[1, 6:].any()  # window 1 holds frame 1's patches 0..5, no more
    moved = moved_by(slice(8, 12), slice(8, 12))  # frame 1's patch 10: in no window
    expected = torch.zeros(2, 16, dtype=torch.bool)
    expected[1, 10] = True
    assert torch.equal(moved, expected)  # it depends on its own pixels only, and nothing depends on it
    with torch.no_grad():  # with per-frame windows frame 0 does not depend on frame 1 at all
        changed = images.clone()
        changed[0, 1] = torch.rand(3, 16, 16)
        assert torch.equal(encoder(images.flatten(0, 1))[0], encoder(changed.flatten(0, 1))[0])


def test_official_dino_windows_match_a_varlen_reference():
    """The windows against a direct transcription of flash-attn varlen semantics: for each cu_seqlens window,
    softmax attention inside it; rows outside every window get zero attention output."""
    encoder = _tiny_dino()
    images = torch.rand(2, 3, 3, 12, 16)  # 2 samples, 3 frames of 3 × 4 patches
    vit = encoder.vit
    with torch.no_grad():
        ours = encoder.forward_official_windows(images)
        for sample in range(2):
            x = vit._pos_embed(vit.patch_embed(encoder._normalise(images[sample])))  # (3, 5 + 12, C)
            frames, per_frame, width = x.shape
            x = x.reshape(1, frames * per_frame, width)
            cu_seqlens = [0, 12, 24, 36]
            for block in vit.blocks:
                attn = block.attn
                q, k, v = attn.qkv(block.norm1(x))[0].reshape(-1, 3, attn.num_heads, attn.head_dim).unbind(1)
                out = torch.zeros_like(q)
                for start, end in zip(cu_seqlens[:-1], cu_seqlens[1:]):
                    scores = torch.einsum("qhd,khd->hqk", q[start:end], k[start:end]) * attn.head_dim**-0.5
                    out[start:end] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v[start:end])
                x = x + block.ls1(attn.proj(out.reshape(1, -1, width)))
                x = x + block.ls2(block.mlp(block.norm2(x)))
            reference = vit.norm(x).reshape(frames, per_frame, width)[:, 5:]
            torch.testing.assert_close(ours[sample], reference, atol=1e-5, rtol=1e-5)


def test_official_format_changes_the_geometry_and_runs_batched():
    torch.manual_seed(0)
    config = model_config("tiny", geometry_positions="sequential")
    clean = _randomise(G2VLM(config)).eval()
    official = G2VLM(config.replace(official_input=OFFICIAL)).eval()
    official.load_state_dict(clean.state_dict())
    images = torch.rand(2, 3, 3, 16, 20)
    with torch.no_grad():
        a, b = clean.forward_geometry(images), official.forward_geometry(images)
        single = official.forward_geometry(images[1:])
    assert (a.depth - b.depth).abs().max() > 1e-3 * a.depth.abs().max()
    assert (a.camera_to_world - b.camera_to_world).abs().max() > 1e-4
    torch.testing.assert_close(single.depth, b.depth[1:], atol=1e-5, rtol=1e-4)  # samples do not mix
    for name in ("depth", "world_points", "camera_to_world", "global_points"):
        assert getattr(b, name).dtype == torch.float32 and torch.isfinite(getattr(b, name)).all()


def test_official_format_needs_sequential_positions_and_the_semantic_side():
    with pytest.raises(ValueError, match="sequential"):
        model_config("tiny", official_input=OFFICIAL)
    with pytest.raises(ValueError, match="semantic"):
        model_config("tiny", semantic=False, vit=None, geometry_positions="sequential", official_input=OFFICIAL)
    with pytest.raises(ValueError, match="vocab_size"):
        model_config("tiny", geometry_positions="sequential",
                     official_input=OfficialInputConfig((1, 500), vision_start_id=7, vision_end_id=8))
