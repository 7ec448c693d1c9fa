"""The dtype rule of the geometry code: fp32 by construction, float64 kept (gradcheck).

Half-precision inputs (bf16, fp16) and integer inputs are upcast to float32; float64 stays float64.
Several tensors that meet in one computation share the widest of those dtypes. Public geometry functions
are wrapped with `outside_autocast`, so an enclosing autocast region cannot push their maths to bf16.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

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


def outside_autocast(fn: Callable) -> Callable:
    """Run `fn` with autocast disabled on the device of its first tensor argument, so that matmuls, SVDs and
    determinants stay in fp32 (or float64) even when called inside a bf16/fp16 autocast region."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device_type = next(
            (a.device.type for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), "cpu"
        )
        if not torch.amp.is_autocast_available(device_type):  # e.g. meta tensors
            return fn(*args, **kwargs)
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*args, **kwargs)

    return wrapper
