"""Inputs of `g2vlm reconstruct` and `g2vlm bench` that used to give wrong or late results: a 16-bit PNG (turned
white), and an --out that cannot be written (found only after the whole inference)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from g2vlm.inference import read_rgb
from g2vlm.tools import build_parser
from g2vlm.visual_io import read_ply


def run_tool(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    return args.run(args)


def grey16(height: int = 24, width: int = 32) -> np.ndarray:
    """A 16-bit ramp over the whole range, as a 16-bit camera or a depth-like export stores it."""
    return np.linspace(0, 65535, height * width).round().astype(np.uint16).reshape(height, width)


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped_to_white(tmp_path, tiny_checkpoint):
    values = grey16()
    (tmp_path / "images").mkdir()
    Image.fromarray(values).save(tmp_path / "images" / "grey16.png")
    expected = np.repeat(np.round(values / 257.0).astype(np.uint8)[..., None], 3, axis=2)
    np.testing.assert_array_equal(read_rgb(tmp_path / "images" / "grey16.png"), expected)

    assert run_tool("reconstruct", "--ckpt", str(tiny_checkpoint), "--images", str(tmp_path / "images"),
                    "--out", str(tmp_path / "out"), "--width", "32", "--device", "cpu") == 0
    _, colours = read_ply(tmp_path / "out" / "points.ply")
    assert len(colours) == values.size  # 32 wide at load width 32 (patch 4): no resize, one point per pixel
    np.testing.assert_array_equal(colours, expected.reshape(-1, 3))
    assert (colours == 255).all(axis=1).mean() < 0.01


def test_reconstruct_checks_out_before_the_inference(tmp_path, tiny_checkpoint, capsys):
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / "image.png")
    (tmp_path / "a-file").write_text("not a folder")
    assert run_tool("reconstruct", "--ckpt", str(tiny_checkpoint), "--images", str(tmp_path / "image.png"),
                    "--out", str(tmp_path / "a-file" / "out"), "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert f"--out {tmp_path / 'a-file' / 'out'}: cannot write there" in err
    assert "images at" not in err  # the inference did not run


@pytest.mark.parametrize("benchmark", ["depth", "pose", "pointmap"])
def test_bench_checks_out_before_the_evaluation(tmp_path, tiny_checkpoint, capsys, benchmark):
    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / "a-file" / "results.json"
    assert run_tool("bench", benchmark, "--ckpt", str(tiny_checkpoint), "--out", str(out), "--no-progress",
                    "--device", "cpu") == 2
    captured = capsys.readouterr()
    assert f"--out {out}: cannot write there" in captured.err
    assert "this run" not in captured.out  # no table: the evaluation did not run
