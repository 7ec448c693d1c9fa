"""`g2vlm reconstruct` on a tiny GeometryPretraining checkpoint and synthetic images: the PLY reads back with
one vertex per valid pixel and the input's colours, depth PNGs in mm, cameras JSON; clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from g2vlm.benchmarks.reconstruction.synthetic_set import synthetic_clips
from g2vlm.geometry.camera import unproject_depth
from g2vlm.reconstruct import fit_intrinsics
from g2vlm.tools import build_parser
from g2vlm.visual_io import read_ply


def run_tool(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    return args.run(args)


def write_synthetic_images(folder, views: int = 3, height: int = 24, width: int = 32) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    rgb = synthetic_clips(scenes=1, views=views, height=height, width=width)[0].rgb
    for index, image in enumerate(rgb):
        Image.fromarray(image).save(folder / f"view{index}.png")
    return rgb


def test_reconstruct_writes_ply_depth_and_cameras(tmp_path, tiny_checkpoint):
    rgb = write_synthetic_images(tmp_path / "images")
    assert run_tool("reconstruct", "--ckpt", str(tiny_checkpoint), "--images", str(tmp_path / "images"),
                    "--out", str(tmp_path / "out"), "--width", "32", "--device", "cpu") == 0
    points, colours = read_ply(tmp_path / "out" / "points.ply")
    depth_mm = np.stack([np.asarray(Image.open(tmp_path / "out" / "depth" / f"view{i}.png")) for i in range(3)])
    assert depth_mm.dtype == np.uint16 and depth_mm.shape == (3, 24, 32)  # 32 is a multiple of patch 4: no resize
    valid = depth_mm > 0
    assert len(points) == int(valid.sum()) == 3 * 24 * 32  # the model's depth is exp(.) > 0 everywhere
    assert np.isfinite(points).all()
    assert colours.dtype == np.uint8
    np.testing.assert_array_equal(colours, rgb.reshape(-1, 3))  # pixel colours, in frame/row/column order
    cameras = json.loads((tmp_path / "out" / "cameras.json").read_text())["cameras"]
    assert [c["image"].rsplit("/", 1)[-1] for c in cameras] == ["view0.png", "view1.png", "view2.png"]
    assert np.allclose(np.array(cameras[0]["camera_to_world"])[3], [0, 0, 0, 1])
    assert (tmp_path / "out" / "depth" / "view2_colour.png").is_file()


def test_fit_intrinsics_recovers_the_camera_of_unprojected_points():
    K = torch.tensor([[40.0, 0.0, 15.5], [0.0, 40.0, 11.5], [0.0, 0.0, 1.0]])
    depth = 1.0 + torch.rand(2, 24, 32)
    local_points = unproject_depth(depth, K.expand(2, 3, 3))
    torch.testing.assert_close(fit_intrinsics(local_points), K.expand(2, 3, 3), rtol=1e-5, atol=1e-4)


def test_clear_errors(tmp_path, tiny_checkpoint, capsys):
    (tmp_path / "empty").mkdir()
    assert run_tool("reconstruct", "--ckpt", str(tiny_checkpoint), "--images", str(tmp_path / "empty"),
                    "--out", str(tmp_path / "out")) == 2
    assert "empty: no images" in capsys.readouterr().err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"\x89PNG not really")
    assert run_tool("reconstruct", "--ckpt", str(tiny_checkpoint), "--images", str(tmp_path / "broken"),
                    "--out", str(tmp_path / "out")) == 2
    assert "a.png: not a decodable RGB image" in capsys.readouterr().err
    write_synthetic_images(tmp_path / "images", views=1)
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}, "hyper_parameters": {"lr": 1.0}}, tmp_path / "other.ckpt")
    assert run_tool("reconstruct", "--ckpt", str(tmp_path / "other.ckpt"), "--images", str(tmp_path / "images"),
                    "--out", str(tmp_path / "out")) == 2
    assert "not a g2vlm geometry checkpoint" in capsys.readouterr().err
    (tmp_path / "notes.ckpt").write_text("hello")
    assert run_tool("reconstruct", "--ckpt", str(tmp_path / "notes.ckpt"), "--images", str(tmp_path / "images"),
                    "--out", str(tmp_path / "out")) == 2
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_checkpoint_of_lightning_cli_with_moved_starting_weights_loads(tmp_path, tiny_checkpoint):
    """LightningCLI adds _class_path/_instantiator to the hyper-parameters; init_weights may name a file that is
    gone by evaluation time. Neither stops loading, and the checkpoint's own weights are the ones used."""
    from g2vlm.inference import load_geometry_model

    record = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    record["hyper_parameters"].update(_class_path="g2vlm.lit.geometry_pretraining.GeometryPretraining",
                                      _instantiator="lightning.pytorch.cli.instantiate_module",
                                      init_weights=str(tmp_path / "gone.ckpt"))
    torch.save(record, tmp_path / "cli.ckpt")
    model, _ = load_geometry_model(tmp_path / "cli.ckpt")
    name, value = next(iter(model.state_dict().items()))
    torch.testing.assert_close(value, record["state_dict"][f"model.{name}"])


def test_checkpoint_of_another_lightning_module_is_refused(tmp_path, tiny_checkpoint):
    from g2vlm.inference import CheckpointError, load_geometry_model

    record = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    record["hyper_parameters"]["_class_path"] = "g2vlm.lit.spatial_reasoning.SpatialReasoning"
    torch.save(record, tmp_path / "joint.ckpt")
    with pytest.raises(CheckpointError, match="a checkpoint of g2vlm.lit.spatial_reasoning.SpatialReasoning"):
        load_geometry_model(tmp_path / "joint.ckpt")
    del record["hyper_parameters"]["_class_path"]
    record["hyper_parameters"]["text_loss_weight"] = 1.0
    torch.save(record, tmp_path / "odd.ckpt")
    with pytest.raises(CheckpointError, match="hyper-parameters do not fit GeometryPretraining"):
        load_geometry_model(tmp_path / "odd.ckpt")


def test_reconstruct_does_not_import_the_benchmarks(tmp_path, tiny_checkpoint):
    """The library's inference (g2vlm.inference) serves `reconstruct`; the benchmarks build on the library, never the
    reverse. Run in a fresh interpreter through reconstruct's own parser (the `g2vlm` command lists every tool)."""
    import subprocess
    import sys

    write_synthetic_images(tmp_path / "images")
    code = f"""
import argparse, sys
from g2vlm import reconstruct
parser = argparse.ArgumentParser()
reconstruct.add_to(parser.add_subparsers())
args = parser.parse_args(["reconstruct", "--ckpt", {str(tiny_checkpoint)!r}, "--images", {str(tmp_path / "images")!r},
                          "--out", {str(tmp_path / "out")!r}, "--device", "cpu"])
assert args.run(args) == 0
print(sorted(name for name in sys.modules if name.startswith("g2vlm.benchmarks")))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
