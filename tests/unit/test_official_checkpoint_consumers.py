"""An imported official checkpoint is accepted by every consumer: both LightningModules (init_weights),
`g2vlm ask`, `g2vlm bench spar`, `make bench-depth`; and it keeps the official input format.

The checkpoint: official key names (tests/fixtures/official_g2vlm.py) at our `tiny` preset's sizes, one
model.safetensors without config files, imported with `--preset tiny` (the official-size tiny checkpoint and the
output parity are in test_model_official_parity.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from g2vlm.datamodules.shards.decoding import encode_jpeg
from g2vlm.datamodules.synthetic.qa import write_synthetic_qa_shards
from g2vlm.lit.geometry_pretraining import GeometryPretraining
from g2vlm.lit.spatial_reasoning import SpatialReasoning
from g2vlm.model.weights import load_model, model_record
from g2vlm.tools import main
from tests.conftest import REPO_ROOT, VENV_BIN
from tests.fixtures.official_g2vlm import (
    TINY_PRESET_DINO,
    TINY_PRESET_HEADS,
    TINY_PRESET_TEXT,
    TINY_PRESET_VIT,
    official_key_shapes,
    official_state,
    write_official_folder,
)


def _g2vlm(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, Path]:
    """(imported checkpoint, the official folder with its tokenizer)."""
    root = tmp_path_factory.mktemp("official-consumers")
    state = official_state(official_key_shapes(TINY_PRESET_TEXT, TINY_PRESET_VIT, TINY_PRESET_DINO,
                                               heads=TINY_PRESET_HEADS))
    folder = write_official_folder(root / "official", state, configs=False)
    assert _g2vlm("import-weights", "--official", str(folder), "--preset", "tiny", "--out",
                  str(root / "official.safetensors")) == 0
    return root / "official.safetensors", folder


def test_both_lightning_modules_start_from_it_in_the_official_format(imported):
    checkpoint, folder = imported
    weights = load_model(checkpoint).state_dict()
    geometry = GeometryPretraining(preset="tiny", init_weights=str(checkpoint))
    geometry.configure_model()
    reasoning = SpatialReasoning(str(folder), preset="tiny", init_weights=str(checkpoint))
    reasoning.configure_model()
    for module in (geometry, reasoning):
        assert module.model.config.official_input is not None  # remembered from the file, not the preset's clean one
        assert module.model_config == module.model.config
        state = module.model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in weights.items())
    out = geometry(torch.rand(1, 2, 3, 16, 16))
    (out.depth.mean() + out.global_points.abs().mean()).backward()
    assert geometry.model.trunk.layers[0].geometric.q_proj.weight.grad is not None
    assert geometry.measure_flops_per_batch((2, 2, 3, 16, 16)) > 0  # counted on the meta device, official format


def test_ask_answers_with_it(imported, tmp_path, capsys):
    checkpoint, _ = imported
    record = model_record(checkpoint)
    assert record["datamodule_hyper_parameters"] == {"geometry_size": [112, 148], "vit_size": [216, 216]}
    assert Path(record["tokenizer"]).is_dir()
    rng = np.random.default_rng(0)
    (tmp_path / "a.jpg").write_bytes(encode_jpeg(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)))
    assert _g2vlm("ask", "--ckpt", str(checkpoint), "--images", str(tmp_path / "a.jpg"), "--question",
                  "How far is it?", "--max-new-tokens", "3", "--device", "cpu") == 0
    assert capsys.readouterr().out.strip()


def test_bench_spar_answers_with_it(imported, tmp_path, capsys):
    checkpoint, _ = imported
    write_synthetic_qa_shards(tmp_path / "qa", scenes=1, views=2, height=32, width=32, questions_per_scene=2,
                              tasks=("object_depth",))
    assert _g2vlm("bench", "spar", "--ckpt", str(checkpoint), "--data", str(tmp_path / "qa"), "--max-new-tokens", "3",
                  "--device", "cpu", "--out", str(tmp_path / "spar.json")) == 0
    assert json.loads((tmp_path / "spar.json").read_text())["spar"]["n_questions"] == 2


@pytest.mark.slow
def test_bench_pose_and_pointmap_run_on_it(imported, tmp_path, capsys):
    checkpoint, _ = imported
    for benchmark in ("pose", "pointmap"):
        out = tmp_path / f"{benchmark}.json"
        assert _g2vlm("bench", benchmark, "--dataset", "synthetic", "--ckpt", str(checkpoint), "--device", "cpu",
                      "--out", str(out)) == 0
        assert "this run (checkpoint)" in capsys.readouterr().out
        assert "synthetic" in out.read_text()


@pytest.mark.slow
def test_make_bench_depth_runs_on_it(imported, tmp_path):
    checkpoint, _ = imported
    out = tmp_path / "depth.json"
    # -o: never (re)install the venv from a test
    result = subprocess.run(["make", "-o", f"{VENV_BIN.parent}/.installed", f"BIN={VENV_BIN}",
                             f"STAMP={VENV_BIN.parent}/.installed", "bench-depth", f"CKPT={checkpoint}", f"OUT={out}"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Abs Rel" in result.stdout
    record = json.loads(out.read_text())
    assert "synthetic" in json.dumps(record)
