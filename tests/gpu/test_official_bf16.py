"""The imported official checkpoint on a GPU (gpu marker; skipped without CUDA): the benchmarks' predictor runs DINO
and the trunk under bf16 autocast, as the official evaluation does, and stays within bf16 rounding of the official
fp32 outputs (tests/fixtures/official_g2vlm_tiny.md); the fp32 run on the GPU matches them to 1e-4."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from g2vlm.inference import GeometryPredictor
from g2vlm.model.weights import load_model
from g2vlm.tools import main
from tests.fixtures.official_g2vlm import (
    TINY_DINO,
    TINY_TEXT,
    TINY_VIT,
    official_images,
    official_key_shapes,
    official_state,
    write_official_folder,
)

pytestmark = pytest.mark.gpu
EXPECTED = Path(__file__).resolve().parents[1] / "fixtures" / "official_g2vlm_tiny_outputs.safetensors"


def test_official_format_on_cuda_bf16_and_fp32(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # true fp32 convolutions (the DINO patch embed)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    folder = write_official_folder(tmp_path / "official", official_state(official_key_shapes(TINY_TEXT, TINY_VIT, TINY_DINO)))
    with pytest.raises(SystemExit) as exit_info:
        main(["import-weights", "--official", str(folder), "--out", str(tmp_path / "official.safetensors")])
    assert exit_info.value.code == 0
    model = load_model(tmp_path / "official.safetensors").eval().cuda()
    expected = load_file(EXPECTED)
    images = official_images()[None]
    bf16 = GeometryPredictor(model, "cuda", load_width=42).predict(images)  # autocast bf16 on CUDA
    with torch.no_grad():
        fp32 = model.forward_geometry(images.cuda())
    for name in ("depth", "world_points", "camera_to_world", "global_points"):
        scale = expected[name].abs().max()
        assert float((getattr(bf16, name)[0] - expected[name]).abs().max() / scale) < 5e-2, name
        assert float((getattr(fp32, name)[0].cpu() - expected[name]).abs().max() / scale) < 1e-4, name
