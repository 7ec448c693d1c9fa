"""Small vector helpers shared by the geometry code."""

from __future__ import annotations

import torch


def safe_norm(v: torch.Tensor, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    """L2 norm over `dim` whose gradient is 0 (not NaN) where the vector is exactly zero."""
    squared = (v * v).sum(dim, keepdim=keepdim)
    is_zero = squared == 0
    return torch.where(is_zero, torch.zeros_like(squared), torch.where(is_zero, 1.0, squared).sqrt())


def cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cross product over the last dim (size 3), broadcasting. Written out: on the CPU, `torch.cross` on
    large strided batches is several times slower than these six products."""
    ax, ay, az = a.unbind(-1)
    bx, by, bz = b.unbind(-1)
    return torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], dim=-1)
