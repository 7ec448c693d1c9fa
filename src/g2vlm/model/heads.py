"""π³-style geometry heads (reference §1.6).

The trunk's final-normed geometric hidden states, reshaped per frame to (B·N, h·w, D), feed three
transformer decoders (width D, per-frame attention, RoPE2D base 100, LayerNorm eps 1e-6, GELU MLP,
qkv bias, no LayerScale, no QK-norm):
- point decoder -> Linear(point_dim -> 3·p²) + pixel shuffle -> (x, y, z'): depth = exp(z'),
  local point = (x·depth, y·depth, depth);
- camera decoder -> camera head (two residual 3×(Linear+ReLU) blocks, average pool over patches, two
  Linear+ReLU, fc_rot 9-D -> SO(3), fc_t 3-D) -> camera_to_world (OpenCV);
- global-point decoder (each block also cross-attends to frame 0's tokens) -> pixel-shuffle head,
  raw xyz in frame 0's camera coordinates;
- optional confidence decoder -> 1-channel pixel-shuffle head (a logit).
All heads run in fp32 with autocast disabled (the trunk may run in bf16).

Parameter names follow the official G²VLM heads (its copy of π³'s layers, `modeling/pi3/models/layers/`):
blocks.i.norm1/attn.qkv/attn.proj/norm2/mlp.fc1/fc2, cross blocks norm2/norm_y/cross_attn.q_proj/k_proj/v_proj/proj/
norm3 (π³ itself names them projq/projk/projv; G²VLM's `CrossAttentionRope` renamed them), camera
res_conv.i.res_conv1..3 / more_mlps / fc_rot / fc_t, pixel-shuffle proj; so official weights map onto them by
module prefix.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from g2vlm.geometry.rotation import rotation_from_9d
from g2vlm.model.config import HeadsConfig
from g2vlm.model.rope import RoPE2D


def _autocast_off(device_type: str):
    if device_type == "meta":  # FLOP counting on the meta device: autocast does not exist there
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


class RopeAttention(nn.Module):
    """Multi-head attention with RoPE2D on queries and keys. Self-attention when `context` is None."""

    def __init__(self, width: int, heads: int, cross: bool) -> None:
        super().__init__()
        self.heads = heads
        if cross:
            self.q_proj = nn.Linear(width, width)
            self.k_proj = nn.Linear(width, width)
            self.v_proj = nn.Linear(width, width)
        else:
            self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, context: torch.Tensor | None = None):
        b, length, width = x.shape
        if context is None:
            q, k, v = self.qkv(x).view(b, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        else:
            q = self.q_proj(x).view(b, length, self.heads, -1).transpose(1, 2)
            k = self.k_proj(context).view(b, context.shape[1], self.heads, -1).transpose(1, 2)
            v = self.v_proj(context).view(b, context.shape[1], self.heads, -1).transpose(1, 2)
        q = RoPE2D.apply(q, cos.to(q.dtype), sin.to(q.dtype))
        k = RoPE2D.apply(k, cos.to(k.dtype), sin.to(k.dtype))  # context shares the frame's patch grid
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, length, width))


class Mlp(nn.Module):
    """fc2(gelu(fc1(x)))."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class DecoderBlock(nn.Module):
    """Pre-norm block: self-attention, MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = RopeAttention(width, heads, cross=False)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x, cos, sin, context=None):
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class ContextDecoderBlock(nn.Module):
    """Pre-norm block: self-attention, cross-attention to a (separately normed) context, MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = RopeAttention(width, heads, cross=False)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.norm_y = nn.LayerNorm(width, eps=1e-6)
        self.cross_attn = RopeAttention(width, heads, cross=True)
        self.norm3 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x, cos, sin, context):
        x = x + self.attn(self.norm1(x), cos, sin)
        x = x + self.cross_attn(self.norm2(x), cos, sin, context=self.norm_y(context))
        return x + self.mlp(self.norm3(x))


