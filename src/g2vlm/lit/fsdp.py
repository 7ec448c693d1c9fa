"""FSDP pieces the experiment YAMLs refer to (experiments/trainer/fsdp.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

from torch.distributed.fsdp import MixedPrecision

from g2vlm.model.heads import GeometryHeads


@dataclass
class HeadsInFp32MixedPrecision(MixedPrecision):
    """FSDP `MixedPrecision` that leaves the geometry heads in fp32.

    FSDP gives modules of the ignored classes their own FSDP unit with full-precision parameters; the heads
    already cast their inputs to fp32 and run with autocast off, so heads, geometry and losses stay fp32 while
    the trunk computes in `param_dtype`.
    """

    def __post_init__(self) -> None:
        self._module_classes_to_ignore = (*self._module_classes_to_ignore, GeometryHeads)
