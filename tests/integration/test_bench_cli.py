"""`g2vlm bench depth` as a user runs it: the synthetic benchmark on a checkpoint prints the table and writes
the JSON the issue specifies; without a checkpoint it says how to make one; saved predictions score alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import save_tiny_checkpoint

pytestmark = pytest.mark.integration

DEPTH_KEYS = {"abs_rel", "sq_rel", "rmse", "log_rmse", "delta_1", "delta_2", "delta_3", "n_images", "n_pixels",
              "images_per_s"}


def test_bench_depth_on_a_checkpoint_prints_the_table_and_writes_json(tmp_path, console_script):
    save_tiny_checkpoint(tmp_path / "tiny.ckpt")
    # --width 32: the tiny model sees 32×32 inputs (predictions are resized to the 64×64 GT), to keep this quick
    result = console_script("g2vlm", "bench", "depth", "--ckpt", "tiny.ckpt", "--device", "cpu", "--no-progress",
                            "--width", "32", "--batch-size", "50", "--out", "runs/bench/depth.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "synthetic: mono depth (official_irls_scale per image), 200 images" in result.stdout
    assert "this run (checkpoint)" in result.stdout
    record = json.loads((tmp_path / "runs" / "bench" / "depth.json").read_text())
    synthetic = record["depth"]["synthetic"]
    assert DEPTH_KEYS <= set(synthetic) and synthetic["n_images"] == 200 and synthetic["n_pixels"] == 200 * 64 * 64
    assert 0 < synthetic["abs_rel"] < 10 and synthetic["images_per_s"] > 0
    assert set(record["env"]) >= {"versions", "device", "date", "command"}
    assert record["env"]["command"].startswith("g2vlm bench depth --ckpt tiny.ckpt")
    assert synthetic["load_width"] == 32
    assert record["env"]["versions"]["torch"] == torch.__version__.split("+")[0]


def test_bench_depth_without_a_checkpoint_says_how_to_make_one(tmp_path, console_script):
    result = console_script("g2vlm", "bench", "depth", cwd=tmp_path)
    assert result.returncode == 2
    assert "no checkpoint at runs/geometry-demo/checkpoints/last.ckpt: run `make demo`" in result.stderr


def test_bench_depth_scores_saved_predictions_in_the_official_naming(tmp_path, console_script):
    """GT depth saved as <dir>/<dataset>/<seq>/<stem>depth.npy (the official scripts' naming) scores perfectly."""
    from g2vlm.benchmarks.reconstruction.synthetic_set import synthetic_clips

    for clip in synthetic_clips():
        (tmp_path / "pred" / "synthetic" / clip.name).mkdir(parents=True)
        for stem, depth in zip(clip.frame_stems, clip.depth_m):
            np.save(tmp_path / "pred" / "synthetic" / clip.name / f"{stem}depth.npy", 2.0 * depth)
    result = console_script("g2vlm", "bench", "depth", "--predictions", "pred", "--mode", "video", "--no-progress",
                            "--out", "depth.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    synthetic = json.loads((tmp_path / "depth.json").read_text())["depth"]["synthetic"]
    assert synthetic["abs_rel"] == pytest.approx(0.0, abs=1e-5) and synthetic["delta_1"] == 1.0
    assert synthetic["images_per_s"] is None and synthetic["n_images"] == 200


def test_checkpoint_paths_of_pose_pointmap_and_video_depth(tmp_path):
    """One synthetic sequence through each multi-view runner with a tiny checkpoint (32-wide inputs)."""
    import dataclasses

    from g2vlm.benchmarks.reconstruction.depth import evaluate_depth
    from g2vlm.benchmarks.reconstruction.depth_datasets import read_depth_dataset
    from g2vlm.benchmarks.reconstruction.pointmap import evaluate_pointmap
    from g2vlm.benchmarks.reconstruction.pointmap_datasets import read_pointmap_dataset
    from g2vlm.benchmarks.reconstruction.pose import evaluate_pose
    from g2vlm.benchmarks.reconstruction.pose_datasets import read_pose_dataset
    from g2vlm.inference import GeometryPredictor, load_geometry_model

    save_tiny_checkpoint(tmp_path / "tiny.ckpt")
    model, _ = load_geometry_model(tmp_path / "tiny.ckpt")
    pose = read_pose_dataset("synthetic", None)
    record = evaluate_pose(dataclasses.replace(pose, sequences=pose.sequences[:1]), GeometryPredictor(model, "cpu", 32))
    assert record["n_pairs"] == 45 and record["n_images"] == 10 and 0 <= record["AUC@30"] <= 100
    depth = read_depth_dataset("synthetic", None)
    record = evaluate_depth(dataclasses.replace(depth, sequences=depth.sequences[:2]), "video",
                            GeometryPredictor(model, "cpu", 32))
    assert record["n_images"] == 20 and record["n_pixels"] == 20 * 64 * 64 and record["abs_rel"] > 0
    points = read_pointmap_dataset("synthetic", None)
    one_view = dataclasses.replace(points, sequences=(dataclasses.replace(points.sequences[0],
                                                                          frames=points.sequences[0].frames[:1]),))
    record = evaluate_pointmap(one_view, GeometryPredictor(model, "cpu", 32))
    assert record["n_sequences"] == 1 and record["accuracy"] > 0 and 0 <= record["normal_consistency"] <= 1
