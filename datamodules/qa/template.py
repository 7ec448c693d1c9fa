"""The joint-training chat template (reference g2vlm-official.md §1.3) and the two copies of every image.

One QA sample becomes, in reading order:

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\nReconstruct the 3D scene.
    <|vision_start|> [all images through the geometric expert, clean] <|vision_end|>
    <|vision_start|> [image 1 through the Qwen ViT, markers drawn] <|vision_end|> ... (each image)
    QUESTION 1<|im_end|>\\n<|im_start|>assistant\\n   ANSWER 1<|im_end|>       <- answer tokens: the only labels
    \\n<|im_start|>user\\nQUESTION 2<|im_end|>\\n<|im_start|>assistant\\n   ANSWER 2<|im_end|>   (every turn kept)

Choices, against the official loader: every turn is kept (it drops all but the first); the geometry frames sit
in one span between a single pair of delimiters, because the geometric expert attends globally over all frames
of a sample (the paper's choice; the official per-frame delimiters only make sense with per-frame spans).
Samples with `reconstruct: false` (general VQA) have no "Reconstruct the 3D scene." and no geometry span.

Images with `<image>` placeholders in their first question (SPAR's video samples: `Frame-k: <image>` lines) are
read where the placeholders stand, between the text around them.

Images: the geometry copy is the largest centred box of the target's aspect ratio resized to `geometry_size` (e.g.
518x518), with intrinsics updated exactly (depth and K ride along for the geometry loss), as the official loader's
crop. The ViT copy is the whole image, markers drawn at its stored resolution (`qa.markers`), resized to `vit_size`
(e.g. 756x756) with PIL's bicubic filter and no crop, as the official joint-training loader does
(`QwenVL2ImageTransform`: every image resized to 768x768, which the Qwen2-VL processor snaps to 756x756): whatever a
question refers to stays in view, and SPAR's 0-1000 coordinates still match the image (aspect ratio is not kept).
`markers_on_geometry` also draws them on the geometry copy (not the official recipe: for models trained from
scratch, whose Qwen-style ViT has no absolute position to ground a marker with, see experiments/reasoning/demo.yaml).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from g2vlm.datamodules.augmentation import crop_box, crop_resize
from g2vlm.datamodules.qa import markers as qa_markers
from g2vlm.datamodules.qa.batch import GeometryPart, GeometryTargets, ImagePart, Part, QASample, TextPart
from g2vlm.datamodules.qa.schema import IMAGE_PLACEHOLDER, Marker, QASampleRecord
from g2vlm.datamodules.qa.tokenizer import ChatTokens
from g2vlm.datamodules.shards.decoding import decode_jpeg
from g2vlm.datamodules.shards.reader import valid_depth_mask
from g2vlm.datamodules.shards.schema import REASON_DECODE, SampleError, frame_member

SYSTEM_PROMPT = "You are a helpful assistant."
RECONSTRUCT_PROMPT = "Reconstruct the 3D scene."


def _opening(system_prompt: str) -> str:
    return f"<|im_start|>system\n{system_prompt}<|im_end|>\n<|im_start|>user\n"


def _question(turn: int, question: str) -> str:
    """Turn `turn`'s question up to where its answer starts (later turns reopen the user's part)."""
    opening = "" if turn == 0 else "\n<|im_start|>user\n"
    return f"{opening}{question}<|im_end|>\n<|im_start|>assistant\n"


def chat_text(turns: list[tuple[str, str]], system_prompt: str = SYSTEM_PROMPT, reconstruct: bool = True) -> str:
    """A sample's text in the template without its image spans: what a tokenizer for the template is trained on."""
    text = _opening(system_prompt) + (RECONSTRUCT_PROMPT if reconstruct else "")
    return text + "".join(f"{_question(turn, q)}{a}<|im_end|>" for turn, (q, a) in enumerate(turns))


