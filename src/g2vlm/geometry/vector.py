"""Small vector helpers shared by the geometry code."""

from __future__ import annotations

import torch


def safe_norm(v: torch.Tensor, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    """L2 norm over `dim` whose gradient is 0 (not NaN) where the vector is exactly zero."""
    squared = (v * v).sum(dim, keepdim=keepdim)
    is_zero = squared == 0
    return torch.where(is_zero, torch.zeros_like(squared), torch.where(is_zero, 1.0, squared).sqrt())
