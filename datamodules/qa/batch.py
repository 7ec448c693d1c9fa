"""`QABatch`: the typed batch of the QA loaders — samples in reading order, ready to be packed by the model.

A sample is a list of parts in reading order (the chat template of `qa.template`):
    TextPart(ids, supervised)     token ids; supervised = these tokens are answer targets (loss);
    ImagePart(image)              one image for the semantic (Qwen-ViT) encoder, markers drawn;
    GeometryPart(frames)          the sample's images for the geometric (DINO) encoder, clean.
The LightningModule maps them onto the model's packing segments (`g2vlm.model.packing`); datamodules never
import the model. Images are uint8 (3, H, W) / (N, 3, H, W); `float_image` gives [0, 1] floats.
Lightning moves the batch to the device field by field (dataclasses and lists are walked).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TextPart:
    ids: torch.Tensor  # (L,) int64
    supervised: bool = False


@dataclass
class ImagePart:
    image: torch.Tensor  # (3, H, W) uint8


@dataclass
class GeometryPart:
    frames: torch.Tensor  # (N, 3, H, W) uint8


Part = TextPart | ImagePart | GeometryPart


@dataclass
class GeometryTargets:
    """3D labels of a sample's geometry frames (for the `vg_ce` variant), at the geometry resolution.
    depth_m (N, H, W) float32 metres, 0 = invalid; valid (N, H, W) bool; K (N, 3, 3); camera_to_world (N, 4, 4)."""

    depth_m: torch.Tensor
    valid: torch.Tensor
    K: torch.Tensor
    camera_to_world: torch.Tensor
    has_depth: bool
    dataset: str


@dataclass
class QASample:
    """One conversation. `prompt_parts` is where the final answer starts (parts[:prompt_parts] is the generation
    prompt, ending with `<|im_start|>assistant\\n`); `answer` is that final answer's text."""

    key: str
    task: str
    answer_type: str
    parts: list[Part]
    prompt_parts: int
    answer: str
    num_tokens: int
    geometry: GeometryTargets | None = None

    @property
    def prompt(self) -> list[Part]:
        return self.parts[: self.prompt_parts]

    @property
    def num_answer_tokens(self) -> int:
        return sum(int(p.ids.numel()) for p in self.parts if isinstance(p, TextPart) and p.supervised)


@dataclass
class QABatch:
    """Samples packed into one sequence of at most the token budget. skipped: samples skipped (per reason)
    while this batch was assembled."""

    samples: list[QASample]
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return len(self.samples)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.samples)


def float_image(image: torch.Tensor) -> torch.Tensor:
    """uint8 image(s) -> float32 in [0, 1] (floats pass through)."""
    return image if image.is_floating_point() else image.float().div_(255.0)
