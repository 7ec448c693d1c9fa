"""Depth benchmark: every reader on a miniature dataset in its prepared layout; GT as predictions scores
perfectly; a known perturbation gives hand-computed numbers; the input-resize rule; clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from g2vlm.benchmarks.reconstruction.depth import evaluate_depth
from g2vlm.benchmarks.reconstruction.depth_datasets import (
    BONN_SEQUENCES,
    SINTEL_SEQUENCES,
    read_depth_dataset,
)
from g2vlm.benchmarks.reconstruction.files import read_sintel_dpt, write_sintel_dpt
from g2vlm.benchmarks.reconstruction.predictions import PredictionFolder
from g2vlm.inference import input_size, prepare_images

SIZE = (10, 12)  # H, W of every miniature frame
COLUMN_DEPTH_M = 2.0 + 0.125 * np.arange(SIZE[1])  # exact in Bonn (1/5000 m) and KITTI (1/256 m) units


def gt_depth(frame: int) -> np.ndarray:
    """2 m + 0.125 m per column; row 0 invalid (0): 108 valid pixels per frame."""
    depth = np.tile(COLUMN_DEPTH_M, (SIZE[0], 1)).astype(np.float32)
    depth[0] = 0.0
    return depth


def write_rgb(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*SIZE, 3), 128, dtype=np.uint8)).save(path)


def write_png16(path: Path, depth_m: np.ndarray, units_per_metre: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(depth_m * units_per_metre).astype(np.uint16)).save(path)


def make_nyu(root: Path, frames: int = 3) -> list[tuple[str | None, str]]:
    for i in range(frames):
        write_rgb(root / "nyu_images" / f"{i:04d}.png")
        (root / "nyu_depths").mkdir(parents=True, exist_ok=True)
        np.save(root / "nyu_depths" / f"{i:04d}.npy", gt_depth(i))
    return [(None, f"{i:04d}") for i in range(frames)]


def make_sintel(root: Path, frames: int = 2) -> list[tuple[str | None, str]]:
    names = []
    for seq in SINTEL_SEQUENCES:
        for i in range(1, frames + 1):
            write_rgb(root / "final" / seq / f"frame_{i:04d}.png")
            write_sintel_dpt(root / "depth" / seq / f"frame_{i:04d}.dpt", gt_depth(i))
            names.append((seq, f"frame_{i:04d}"))
    return names


def make_bonn(root: Path, frames: int = 2) -> list[tuple[str | None, str]]:
    names = []
    for seq in BONN_SEQUENCES:
        folder = root / f"rgbd_bonn_{seq}"
        for i in range(frames):  # RGB and depth time stamps differ, as in Bonn: paired by sorted order
            write_rgb(folder / "rgb_110" / f"{1548266469.1 + i:.6f}.png")
            write_png16(folder / "depth_110" / f"{1548266469.2 + i:.6f}.png", gt_depth(i), 5000)
            names.append((folder.name, f"{1548266469.1 + i:.6f}"))
    return names


def make_kitti(root: Path, frames: int = 2) -> list[tuple[str | None, str]]:
    names = []
    for drive in ("2011_09_26_drive_0002_sync_02", "2011_09_26_drive_0005_sync_03"):
        for i in range(frames):
            write_rgb(root / "image_gathered" / drive / f"{i:010d}.png")
            write_png16(root / "groundtruth_depth_gathered" / drive / f"{i:010d}.png", gt_depth(i), 256)
            names.append((drive, f"{i:010d}"))
    return names


MAKERS = {"nyu": make_nyu, "sintel": make_sintel, "bonn": make_bonn, "kitti": make_kitti}


def write_predictions(folder: Path, frames: list[tuple[str | None, str]], make, suffix: str = "") -> None:
    for index, (sequence, stem) in enumerate(frames):
        target = folder / sequence if sequence else folder
        target.mkdir(parents=True, exist_ok=True)
        np.save(target / f"{stem}{suffix}.npy", make(index, gt_depth(index)))


def perturbed(index: int, gt: np.ndarray) -> np.ndarray:
    """Half-scale GT (any per-image scale is aligned away) with 12 of the 108 valid pixels 1.5× too far."""
    pred = np.where(gt > 0, gt, 1.0).astype(np.float32) * 0.5
    pred[1, :] *= 1.5  # row 1: 12 pixels
    return pred


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_reader_gt_is_perfect_and_scaled_gt_too(tmp_path, name):
    frames = MAKERS[name](tmp_path / "data")
    dataset = read_depth_dataset(name, tmp_path / "data")
    assert dataset.num_frames == len(frames)
    assert [(s.name, f.stem) for s in dataset.sequences for f in s.frames] == frames
    np.testing.assert_allclose(dataset.sequences[0].frames[0].read_depth(), gt_depth(0), rtol=0, atol=1e-6)
    write_predictions(tmp_path / "gt", frames, lambda i, gt: gt)
    write_predictions(tmp_path / "scaled" / name, frames, lambda i, gt: gt * (0.5 + i), suffix="depth")  # official naming
    for folder in ("gt", "scaled"):
        record = evaluate_depth(dataset, "mono", predictions=PredictionFolder(tmp_path / folder, (name,)))
        assert record["abs_rel"] == pytest.approx(0.0, abs=1e-6)
        assert record["rmse"] == pytest.approx(0.0, abs=1e-5)
        assert record["delta_1"] == 1.0 and record["delta_3"] == 1.0
        assert record["n_images"] == len(frames) and record["n_pixels"] == 108 * len(frames)
        assert record["skipped_frames"] == 0


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_known_perturbation_gives_hand_computed_numbers(tmp_path, name):
    frames = MAKERS[name](tmp_path / "data")
    write_predictions(tmp_path / "pred", frames, perturbed)
    record = evaluate_depth(read_depth_dataset(name, tmp_path / "data"), "mono",
                            predictions=PredictionFolder(tmp_path / "pred", (name,)))
    # per image: L1 scale = 2 (96 of 108 pixels agree), so row 1 reads 1.5 g for g: relative error 0.5
    fraction = 12 / 108
    g = COLUMN_DEPTH_M
    assert record["abs_rel"] == pytest.approx(fraction * 0.5, rel=1e-5)
    assert record["sq_rel"] == pytest.approx(np.sum(0.25 * g) / 108, rel=1e-5)  # (0.5 g)^2 / g
    assert record["rmse"] == pytest.approx(math.sqrt(np.sum(0.25 * g**2) / 108), rel=1e-5)
    assert record["log_rmse"] == pytest.approx(math.sqrt(fraction) * math.log(1.5), rel=1e-5)
    assert record["delta_1"] == pytest.approx(1 - fraction, rel=1e-6)  # 1.5 > 1.25
    assert record["delta_2"] == 1.0  # 1.5 < 1.5625


def test_sintel_cap_drops_far_pixels_and_video_mode_aligns_each_sequence(tmp_path):
    frames = make_sintel(tmp_path / "data")
    far = gt_depth(0)
    far[5:, :] = 80.0  # at or beyond the 70 m cap: 60 pixels no longer count
    write_sintel_dpt(tmp_path / "data" / "depth" / "alley_2" / "frame_0001.dpt", far)
    dataset = read_depth_dataset("sintel", tmp_path / "data")
    assert (dataset.max_depth_m, dataset.clip_max_m) == (70.0, 70.0)

    def affine(i, gt):  # one scale for every frame of a sequence (the official Adam fit finds a scale, not a 3 m shift)
        return 0.25 * np.where(gt > 0, gt, 1.0)

    truth = {(s, f): read_sintel_dpt(tmp_path / "data" / "depth" / s / f"{f}.dpt") for s, f in frames}
    for sequence, stem in frames:
        (tmp_path / "pred" / sequence).mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "pred" / sequence / f"{stem}.npy", affine(0, truth[(sequence, stem)]))
    record = evaluate_depth(dataset, "video", predictions=PredictionFolder(tmp_path / "pred", ("sintel",)))
    assert record["n_pixels"] == 108 * len(frames) - 60
    assert record["abs_rel"] == pytest.approx(0.0, abs=1e-5)
    assert record["delta_1"] == 1.0
    for sequence, stem in frames:  # a 3 m shift on top: beyond what 1000 Adam steps of lr 1e-4 can fit
        np.save(tmp_path / "pred" / sequence / f"{stem}.npy", affine(0, truth[(sequence, stem)]) + 3.0)
    shifted = evaluate_depth(dataset, "video", predictions=PredictionFolder(tmp_path / "pred", ("sintel",)))
    assert shifted["abs_rel"] > 0.01


def test_synthetic_set_gt_predictions_are_perfect(tmp_path):
    dataset = read_depth_dataset("synthetic", None)
    assert dataset.num_frames == 200 and len(dataset.sequences) == 20 and dataset.load_width == 64
    frames = [(s.name, f.stem, f.read_depth()) for s in dataset.sequences[:2] for f in s.frames]
    for sequence, stem, depth in frames:
        (tmp_path / sequence).mkdir(exist_ok=True)
        np.save(tmp_path / sequence / f"{stem}.npy", depth * 3.0)
    small = type(dataset)(dataset.name, dataset.sequences[:2], dataset.load_width, None, None, True)
    record = evaluate_depth(small, "mono", predictions=PredictionFolder(tmp_path, ("synthetic",)))
    assert record["abs_rel"] == pytest.approx(0.0, abs=1e-6) and record["n_images"] == 20


def test_missing_prediction_fails_before_work_and_unreadable_frame_is_skipped(tmp_path):
    frames = make_nyu(tmp_path / "data")
    write_predictions(tmp_path / "pred", frames[:2], lambda i, gt: gt)
    dataset = read_depth_dataset("nyu-v2", tmp_path / "data")
    with pytest.raises(ValueError, match="1 of 3 frames have no prediction.*0002"):
        evaluate_depth(dataset, "mono", predictions=PredictionFolder(tmp_path / "pred", ("nyu",)))
    write_predictions(tmp_path / "pred", frames, lambda i, gt: gt)
    (tmp_path / "data" / "nyu_depths" / "0001.npy").write_bytes(b"not an array")
    record = evaluate_depth(dataset, "mono", predictions=PredictionFolder(tmp_path / "pred", ("nyu",)))
    assert record["skipped_frames"] == 1 and "0001.npy" in record["skipped_examples"][0]
    assert record["n_images"] == 2 and record["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="mono depth only"):
        evaluate_depth(dataset, "video", predictions=PredictionFolder(tmp_path / "pred", ("nyu",)))


def test_layout_errors_name_the_folder(tmp_path):
    make_kitti(tmp_path / "kitti")
    next((tmp_path / "kitti" / "groundtruth_depth_gathered").iterdir()).joinpath("0000000000.png").unlink()
    with pytest.raises(ValueError, match="2 images in .* but 1 depth maps"):
        read_depth_dataset("kitti", tmp_path / "kitti")
    with pytest.raises(ValueError, match="lacks final/<seq> for alley_2"):
        read_depth_dataset("sintel", tmp_path)
    with pytest.raises(ValueError, match="unknown depth dataset 'scannet'"):
        read_depth_dataset("scannet", tmp_path)
    with pytest.raises(ValueError, match="needs --root"):
        read_depth_dataset("bonn", None)


def test_sintel_dpt_round_trip_and_bad_tag(tmp_path):
    depth = np.arange(12, dtype=np.float32).reshape(3, 4) + 0.5
    path = write_sintel_dpt(tmp_path / "a.dpt", depth)
    np.testing.assert_array_equal(read_sintel_dpt(path), depth)
    path.write_bytes(b"\x00" * 12 + depth.tobytes())
    with pytest.raises(ValueError, match="not a Sintel .dpt file"):
        read_sintel_dpt(path)


def test_input_resize_rule_matches_the_official_loader():
    assert input_size(480, 640, 512, 14) == ((378, 512), (378, 504))  # the reference's worked example
    assert input_size(480, 640, 512, 8) == ((384, 512), (384, 512))
    assert input_size(436, 1024, 512, 14) == ((224, 512), (224, 504))  # Sintel: 436·0.5 = 218 -> 16·14
    images = prepare_images([np.zeros((480, 640, 3), np.uint8), np.full((240, 320, 3), 255, np.uint8)], 512, 14)
    assert images.shape == (2, 3, 378, 504)  # every frame takes the first frame's size
    assert float(images[1].min()) == pytest.approx(1.0)
