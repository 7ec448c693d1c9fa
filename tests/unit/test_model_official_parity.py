"""The imported official checkpoint reproduces the OFFICIAL model's outputs, and `g2vlm reconstruct` runs on it
(the other consumers: test_official_checkpoint_consumers.py).

Expected values: tests/fixtures/official_g2vlm_tiny_outputs.safetensors, the official code's own outputs on the
deterministic tiny checkpoint (how they were produced: tests/fixtures/official_g2vlm_tiny.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from g2vlm.model.g2vlm import G2VLM
from g2vlm.model.weights import load_model
from g2vlm.tools import main
from tests.conftest import run_console_script
from tests.fixtures.official_g2vlm import (
    TINY_DINO,
    TINY_TEXT,
    TINY_VIT,
    official_images,
    official_key_shapes,
    official_state,
    write_official_folder,
)

EXPECTED = Path(__file__).resolve().parents[1] / "fixtures" / "official_g2vlm_tiny_outputs.safetensors"
OUTPUTS = ("depth", "world_points", "camera_to_world", "global_points")


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    """The tiny official checkpoint, imported with `g2vlm import-weights --official` (in-process)."""
    root = tmp_path_factory.mktemp("official-parity")
    folder = write_official_folder(root / "G2VLM-tiny", official_state(official_key_shapes(TINY_TEXT, TINY_VIT, TINY_DINO)))
    with pytest.raises(SystemExit) as exit_info:
        main(["import-weights", "--official", str(folder), "--out", str(root / "official.safetensors")])
    assert exit_info.value.code == 0
    return root / "official.safetensors"


def _relative_errors(model: G2VLM) -> dict[str, float]:
    """max |ours - official| / max |official| per output."""
    expected = load_file(EXPECTED)
    with torch.no_grad():
        out = model.forward_geometry(official_images()[None])
    return {name: float((getattr(out, name)[0] - expected[name]).abs().max() / expected[name].abs().max())
            for name in OUTPUTS}


def test_imported_official_weights_reproduce_the_official_outputs(imported):
    model = load_model(imported).eval()
    errors = _relative_errors(model)
    assert all(error <= 1e-4 for error in errors.values()), errors
    expected = load_file(EXPECTED)["depth"]
    with torch.no_grad():
        depth = model.forward_geometry(official_images()[None]).depth[0]
    assert float(((depth - expected).abs() / expected).max()) <= 1e-4  # every pixel, not just the largest


def test_the_input_format_switch_is_real(imported):
    """The same weights without the official format (clean), or with per-frame DINO windows, miss the official
    outputs by far more than the tolerance: each part of the format matters."""
    model = load_model(imported).eval()
    official = model.config.official_input
    for config in (model.config.replace(official_input=None),
                   model.config.replace(official_input=official.__class__(official.prompt_ids, official.vision_start_id,
                                                                          official.vision_end_id, "frame"))):
        other = G2VLM(config).eval()
        other.load_state_dict(model.state_dict())
        errors = _relative_errors(other)
        assert max(errors.values()) > 1e-2, errors


def test_reconstruct_runs_on_the_imported_checkpoint(imported, tmp_path):
    images = tmp_path / "photos"
    images.mkdir()
    generator = np.random.default_rng(0)
    for index in range(2):
        Image.fromarray(generator.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(images / f"view{index}.png")
    result = run_console_script("g2vlm", "reconstruct", "--ckpt", str(imported), "--images", str(images),
                                "--out", str(tmp_path / "recon"), "--width", "84", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cameras = json.loads((tmp_path / "recon" / "cameras.json").read_text())["cameras"]
    assert [(c["width"], c["height"]) for c in cameras] == [(84, 56), (84, 56)]  # the patch-14 grid of the model
    depth = np.asarray(Image.open(tmp_path / "recon" / "depth" / "view0.png"))
    assert depth.shape == (56, 84) and (depth > 0).any()
    assert (tmp_path / "recon" / "points.ply").stat().st_size > 0