class Decoder(nn.Module):
    """`depth` blocks then a linear output. x (B·N, P, D) -> (B·N, P, out_dim).

    gradient_checkpointing: per-block activation checkpointing (non-reentrant; set by
    `G2VLM.set_gradient_checkpointing`). The fp32 blocks run on every token of every frame, so without it the
    heads hold most of a checkpointed trunk's activation memory."""

    def __init__(self, width: int, config: HeadsConfig, out_dim: int, cross: bool = False) -> None:
        super().__init__()
        block = ContextDecoderBlock if cross else DecoderBlock
        self.blocks = nn.ModuleList(block(width, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.linear_out = nn.Linear(width, out_dim)
        self.gradient_checkpointing = False

    def forward(self, x, cos, sin, context=None):
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, cos, sin, context, use_reentrant=False)
            else:
                x = block(x, cos, sin, context)
        return self.linear_out(x)


class PixelShuffleHead(nn.Module):
    """One Linear(in -> channels·p²) per token, then pixel shuffle. (B·N, h·w, in) -> (B·N, h·p, w·p, channels)."""

    def __init__(self, in_dim: int, channels: int, patch_size: int) -> None:
        super().__init__()
        self.channels, self.patch_size = channels, patch_size
        self.proj = nn.Linear(in_dim, channels * patch_size * patch_size)

    def forward(self, x: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
        out = self.proj(x)  # (BN, h·w, C·p²)
        out = out.transpose(1, 2).reshape(x.shape[0], -1, grid_h, grid_w)
        out = F.pixel_shuffle(out, self.patch_size)  # (BN, C, h·p, w·p)
        return out.permute(0, 2, 3, 1)


class ConvUpsampleHead(nn.Module):
    """Dense output by convolutional upsampling. (B·N, h·w, in) -> (B·N, h·p, w·p, channels).

    A 1x1 convolution to in/2 features on the token grid, then log2(p) stages of (2x bilinear upsampling, 3x3
    convolution, GELU) halving the features down to a floor of 8, then a 1x1 convolution to `channels`. Neighbouring
    tokens blend at every scale, so the output has no p x p block seams (the pixel-shuffle head predicts each
    token's block on its own)."""

    def __init__(self, in_dim: int, channels: int, patch_size: int) -> None:
        super().__init__()
        stages = round(math.log2(patch_size))
        if 2**stages != patch_size:
            raise ValueError(f"ConvUpsampleHead: patch_size must be a power of two, got {patch_size}")
        width = max(in_dim // 2, 8)
        self.proj = nn.Conv2d(in_dim, width, kernel_size=1)
        self.stages = nn.ModuleList()
        for _ in range(stages):
            out = max(width // 2, 8)
            self.stages.append(nn.Conv2d(width, out, kernel_size=3, padding=1))
            width = out
        self.out = nn.Conv2d(width, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
        # The 1x1 convolutions run as matrix products on the channels-last data (same weights, same result): the
        # 3x3 convolutions get channels-last memory, about twice as fast on the CPU as NCHW, and every weight
        # gradient keeps its parameter's layout (DDP's gradient contract).
        x = F.linear(x, self.proj.weight.flatten(1), self.proj.bias)  # (BN, h·w, width)
        x = x.reshape(x.shape[0], grid_h, grid_w, -1).permute(0, 3, 1, 2)  # NCHW view of channels-last memory
        for conv in self.stages:
            x = F.gelu(conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)))
        return F.linear(x.permute(0, 2, 3, 1), self.out.weight.flatten(1), self.out.bias)


def dense_head(in_dim: int, channels: int, patch_size: int, upsampler: str) -> nn.Module:
    """The dense output head of `HeadsConfig.upsampler`: PixelShuffleHead or ConvUpsampleHead."""
    if upsampler == "pixel_shuffle":
        return PixelShuffleHead(in_dim, channels, patch_size)
    if upsampler == "conv":
        return ConvUpsampleHead(in_dim, channels, patch_size)
    raise ValueError(f"dense_head: HeadsConfig.upsampler must be pixel_shuffle|conv, got {upsampler!r}")


class ResidualMLPBlock(nn.Module):
    """x + relu(res_conv3(relu(res_conv2(relu(res_conv1(x))))))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.res_conv1 = nn.Linear(width, width)
        self.res_conv2 = nn.Linear(width, width)
        self.res_conv3 = nn.Linear(width, width)

    def forward(self, x):
        residual = F.relu(self.res_conv1(x))
        residual = F.relu(self.res_conv2(residual))
        return x + F.relu(self.res_conv3(residual))


class CameraHead(nn.Module):
    """Per-frame tokens (B·N, h·w, dim) -> camera_to_world (B·N, 4, 4) (OpenCV axes)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.res_conv = nn.ModuleList(ResidualMLPBlock(dim) for _ in range(2))
        self.more_mlps = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.fc_rot = nn.Linear(dim, 9)
        self.fc_t = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.res_conv:
            x = block(x)
        x = self.more_mlps(x.mean(dim=1))
        rotation = rotation_from_9d(self.fc_rot(x))
        translation = self.fc_t(x)
        bottom = rotation.new_zeros(x.shape[0], 1, 4)  # (0, 0, 0, 1), made on the device (no host-to-device copy)
        bottom[..., 3] = 1.0
        return torch.cat([torch.cat([rotation, translation[:, :, None]], dim=2), bottom], dim=1)


class GeometryHeads(nn.Module):
    """All geometry heads. forward(tokens (B, N, h·w, D), grid (h, w)) -> dict of fp32 tensors:
    local_points (B,N,H,W,3), depth (B,N,H,W), camera_to_world (B,N,4,4), world_points (B,N,H,W,3),
    global_points (B,N,H,W,3), confidence (B,N,H,W) or None."""

    def __init__(self, width: int, config: HeadsConfig, patch_size: int) -> None:
        super().__init__()
        self.rope = RoPE2D(config.rope_base)
        self.head_dim = width // config.heads
        self.point_decoder = Decoder(width, config, config.point_dim)
        self.point_head = dense_head(config.point_dim, 3, patch_size, config.upsampler)
        self.camera_decoder = Decoder(width, config, config.camera_dim)
        self.camera_head = CameraHead(config.camera_dim)
        self.global_point_decoder = Decoder(width, config, config.point_dim, cross=True)
        self.global_point_head = dense_head(config.point_dim, 3, patch_size, config.upsampler)
        if config.confidence:
            self.confidence_decoder = Decoder(width, config, config.point_dim)
            self.confidence_head = dense_head(config.point_dim, 1, patch_size, config.upsampler)
        else:
            self.confidence_decoder = self.confidence_head = None

    def forward(self, tokens: torch.Tensor, grid_h: int, grid_w: int) -> dict[str, torch.Tensor | None]:
        with _autocast_off(tokens.device.type):
            return self._forward(tokens.float(), grid_h, grid_w)

    def _forward(self, tokens: torch.Tensor, grid_h: int, grid_w: int) -> dict[str, torch.Tensor | None]:
        b, n, p, d = tokens.shape
        x = tokens.reshape(b * n, p, d)
        cos, sin = self.rope.cos_sin(grid_h, grid_w, self.head_dim, tokens.device)
        frame0 = tokens[:, :1].expand(b, n, p, d).reshape(b * n, p, d)

        raw = self.point_head(self.point_decoder(x, cos, sin), grid_h, grid_w)  # (BN, H, W, 3)
        xy, log_depth = raw.split([2, 1], dim=-1)
        depth = log_depth.exp()
        local_points = torch.cat([xy * depth, depth], dim=-1)
        camera_to_world = self.camera_head(self.camera_decoder(x, cos, sin))
        world_points = torch.einsum("bij,bhwj->bhwi", camera_to_world[:, :3, :3], local_points)
        world_points = world_points + camera_to_world[:, None, None, :3, 3]
        global_points = self.global_point_head(self.global_point_decoder(x, cos, sin, frame0), grid_h, grid_w)
        confidence = None
        if self.confidence_decoder is not None:
            confidence = self.confidence_head(self.confidence_decoder(x, cos, sin), grid_h, grid_w)[..., 0]

        def frames(t):
            return None if t is None else t.reshape(b, n, *t.shape[1:])

        return {
            "depth": frames(depth[..., 0]),
            "local_points": frames(local_points),
            "camera_to_world": frames(camera_to_world),
            "world_points": frames(world_points),
            "global_points": frames(global_points),
            "confidence": frames(confidence),
        }
