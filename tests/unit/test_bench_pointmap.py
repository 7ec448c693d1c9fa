"""Point-map benchmark: 7-Scenes / NRGBD / ETH3D / DTU readers on miniature prepared layouts (a similarity
transform of the GT scores perfectly, camera conventions and invalid-depth rules included), the GT grid's
exact intrinsics, DTU's mask erosion, and the shipped frame maps."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from g2vlm.benchmarks.reconstruction import frame_maps
from g2vlm.benchmarks.reconstruction.pointmap import evaluate_pointmap
from g2vlm.benchmarks.reconstruction.pointmap_datasets import (
    NRGBD_K,
    SEVEN_SCENES_K,
    PointMapView,
    erode,
    gt_points,
    read_pointmap_dataset,
)
from g2vlm.benchmarks.reconstruction.predictions import PredictionFolder
from tests.fixtures.camera_path import camera_to_world

H, W = 12, 16


def depth_m(frame: int) -> np.ndarray:
    """A curved surface 1.5-2.5 m away (integer millimetres, so PNG mm encodings are exact)."""
    v, u = np.mgrid[0:H, 0:W]
    return np.round(1000 * (2.0 + 0.3 * np.sin(u / 3 + frame) + 0.2 * np.cos(v / 4))) / 1000


def world_points(depth: np.ndarray, K: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Unprojection written out: X_cam = ((u - cx) z / fx, (v - cy) z / fy, z), world = R X_cam + t."""
    v, u = np.mgrid[0:depth.shape[0], 0:depth.shape[1]]
    K = np.asarray(K)
    camera = np.stack([(u - K[0, 2]) * depth / K[0, 0], (v - K[1, 2]) * depth / K[1, 1], depth], axis=-1)
    return camera @ pose[:3, :3].T + pose[:3, 3]


def similarity(points: np.ndarray) -> np.ndarray:
    angle = math.radians(40)
    R = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    return 1.7 * points @ R.T + np.array([0.5, -2.0, 3.0])


def write_rgb(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(path)


def write_png16(path, values) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, dtype=np.uint16)).save(path)


@pytest.fixture
def generated_maps(monkeypatch, tmp_path):
    """No shipped maps: the stride rule runs on the miniature sequences' lengths."""
    monkeypatch.setattr(frame_maps, "MAP_DIR", tmp_path / "no-maps")


def score_similar_gt(tmp_path, dataset, truth) -> dict:
    """Write Sim(3)(GT world points) as predictions and score them (GT at its native grid)."""
    for sequence in dataset.sequences:
        for frame in sequence.frames:
            (tmp_path / "pred" / sequence.name).mkdir(parents=True, exist_ok=True)
            np.save(tmp_path / "pred" / sequence.name / f"{frame.stem}.npy",
                    similarity(truth[(sequence.name, frame.stem)]).astype(np.float32))
    dataset = dataclasses.replace(dataset, gt_width=None)
    return evaluate_pointmap(dataset, predictions=PredictionFolder(tmp_path / "pred", (dataset.name,)))


def assert_perfect(record: dict, sequences: int, images: int, tolerance: float = 1e-4) -> None:
    """tolerance: float32 rounding at the scene's scale (metres; DTU is in millimetres)."""
    assert record["n_sequences"] == sequences and record["n_images"] == images and record["skipped_frames"] == 0
    assert record["accuracy"] == pytest.approx(0.0, abs=tolerance)
    assert record["completeness"] == pytest.approx(0.0, abs=tolerance)
    assert record["normal_consistency"] == pytest.approx(1.0, abs=1e-3)


def test_seven_scenes(tmp_path, generated_maps):
    root = tmp_path / "7scenes"
    (root / "chess").mkdir(parents=True)
    (root / "chess" / "TestSplit.txt").write_text("sequence3\nsequence5\n")
    truth = {}
    for sequence in ("seq-03", "seq-05"):
        folder = root / "chess" / sequence
        folder.mkdir()
        for i in range(41):  # stride 40: frames 0 and 40 are used; the others only count
            (folder / f"frame-{i:06d}.color.png").touch()
        for i in (0, 40):
            millimetres = np.round(depth_m(i) * 1000)
            millimetres[0, 0], millimetres[0, 1] = 65535, 12000  # invalid marker; beyond 10 m
            write_rgb(folder / f"frame-{i:06d}.color.png")
            write_png16(folder / f"frame-{i:06d}.depth.proj.png", millimetres)
            np.savetxt(folder / f"frame-{i:06d}.pose.txt", camera_to_world(i))
            truth[(f"chess/{sequence}", f"frame-{i:06d}")] = world_points(depth_m(i), SEVEN_SCENES_K, camera_to_world(i))
    dataset = read_pointmap_dataset("7scenes", root)
    assert [(s.name, [f.stem for f in s.frames]) for s in dataset.sequences] == \
        [("chess/seq-03", ["frame-000000", "frame-000040"]), ("chess/seq-05", ["frame-000000", "frame-000040"])]
    view = dataset.sequences[0].frames[0].read()
    assert view.depth[0, 0] == 0 and view.depth[0, 1] == 0 and view.depth[1, 1] == pytest.approx(depth_m(0)[1, 1])
    assert int(gt_points(view, None)[1].sum()) == H * W - 2
    assert_perfect(score_similar_gt(tmp_path, dataset, truth), sequences=2, images=4)


