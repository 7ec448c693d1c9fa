"""Typed model outputs. All geometry tensors are fp32 (the heads run outside autocast)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GeometryOutput:
    """Per-frame geometry of B samples with N frames of H×W pixels.

    depth: (B, N, H, W), positive (exp of the head's log-depth), the z of `local_points`.
    local_points: (B, N, H, W, 3) in each frame's camera coordinates (OpenCV axes).
    camera_to_world: (B, N, 4, 4) OpenCV camera-to-world; "world" is the model's own frame.
    world_points: (B, N, H, W, 3) = camera_to_world · local_points.
    global_points: (B, N, H, W, 3) from the global-point head, in frame 0's camera coordinates.
    confidence: (B, N, H, W) logits, or None when the model has no confidence head.
    """

    depth: torch.Tensor
    local_points: torch.Tensor
    camera_to_world: torch.Tensor
    world_points: torch.Tensor
    global_points: torch.Tensor
    confidence: torch.Tensor | None = None


@dataclass
class ModelOutput:
    """Output of the joint (packed) forward.

    logits: (T_text, vocab) for the packed text tokens (rows follow `PackedBatch.input_ids`), or None
    when the batch has no text. geometry: one GeometryOutput (batch size 1) per sample that has a
    Geometry segment, in sample order, when heads were requested; else None.
    semantic_hidden: (T_s, D) and geometric_hidden: (T_g, D): final-normed trunk states.
    """

    logits: torch.Tensor | None
    geometry: list[GeometryOutput] | None
    semantic_hidden: torch.Tensor
    geometric_hidden: torch.Tensor
