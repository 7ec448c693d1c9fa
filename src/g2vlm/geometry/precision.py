"""The dtype rule of the geometry code: fp32 by construction, float64 kept (gradcheck).

Half-precision inputs (bf16, fp16) and integer inputs are upcast to float32; float64 stays float64.
Several tensors that meet in one computation share the widest of those dtypes.
"""

from __future__ import annotations

import torch


def geometry_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any tensor is float64, else float32."""
    if any(t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def upcast(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Return the tensors cast to their shared geometry dtype (see `geometry_dtype`)."""
    dtype = geometry_dtype(*tensors)
    return tuple(t.to(dtype) for t in tensors)
