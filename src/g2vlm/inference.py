"""Models for inference: loading a checkpoint of either stage, reading images, and running the geometry path the
way the official evaluation does. Used by `g2vlm reconstruct`, `g2vlm ask`, the benchmarks and the demos.

- `load_geometry_model`: a G2VLM from a GeometryPretraining checkpoint or a model file of `g2vlm import-weights`;
  `GeometryPredictor` runs it (bf16 autocast on CUDA, timed) on images prepared by the input resize rule below.
- `load_reasoning_checkpoint`: a SpatialReasoning module (tokenizer included) from its checkpoint or a model file;
  `template_for` gives the chat template it was trained with.
- `read_rgb`: an image file as (H, W, 3) uint8; a missing or undecodable file raises `FrameError` naming it.

Input resize rule (reference g2vlm-official.md §1.8, `load_and_resize14_ori`), for a model of patch size p
and a load width Wl (512 in every published protocol):
1. every image of one forward is resized with PIL LANCZOS to (Wl, Hl), Hl = round(H · Wl / W / p) · p, where
   (H, W) is the size of the *first* image of the forward;
2. then bilinearly (antialiased) to (⌊Hl / p⌋ · p, ⌊Wl / p⌋ · p), the patch grid.
For the official p = 14 and a 640×480 image this is 512×378 and then 504×378. For other patch sizes (the
suite's `tiny` p = 4 and `small` p = 8) the same rule applies with their p: 512 is already a multiple of
4 and 8, so the model sees 512×384.

Checkpoints are read as tensors and plain containers only (`g2vlm.safe_load`): loading runs no code from them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from g2vlm.datamodules.shards.decoding import decode_jpeg
from g2vlm.datamodules.shards.schema import SampleError
from g2vlm.safe_load import CheckpointError, load_checkpoint_file

if TYPE_CHECKING:
    from g2vlm.datamodules.qa.template import QATemplate
    from g2vlm.lit.spatial_reasoning import SpatialReasoning

PROTOCOL_LOAD_WIDTH = 512


class FrameError(ValueError):
    """A frame whose file is missing or unreadable (the message names the file)."""


def read_file_bytes(path: str | Path) -> bytes:
    """The bytes of an input file; an unreadable one raises FrameError naming it."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise FrameError(f"{path}: cannot read ({type(error).__name__}: {error.strerror or error})") from None


def read_rgb(path: str | Path) -> np.ndarray:
    """Any 8-bit image file (PNG, JPEG, ...; 16-bit grey scaled to 8 bits) -> (H, W, 3) uint8 RGB."""
    try:
        return decode_jpeg(read_file_bytes(path), member=str(path))
    except SampleError as error:
        raise FrameError(str(error)) from None


