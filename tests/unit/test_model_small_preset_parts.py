"""The `small` preset's own parts: the convolutional stem and the convolutional upsampling head."""

from __future__ import annotations

import pytest
import torch

from g2vlm.model.config import DinoConfig, HeadsConfig, model_config
from g2vlm.model.dino_encoder import build_dino
from g2vlm.model.heads import ConvUpsampleHead, GeometryHeads


def test_conv_stem_tokens_see_across_patch_borders_and_the_patch_stem_does_not():
    torch.manual_seed(0)
    images = torch.rand(1, 3, 32, 32)
    changed = images.clone()
    changed[0, :, 0:8, 7] += 0.5  # the last column of patch (0, 0), next to patch (0, 1)
    for stem, leaks in (("conv", True), ("patch", False)):
        embed = build_dino(DinoConfig(width=32, depth=1, heads=4, patch_size=8, img_size=32, stem=stem)).patch_embed
        with torch.no_grad():
            tokens, tokens_changed = embed(images), embed(changed)  # (1, 4, 4, 32) NHWC
        assert tokens.shape == (1, 4, 4, 32)
        moved = (tokens_changed - tokens).abs().amax(-1)[0]
        assert moved[0, 0] > 0
        assert (moved[0, 1] > 0) == leaks, stem


def test_conv_stem_needs_a_power_of_two_patch():
    with pytest.raises(ValueError, match="power-of-two"):
        build_dino(DinoConfig(width=24, depth=1, heads=4, patch_size=6, img_size=36, stem="conv"))


def test_conv_upsampler_has_no_block_seams():
    """Two neighbouring tokens with different features: the output changes about as much between two pixel
    columns inside a patch as across the patch border (a per-token head, pixel shuffle or nearest upsampling,
    would put the whole jump on the border)."""
    torch.manual_seed(0)
    head = ConvUpsampleHead(16, 1, 8)
    with torch.no_grad():
        out = head(torch.randn(1, 2 * 2, 16), 2, 2)[0, :, :, 0]
    assert out.shape == (16, 16)
    steps = (out[:, 1:] - out[:, :-1]).abs().mean(0)  # mean |step| between columns c and c+1
    seam, inside = steps[7], torch.cat([steps[:7], steps[8:]]).mean()
    assert seam < 3.0 * inside


def test_small_preset_uses_the_conv_parts_and_official_heads_keep_their_layout():
    small = model_config("small")
    assert small.dino.stem == "conv" and small.geometry_heads.upsampler == "conv"
    official = model_config("g2vlm-2b")
    assert official.dino.stem == "patch" and official.geometry_heads.upsampler == "pixel_shuffle"
    with torch.device("meta"):
        heads = GeometryHeads(64, HeadsConfig(depth=0, heads=4, point_dim=32, camera_dim=16), patch_size=8)
    names = {name: tuple(p.shape) for name, p in heads.named_parameters()}
    assert names["point_head.proj.weight"] == (3 * 8 * 8, 32)
    assert names["global_point_head.proj.weight"] == (3 * 8 * 8, 32)


def test_every_gradient_has_its_parameters_layout():
    """DDP's gradient contract: a gradient laid out unlike its parameter is copied into the bucket every step (and
    torch warns "Grad strides do not match bucket view strides"). The token grid enters the upsampler's 1x1
    convolution as a transposed (channels-last) view, whose weight gradient came back in another layout."""
    from g2vlm.model.g2vlm import G2VLM

    torch.manual_seed(0)
    model = G2VLM(model_config("small"))
    output = model.forward_geometry(torch.rand(1, 2, 3, 32, 32))
    (output.depth.sum() + output.camera_to_world.sum() + output.global_points.sum()).backward()
    mismatched = [name for name, p in model.named_parameters() if p.grad is not None and p.grad.stride() != p.stride()]
    assert mismatched == []