def test_nrgbd_opengl_poses(tmp_path, generated_maps):
    scene = tmp_path / "nrgbd" / "breakfast_room"
    truth, poses = {}, []
    for i in range(101):  # stride 100: frames 0 and 100
        (scene / "images").mkdir(parents=True, exist_ok=True)
        (scene / "images" / f"img{i}.png").touch()
        opengl = camera_to_world(i % 7).copy()
        opengl[:3, 1:3] *= -1  # OpenCV -> OpenGL camera axes
        poses.append(opengl)
    for i in (0, 100):
        write_rgb(scene / "images" / f"img{i}.png")
        write_png16(scene / "depth" / f"depth{i}.png", np.round(depth_m(i) * 1000))
        truth[("breakfast_room", f"img{i}")] = world_points(depth_m(i), NRGBD_K, camera_to_world(i % 7))
    (scene / "poses.txt").write_text("\n".join(" ".join(f"{x:.10f}" for x in row) for pose in poses for row in pose))
    dataset = read_pointmap_dataset("nrgbd", tmp_path / "nrgbd")
    assert [f.stem for f in dataset.sequences[0].frames] == ["img0", "img100"]
    assert_perfect(score_similar_gt(tmp_path, dataset, truth), sequences=1, images=2)


def test_eth3d_raw_depth_and_world_to_camera(tmp_path, generated_maps):
    truth = {}
    for scene in ("courtyard", "pipes"):
        root = tmp_path / "eth3d" / scene
        (root / "images" / "custom_undistorted").mkdir(parents=True)
        for i in range(6):  # stride 5: frames 0 and 5
            name = f"DSC_{i:04d}.JPG"
            K = np.array([[20.0 + i, 0, 7.5], [0, 21.0, 5.5], [0, 0, 1]])
            Image.fromarray(np.full((H, W, 3), 70, np.uint8)).save(root / "images" / "custom_undistorted" / name,
                                                                    format="JPEG")
            depth = depth_m(i).astype(np.float32)
            depth[2, 3] = np.inf  # non-finite GT is invalid
            (root / "ground_truth_depth" / "custom_undistorted").mkdir(parents=True, exist_ok=True)
            depth.tofile(root / "ground_truth_depth" / "custom_undistorted" / name)
            (root / "custom_undistorted_cam").mkdir(exist_ok=True)
            np.savez(root / "custom_undistorted_cam" / f"DSC_{i:04d}.npz", intrinsics=K,
                     extrinsics=np.linalg.inv(camera_to_world(i)))
            truth[(scene, f"DSC_{i:04d}")] = world_points(depth_m(i), K, camera_to_world(i))
    dataset = read_pointmap_dataset("eth3d", tmp_path / "eth3d")
    assert [[f.stem for f in s.frames] for s in dataset.sequences] == [["DSC_0000", "DSC_0005"]] * 2
    assert int(gt_points(dataset.sequences[0].frames[0].read(), None)[1].sum()) == H * W - 1
    assert_perfect(score_similar_gt(tmp_path, dataset, truth), sequences=2, images=4)


def test_dtu_mask_erosion_millimetres_and_cams(tmp_path, generated_maps):
    height, width = 24, 32
    truth = {}
    for number in frame_maps.DTU_TEST_SCANS:
        scan = tmp_path / "dtu" / f"scan{number}"
        (scan / "images").mkdir(parents=True)
        for i in range(6):  # stride 5: frames 0 and 5
            (scan / "images" / f"{i:08d}.jpg").touch()
        for i in (0, 5):
            Image.fromarray(np.full((height, width, 3), 50, np.uint8)).save(scan / "images" / f"{i:08d}.jpg", format="JPEG")
            depth_mm = 600.0 + np.arange(height * width, dtype=np.float32).reshape(height, width) % 7
            (scan / "depths").mkdir(exist_ok=True)
            np.save(scan / "depths" / f"{i:08d}.npy", depth_mm)
            mask = np.zeros((height, width), np.uint8)
            mask[4:20, 6:26] = 255
            (scan / "binary_masks").mkdir(exist_ok=True)
            Image.fromarray(mask).save(scan / "binary_masks" / f"{i:08d}.png")
            K = np.array([[30.0, 0, 15.5], [0, 30.0, 11.5], [0, 0, 1]])
            pose = camera_to_world(i)
            pose[:3, 3] *= 100  # millimetres
            extrinsic = np.linalg.inv(pose)
            (scan / "cams").mkdir(exist_ok=True)
            (scan / "cams" / f"{i:08d}_cam.txt").write_text(
                "extrinsic\n" + "\n".join(" ".join(map(str, row)) for row in extrinsic) + "\n\nintrinsic\n"
                + "\n".join(" ".join(map(str, row)) for row in K) + "\n\n425.0 2.5\n")
            eroded = np.zeros((height, width), bool)
            eroded[9:16, 11:22] = True  # the 10×10 window (anchor 5, 5) fits inside rows 4..19, cols 6..25
            truth[(scan.name, f"{i:08d}")] = world_points(np.where(eroded, depth_mm, 0), K, pose)
    dataset = read_pointmap_dataset("dtu", tmp_path / "dtu")
    assert dataset.icp_max_distance == 100.0 and len(dataset.sequences) == 22
    view = dataset.sequences[0].frames[0].read()
    assert (view.depth > 0).sum() == 7 * 11 and (view.depth[9:16, 11:22] > 0).all()
    two_scans = dataclasses.replace(dataset, sequences=dataset.sequences[:2])  # scoring costs ~1 s per sequence
    assert_perfect(score_similar_gt(tmp_path, two_scans, truth), sequences=2, images=4, tolerance=1e-3)