def input_size(height: int, width: int, load_width: int, patch_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((Hl, Wl) of the LANCZOS resize, (H_in, W_in) the model sees) for an image of height × width."""
    if height <= 0 or width <= 0:
        raise ValueError(f"input_size: image size must be positive, got {height}×{width}")
    if load_width < patch_size:
        raise ValueError(f"input_size: load width {load_width} is below the patch size {patch_size}")
    load_height = max(patch_size, round(height * load_width / width / patch_size) * patch_size)
    return (load_height, load_width), (load_height // patch_size * patch_size, load_width // patch_size * patch_size)


def prepare_images(rgbs: list[np.ndarray], load_width: int, patch_size: int) -> torch.Tensor:
    """RGB frames (H_i, W_i, 3) uint8 -> (N, 3, H_in, W_in) float32 in [0, 1], sized by the first frame."""
    if not rgbs:
        raise ValueError("prepare_images: no images")
    (load_height, load_width), model_size = input_size(*rgbs[0].shape[:2], load_width, patch_size)
    frames = []
    for rgb in rgbs:
        image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB")
        if image.size != (load_width, load_height):
            image = image.resize((load_width, load_height), Image.Resampling.LANCZOS)
        frames.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
    images = torch.stack(frames).to(torch.float32) / 255.0
    if images.shape[-2:] != model_size:
        images = F.interpolate(images, size=model_size, mode="bilinear", align_corners=False, antialias=True)
    return images


def read_checkpoint_record(path: str | Path) -> dict:
    """The checkpoint dictionary (tensors memory-mapped) after checking it is a GeometryPretraining checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file (run `g2vlm demo` to make runs/geometry-demo/checkpoints/last.ckpt)")
    record = load_checkpoint_file(path, mmap=True)  # weights_only: runs no code from the file (g2vlm.safe_load)
    hparams = record.get("hyper_parameters") if isinstance(record, dict) else None
    state = record.get("state_dict") if isinstance(record, dict) else None
    if not isinstance(hparams, dict) or "preset" not in hparams or not isinstance(state, dict) \
            or not any(key.startswith("model.heads.") for key in state):
        found = sorted(record)[:8] if isinstance(record, dict) else type(record).__name__
        raise CheckpointError(
            f"{path}: not a g2vlm geometry checkpoint (expected a Lightning checkpoint of "
            f"g2vlm.lit.geometry_pretraining.GeometryPretraining: hyper_parameters.preset and model.heads.* weights; "
            f"found {found})"
        )
    return record


def training_image_size(record: dict) -> tuple[int, int] | None:
    """(H, W) of the validation images the checkpoint's datamodule used, when the checkpoint records it."""
    size = (record.get("datamodule_hyper_parameters") or {}).get("image_size")
    return (int(size[0]), int(size[1])) if size is not None and len(size) == 2 else None


def module_from_hyperparameters(path: Path, cls: type, hparams: dict, starting_weights: tuple[str, ...]):
    """`cls` built from a checkpoint's hyper-parameters, without LightningCLI's bookkeeping (`_class_path`, ...)
    and with the starting-weight arguments unset: the checkpoint's own weights replace them (and they may have
    moved). Hyper-parameters that do not fit `cls` raise CheckpointError naming the file."""
    arguments = {key: value for key, value in hparams.items() if not key.startswith("_")}
    arguments.update(dict.fromkeys(starting_weights))
    try:
        return cls(**arguments)
    except TypeError as error:
        raise CheckpointError(f"{path}: hyper-parameters do not fit {cls.__name__} ({error})") from None


def load_geometry_model(path: str | Path, device: str | torch.device = "cpu"):
    """G2VLM (eval mode, on `device`) and the checkpoint record, from a GeometryPretraining checkpoint or a model
    file (.safetensors) written by `g2vlm import-weights` (e.g. the imported official G²VLM, whose config selects
    the official input format)."""
    from g2vlm.lit.geometry_pretraining import GeometryPretraining

    if Path(path).suffix == ".safetensors":
        from g2vlm.model.weights import WeightLoadingError, load_model, model_record

        try:
            return load_model(path).eval().to(device), model_record(path)
        except (ValueError, WeightLoadingError) as error:
            raise CheckpointError(f"{path}: not a g2vlm model file ({error})") from None
    record = read_checkpoint_record(path)
    class_path = record["hyper_parameters"].get("_class_path", "g2vlm.lit.geometry_pretraining.GeometryPretraining")
    if not class_path.endswith(".GeometryPretraining"):
        raise CheckpointError(f"{path}: a checkpoint of {class_path}, not of g2vlm.lit.geometry_pretraining.GeometryPretraining")
    module = module_from_hyperparameters(Path(path), GeometryPretraining, record["hyper_parameters"], ("init_weights",))
    module.configure_model()
    try:
        module.load_state_dict(record["state_dict"], strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit the preset {record['hyper_parameters']['preset']!r} ({error})") from None
    return module.model.eval().to(device), record


class GeometryPredictor:
    """A model plus the protocol's preprocessing; accumulates the seconds spent in forward passes.

    `predict(images (B, N, 3, H, W))` -> GeometryOutput on the CPU. On CUDA the trunk runs under bf16 autocast
    (the heads run in fp32 regardless, as the model does).
    """

    def __init__(self, model, device: str | torch.device, load_width: int) -> None:
        self.model = model
        self.device = torch.device(device)
        self.load_width = load_width
        self.patch_size = model.config.dino.patch_size
        self.seconds = 0.0
        self.frames = 0

    def prepare(self, rgbs: list[np.ndarray]) -> torch.Tensor:
        return prepare_images(rgbs, self.load_width, self.patch_size)

    @torch.no_grad()
    def predict(self, images: torch.Tensor):
        from g2vlm.model.outputs import GeometryOutput

        images = images.to(self.device, non_blocking=True)
        self._synchronize()
        start = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            output = self.model.forward_geometry(images)
        self._synchronize()
        self.seconds += time.perf_counter() - start
        self.frames += images.shape[0] * images.shape[1]
        return GeometryOutput(**{name: None if value is None else value.float().cpu()
                                 for name, value in vars(output).items()})

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def load_reasoning_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                              tokenizer: str | None = None) -> tuple[SpatialReasoning, dict]:
    """(SpatialReasoning in eval mode on `device`, the checkpoint record) from a Lightning checkpoint or a model
    file (.safetensors of `g2vlm import-weights`, whose record gives the tokenizer folder and image sizes); weights
    are loaded strictly and the starting-weight arguments it was trained with are not read again. `tokenizer`
    replaces the recorded tokenizer folder (a relative path is relative to where training ran)."""
    from g2vlm.lit.spatial_reasoning import SpatialReasoning
    from g2vlm.model.weights import config_to_dict, load_model_config, model_record

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":  # a model file of `g2vlm import-weights` (e.g. the imported official G²VLM)
        record = model_record(path)
        tokenizer = tokenizer or record["tokenizer"]
        if tokenizer is None:
            raise ValueError(f"{path}: the model file records no tokenizer folder; give --tokenizer")
        config = config_to_dict(load_model_config(path))
        module = SpatialReasoning(tokenizer, model_overrides=config, variant="ce_only", init_weights=str(path))
        module.configure_model()
        return module.eval().to(device), record
    record = load_checkpoint_file(path)  # weights_only: runs no code from the file (g2vlm.safe_load)
    hparams = record.get("hyper_parameters") if isinstance(record, dict) else None
    if not isinstance(hparams, dict) or "tokenizer" not in hparams or "variant" not in hparams:
        raise ValueError(f"{path}: not a SpatialReasoning checkpoint (no tokenizer/variant hyper-parameters)")
    if tokenizer is not None:
        hparams = {**hparams, "tokenizer": tokenizer}
    module = module_from_hyperparameters(path, SpatialReasoning, hparams, ("init_weights", "geometry_checkpoint", "qwen2vl"))
    module.configure_model()
    module.load_state_dict(record["state_dict"], strict=True)
    return module.eval().to(device), record


def template_for(module: SpatialReasoning, record: dict, geometry_size: tuple[int, int] | None = None,
                 vit_size: tuple[int, int] | None = None) -> QATemplate:
    """The chat template a checkpoint was trained with: image sizes and markers from its QADataModule's
    hyper-parameters (or the sizes given), patching from its model."""
    from g2vlm.datamodules.qa.template import QATemplate

    data = record.get("datamodule_hyper_parameters") or {}
    geometry_size = geometry_size or data.get("geometry_size")
    vit_size = vit_size or data.get("vit_size")
    if geometry_size is None or vit_size is None:
        raise ValueError("template_for: the checkpoint records no QADataModule image sizes; give --geometry-size "
                         "and --vit-size")
    config = module.model_config
    return QATemplate(module.tokenizer, tuple(geometry_size), tuple(vit_size), config.dino.patch_size,
                      config.vit.patch_size, config.vit.spatial_merge_size, draw_markers=data.get("draw_markers", True),
                      markers_on_geometry=data.get("markers_on_geometry", False))