class QATemplate:
    """Turns a validated QA sample record into a `QASample` (see the module docstring).

    geometry_size / vit_size: (H, W) of the two image copies, multiples of geometry_patch_size and of
    vit_patch_size · vit_merge_size; these also give each image's token count.
    """

    def __init__(self, tokenizer, geometry_size: tuple[int, int], vit_size: tuple[int, int],
                 geometry_patch_size: int = 14, vit_patch_size: int = 14, vit_merge_size: int = 2,
                 draw_markers: bool = True, system_prompt: str = SYSTEM_PROMPT, markers_on_geometry: bool = False):
        self.tokenizer = tokenizer
        self.tokens = ChatTokens.of(tokenizer)
        self.geometry_size = tuple(int(v) for v in geometry_size)
        self.vit_size = tuple(int(v) for v in vit_size)
        vit_unit = vit_patch_size * vit_merge_size
        if any(v % geometry_patch_size for v in self.geometry_size) or any(v % vit_unit for v in self.vit_size):
            raise ValueError(f"QATemplate: geometry_size {self.geometry_size} must be a multiple of "
                             f"{geometry_patch_size} and vit_size {self.vit_size} of {vit_unit}")
        self.geometry_tokens_per_image = (self.geometry_size[0] // geometry_patch_size) * (self.geometry_size[1] // geometry_patch_size)
        self.vit_tokens_per_image = (self.vit_size[0] // vit_unit) * (self.vit_size[1] // vit_unit)
        self.draw_markers = draw_markers
        self.markers_on_geometry = markers_on_geometry
        self.system_prompt = system_prompt

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def build(self, record: QASampleRecord) -> QASample:
        """Decode, copy, mark and tokenise one sample. Raises SampleError (decode, bad_depth)."""
        qa = record.qa
        images, frames, geometry = self._images(record)
        t = self.tokens
        parts: list[Part] = []
        head = _opening(self.system_prompt)
        if qa.reconstruct:
            parts += [TextPart(self._ids(self.encode(head + RECONSTRUCT_PROMPT) + [t.vision_start])),
                      GeometryPart(frames), TextPart(self._ids([t.vision_end]))]
        else:
            parts.append(TextPart(self._ids(self.encode(head))))
        first_question = qa.turns[0][0]
        # text before each image: "" (images first) or the first question's text before its k-th placeholder
        before = first_question.split(IMAGE_PLACEHOLDER) if IMAGE_PLACEHOLDER in first_question else None
        for index, image in enumerate(images):
            if before is not None and before[index]:
                parts.append(TextPart(self._ids(self.encode(before[index]))))
            parts += [TextPart(self._ids([t.vision_start])), ImagePart(self._vit_copy(image, qa.markers, index)),
                      TextPart(self._ids([t.vision_end]))]
        prompt_parts = 0
        for turn, (question, answer) in enumerate(qa.turns):
            if turn == 0 and before is not None:
                question = before[-1]
            parts.append(TextPart(self._ids(self.encode(_question(turn, question)))))
            prompt_parts = len(parts)
            parts.append(TextPart(self._ids(self.encode(answer) + [t.im_end]), supervised=True))
        text_tokens = sum(int(p.ids.numel()) for p in parts if isinstance(p, TextPart))
        num_tokens = (text_tokens + len(images) * self.vit_tokens_per_image
                      + (len(images) * self.geometry_tokens_per_image if qa.reconstruct else 0))
        return QASample(record.key, qa.task, qa.answer_type, parts, prompt_parts, qa.final_answer, num_tokens,
                        geometry if qa.reconstruct else None)

    @staticmethod
    def _ids(ids: list[int]) -> torch.Tensor:
        return torch.tensor(ids, dtype=torch.long)

    def _images(self, record: QASampleRecord) -> tuple[list[np.ndarray], torch.Tensor, GeometryTargets | None]:
        """Decoded images (H, W, 3) uint8; the geometry copy (N, 3, h, w) uint8; its 3D targets (with meta)."""
        target = self.geometry_size
        if record.meta is not None:
            clip = record.clip().decode()
            images = list(clip.images)
            frames = torch.from_numpy(np.stack(self._geometry_images(images, record))).permute(0, 3, 1, 2)
            depth_m = torch.from_numpy(clip.depth_m) if clip.depth_m is not None else None
            K = torch.from_numpy(clip.K)
            box = crop_box(frames.shape[-2:], target, 1.0, None, (float(K[0, 0, 2]), float(K[0, 1, 2])))
            frames, depth_m, _, K = crop_resize(frames, depth_m, None, K, box, target)
            if depth_m is None:
                depth_m = torch.zeros(len(images), *target)
                valid = torch.zeros(len(images), *target, dtype=torch.bool)
            else:
                valid = torch.from_numpy(valid_depth_mask(depth_m.numpy(), record.meta.z_far))
                depth_m = depth_m.masked_fill(~valid, 0.0)
            geometry = GeometryTargets(depth_m.float(), valid, K.float(),
                                       torch.from_numpy(clip.camera_to_world).float(), record.meta.has_depth,
                                       record.meta.dataset)
        else:
            images = [decode_jpeg(record.members[frame_member(i, "jpg")], f"{record.key}.{frame_member(i, 'jpg')}")
                      for i in range(record.qa.num_images)]
            frames = torch.stack([self._resized(image, target) for image in self._geometry_images(images, record)])
            geometry = None
        return images, frames.contiguous(), geometry

    def _geometry_images(self, images: list[np.ndarray], record: QASampleRecord) -> list[np.ndarray]:
        if not self.markers_on_geometry:
            return images
        return [qa_markers.draw_markers(image, [m for m in record.qa.markers if m.image == i])
                for i, image in enumerate(images)]

    @staticmethod
    def _resized(image: np.ndarray, target: tuple[int, int]) -> torch.Tensor:
        """(H, W, 3) uint8 -> (3, h, w) uint8: centred box of the target's aspect, resized."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise SampleError(REASON_DECODE, f"image of shape {image.shape} is not RGB")
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]  # a writable copy
        box = crop_box(pixels.shape[-2:], target)
        resized, _, _, _ = crop_resize(pixels, None, None, torch.eye(3)[None], box, target)
        return resized[0].contiguous()

    def _vit_copy(self, image: np.ndarray, markers: list[Marker], index: int) -> torch.Tensor:
        """(H, W, 3) uint8 -> (3, h, w) uint8: markers drawn, the whole image resized (bicubic) to vit_size."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise SampleError(REASON_DECODE, f"image of shape {image.shape} is not RGB")
        if self.draw_markers:
            image = qa_markers.draw_markers(image, [m for m in markers if m.image == index])
        height, width = self.vit_size
        resized = Image.fromarray(np.ascontiguousarray(image)).resize((width, height), Image.BICUBIC)
        return torch.from_numpy(np.array(resized)).permute(2, 0, 1).contiguous()
