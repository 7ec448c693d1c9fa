"""Rotary position embeddings: Qwen2-VL's multimodal RoPE (trunk) and RoPE2D (geometry heads).

M-RoPE: every token has three position ids (t, h, w). The head dim's frequency pairs are split into
sections (Qwen2-VL-2B: 16 / 24 / 24 pairs); section i rotates by axis i's position. Text tokens carry
the same id on all three axes, which makes M-RoPE equal 1D RoPE for them.

Position ids of the trunk's tokens (reference §1.5):
- text: a running index p, copied to t, h and w;
- an image (Qwen-ViT on the merged grid, or one DINO frame): t = p, h = p + row, w = p + col; the
  running index then advances by max(grid_h, grid_w);
- geometric tokens, `shared`: every frame of a sample gets the same per-frame positions (permutation
  equivariant); `sequential`: frame f starts at p + 1 + f·(max(grid_h, grid_w) + 2), the offsets of the
  official packing where each DINO frame sits between two delimiter tokens.
"""

from __future__ import annotations

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., 2k) -> (..., 2k): (x1, x2) -> (-x2, x1) on the two halves (the Llama/Qwen layout)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., L, D) with cos/sin broadcastable to it (D = head dim)."""
    return x * cos + rotate_half(x) * sin


def mrope_cos_sin(
    position_ids: torch.Tensor,
    head_dim: int,
    theta: float,
    mrope_section: tuple[int, int, int],
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of M-RoPE. position_ids (3, *batch, L) -> two tensors (*batch, L, head_dim).

    Angles are computed in fp32 (as transformers does) and cast to `dtype` at the end.
    """
    if position_ids.shape[0] != 3:
        raise ValueError(f"mrope_cos_sin: position_ids must be (3, ..., L), got {tuple(position_ids.shape)}")
    device = position_ids.device
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    # axis of each frequency pair: [0]*section_t + [1]*section_h + [2]*section_w, made on the device (no
    # host-to-device copy, which would sync a CUDA step; also runs on the meta device)
    axis = torch.cat([torch.full((n,), i, dtype=torch.long, device=device) for i, n in enumerate(mrope_section)])
    positions = position_ids.float()  # (3, *batch, L)
    # (*batch, L, head_dim/2): pair j rotates by position[axis[j]] * inv_freq[j]
    selected = positions.movedim(0, -1)[..., axis]
    angles = selected * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def text_positions(length: int, start: int, device: torch.device | None = None) -> torch.Tensor:
    """Positions of `length` text tokens starting at running index `start`. -> (3, length)."""
    return torch.arange(start, start + length, device=device).expand(3, length)


def image_positions(grid_h: int, grid_w: int, start: int, device: torch.device | None = None) -> torch.Tensor:
    """Positions of one image's grid_h×grid_w tokens (row-major) at running index `start`. -> (3, h·w).

    The running index after the image is start + max(grid_h, grid_w).
    """
    rows = torch.arange(grid_h, device=device).repeat_interleave(grid_w)
    cols = torch.arange(grid_w, device=device).repeat(grid_h)
    t = torch.zeros_like(rows)
    return torch.stack((t, rows, cols)) + start


def geometry_positions(
    num_frames: int, grid_h: int, grid_w: int, start: int, mode: str, device: torch.device | None = None
) -> tuple[torch.Tensor, int]:
    """Positions of a sample's geometric tokens (frame-major, row-major inside a frame).

    -> (positions (3, num_frames·grid_h·grid_w), running index after the geometry span).
    """
    frame = image_positions(grid_h, grid_w, 0, device)
    extent = max(grid_h, grid_w)
    if mode == "shared":
        return (frame + start).repeat(1, num_frames), start + extent
    if mode == "sequential":
        stride = extent + 2  # <vision_start>, the frame grid, <vision_end> in the official packing
        offsets = start + 1 + stride * torch.arange(num_frames, device=device)
        positions = frame.unsqueeze(1) + offsets.view(1, num_frames, 1)
        return positions.reshape(3, -1), start + stride * num_frames
    raise ValueError(f"geometry_positions: mode must be shared|sequential, got {mode!r}")


class RoPE2D(torch.nn.Module):
    """2D rotary embedding of the geometry heads (π³ "rope100"): the first half of the head dim rotates
    by the patch row, the second half by the patch column, each as 1D RoPE with base `base`."""

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        self.base = base

    def cos_sin(self, grid_h: int, grid_w: int, head_dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """-> cos, sin (h·w, head_dim) for a row-major grid, in fp32."""
        half = head_dim // 2
        inv_freq = 1.0 / (self.base ** (torch.arange(0, half, 2, device=device).float() / half))
        rows = torch.arange(grid_h, device=device).float().repeat_interleave(grid_w)
        cols = torch.arange(grid_w, device=device).float().repeat(grid_h)
        row_angles = rows[:, None] * inv_freq
        col_angles = cols[:, None] * inv_freq
        angles = torch.cat((row_angles, row_angles, col_angles, col_angles), dim=-1)
        return angles.cos(), angles.sin()

    @staticmethod
    def apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (..., L, head_dim) rotated per half: rows on the first half, columns on the second."""
        x_rows, x_cols = x.chunk(2, dim=-1)
        half = x_rows.shape[-1]
        rows = apply_rotary(x_rows, cos[..., :half], sin[..., :half])
        cols = apply_rotary(x_cols, cos[..., half:], sin[..., half:])
        return torch.cat((rows, cols), dim=-1)