def test_erosion_matches_a_written_out_window_minimum():
    rng = np.random.default_rng(3)
    mask = rng.random((9, 13)) > 0.2
    padded = np.pad(mask, ((2, 1), (2, 1)), constant_values=True)
    expected = np.array([[padded[y:y + 4, x:x + 4].all() for x in range(13)] for y in range(9)])
    np.testing.assert_array_equal(erode(mask, 4), expected)


def test_gt_grid_is_the_official_nearest_resize_with_one_intrinsics_factor():
    """8×6 -> 16×14 (the official `resize_image_depth_and_intrinsic`): cv2 INTER_NEAREST takes source row
    floor(v' · 6 / 14) (torch's "nearest-exact" would take floor((v' + 0.5) · 6 / 14)), and K's first two rows are
    scaled by ONE factor s = max(16 / 8, 14 / 6) = 7/3 around pixel centres: c' = (c + 0.5) · s - 0.5, f' = f · s
    (for x too, although the columns are scaled by 2)."""
    K = np.array([[10.0, 0, 3.5], [0, 10.0, 2.5], [0, 0, 1]], dtype=np.float32)
    depth = np.repeat(2.0 + 0.1 * np.arange(6, dtype=np.float32)[:, None], 8, axis=1)  # row r at 2 + 0.1 r
    points, valid = gt_points(PointMapView(np.zeros((6, 8, 3), np.uint8), depth, K, np.eye(4)), 16)
    assert points.shape == (14, 16, 3) and points.dtype == torch.float64 and bool(valid.all())
    s = 7 / 3
    v, u = np.mgrid[0:14, 0:16].astype(np.float64)
    z = 2.0 + 0.1 * np.floor(v * 6 / 14)
    expected = np.stack([(u - (4.0 * s - 0.5)) * z / (10 * s), (v - (3.0 * s - 0.5)) * z / (10 * s), z], -1)
    np.testing.assert_allclose(points.numpy(), expected, rtol=1e-6, atol=1e-6)  # float32 K and camera points


def test_shipped_maps_follow_the_rule_and_are_checked_against_the_root(tmp_path):
    for dataset, lengths in frame_maps.SHIPPED_LENGTHS.items():
        shipped = json.loads(frame_maps.map_path(dataset).read_text())
        assert shipped["rule"] == frame_maps.RULES[dataset]
        assert shipped["sequences"] == frame_maps.sample_frames(dataset, lengths)
    counts = [len(ids) for ids in json.loads(frame_maps.map_path("7scenes").read_text())["sequences"].values()]
    assert len(counts) == 18 and (min(counts), int(np.median(counts)), max(counts)) == (13, 25, 25)  # reference §6
    (tmp_path / "chess" / "seq-03").mkdir(parents=True)
    (tmp_path / "chess" / "TestSplit.txt").write_text("sequence3\n")
    (tmp_path / "chess" / "seq-03" / "frame-000000.color.png").touch()
    with pytest.raises(ValueError, match="names sequences the root lacks"):
        read_pointmap_dataset("7scenes", tmp_path)


def test_synthetic_set_scores_perfectly_with_its_own_gt(tmp_path):
    dataset = read_pointmap_dataset("synthetic", None)
    assert len(dataset.sequences) == 20 and dataset.gt_width is None
    small = dataclasses.replace(dataset, sequences=(dataclasses.replace(dataset.sequences[0],
                                                                        frames=dataset.sequences[0].frames[:1]),))
    truth = {}
    for sequence in small.sequences:
        for frame in sequence.frames:
            view = frame.read()
            truth[(sequence.name, frame.stem)] = world_points(view.depth, view.K, view.camera_to_world)
    assert_perfect(score_similar_gt(tmp_path, small, truth), sequences=1, images=1)
