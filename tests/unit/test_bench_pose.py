"""Pose benchmark: Co3Dv2 / RealEstate10K readers on miniature prepared layouts (GT as predictions is perfect,
the PyTorch3D camera conversion included), the seed-42 frame map, and a rotated camera's hand-computed scores."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest

from g2vlm.benchmarks.reconstruction import pose_datasets
from g2vlm.benchmarks.reconstruction.frame_maps import sample_frames
from g2vlm.benchmarks.reconstruction.pose import evaluate_pose
from g2vlm.benchmarks.reconstruction.pose_datasets import (
    PoseDataset,
    PoseFrame,
    PoseSequence,
    read_pose_dataset,
)
from g2vlm.benchmarks.reconstruction.predictions import PredictionFolder


def rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def random_cameras(rng: np.random.Generator, count: int) -> np.ndarray:
    """OpenCV camera_to_world (count, 4, 4) around an object."""
    poses = np.tile(np.eye(4), (count, 1, 1))
    for k in range(count):
        poses[k, :3, :3] = rotation("y", rng.uniform(-180, 180)) @ rotation("x", rng.uniform(-30, 30))
        poses[k, :3, 3] = rng.normal(size=3) * 2.0
    return poses


def to_pytorch3d(camera_to_world: np.ndarray) -> tuple[list, list]:
    """OpenCV camera_to_world -> PyTorch3D (R, T): X_cam = X_world·R + T with camera +x left, +y up."""
    world_to_camera = np.linalg.inv(camera_to_world)
    flip = np.diag([-1.0, -1.0, 1.0])
    R = world_to_camera[:3, :3].T @ flip  # column form: X_p3d = flip · (R_cv X + t_cv)  =>  R_p3d = R_cvᵀ flip
    T = flip @ world_to_camera[:3, 3]
    return R.tolist(), T.tolist()


def write_predictions(folder, dataset: PoseDataset, poses_of) -> None:
    for sequence in dataset.sequences:
        (folder / sequence.name).mkdir(parents=True, exist_ok=True)
        for frame, pose in zip(sequence.frames, poses_of(sequence)):
            np.save(folder / sequence.name / f"{frame.stem}.npy", pose.astype(np.float32))


def similarity(sequence: PoseSequence) -> np.ndarray:
    """Any world frame and scale: the GT in another similarity frame (errors stay zero)."""
    transform = np.eye(4)
    transform[:3, :3] = rotation("z", 70) @ rotation("x", 20)
    transform[:3, 3] = [3.0, -1.0, 0.5]
    poses = transform @ sequence.camera_to_world
    poses[:, :3, 3] *= 2.5
    return poses


def test_co3dv2_reader_filters_converts_and_gt_scores_perfectly(tmp_path):
    rng = np.random.default_rng(0)
    truth = {}
    for category, sequences in (("apple", {"110_13051_23361": 60, "short_seq": 49}), ("kite", {"400_1_2": 55, "far": 50})):
        annotation = {}
        for name, count in sequences.items():
            poses = random_cameras(rng, count)
            truth[f"{category}/{name}"] = poses
            frames = []
            for k, pose in enumerate(poses):
                R, T = to_pytorch3d(pose)
                if name == "far" and k == 7:
                    T = [1e5, 1.0, 1.0]  # the official filter: a translation sum above 1e5 drops the sequence
                frames.append({"filepath": f"{category}/{name}/images/frame{k + 1:06d}.jpg", "R": R, "T": T,
                               "focal_length": [1.5, 1.5], "principal_point": [0.0, 0.0]})
            annotation[name] = frames
        (tmp_path / "co3d" / "co3d_v2_annotations").mkdir(parents=True, exist_ok=True)
        with gzip.open(tmp_path / "co3d" / "co3d_v2_annotations" / f"{category}_test.jgz", "wt") as file:
            json.dump(annotation, file)
    dataset = read_pose_dataset("co3dv2", tmp_path / "co3d")
    assert [s.name for s in dataset.sequences] == ["apple/110_13051_23361", "kite/400_1_2"]
    expected_ids = sample_frames("co3dv2", {"apple/110_13051_23361": 60, "kite/400_1_2": 55})
    np.random.seed(42)  # the reference's recipe, drawn here independently of the reader
    assert expected_ids["apple/110_13051_23361"] == list(np.random.choice(60, 10, replace=False))
    for sequence in dataset.sequences:
        ids = expected_ids[sequence.name]
        assert [f.stem for f in sequence.frames] == [f"frame{k + 1:06d}" for k in ids]
        np.testing.assert_allclose(sequence.camera_to_world, truth[sequence.name][ids], atol=1e-9)
    assert any("49 of 51 categories missing" in note for note in dataset.notes)
    write_predictions(tmp_path / "pred" / "co3dv2", dataset, similarity)
    record = evaluate_pose(dataset, predictions=PredictionFolder(tmp_path / "pred", ("co3dv2",)))
    assert record["n_sequences"] == 2 and record["n_pairs"] == 90
    for key in ("RRA@5", "RTA@5", "AUC@5", "RRA@30", "AUC@30"):
        assert record[key] == pytest.approx(100.0)


def test_re10k_reader_gt_is_perfect(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    names = ["0a1b2c3d4e5f6a7b", "ffeeddccbbaa9988", "1234567890abcdef"]
    truth = {}
    for name in names:
        poses = random_cameras(rng, 12)
        truth[name] = poses
        records = [{"idx": k, "filepath": f"{name}/images/{k:05d}.png", "intrinsics": [0.5, 0.9, 0.5, 0.5],
                    "extrinsics": np.linalg.inv(pose)[:3].tolist()} for k, pose in enumerate(poses)]
        (tmp_path / "re10k" / name).mkdir(parents=True)
        (tmp_path / "re10k" / name / "annotations.json").write_text(json.dumps(records))
    (tmp_path / "list.txt").write_text(f"{names[1]}\n{names[0]}\n")  # the third folder is not a test sequence
    monkeypatch.setattr(pose_datasets, "RE10K_SEQUENCE_LIST", tmp_path / "list.txt")
    dataset = read_pose_dataset("re10k", tmp_path / "re10k")
    assert [s.name for s in dataset.sequences] == names[1::-1]  # the list's sequences, in its order
    write_predictions(tmp_path / "pred", dataset, lambda sequence: sequence.camera_to_world)
    record = evaluate_pose(dataset, predictions=PredictionFolder(tmp_path / "pred", ("re10k",)))
    assert record["n_pairs"] == 90 and record["AUC@30"] == pytest.approx(100.0)


def test_re10k_uses_the_shipped_official_list_and_names_missing_sequences(tmp_path):
    """The list of G2VLM's `datasets/sequences/re10k_test_1719.txt`: 1,719 distinct sequences, sorted."""
    names = pose_datasets.re10k_test_sequences()
    assert len(names) == len(set(names)) == 1719 and names == sorted(names)
    assert (names[0], names[1], names[-1]) == ("000c3ab189999a83", "000db54a47bd43fe", "4cf74ffa5bfd5904")
    (tmp_path / names[5]).mkdir()
    (tmp_path / names[5] / "annotations.json").write_text("[]")
    (tmp_path / "not_a_test_sequence").mkdir()
    (tmp_path / "not_a_test_sequence" / "annotations.json").write_text("[]")
    with pytest.raises(ValueError, match="1718 of the 1719 test sequences of re10k_test_1719.txt have no .*000c3ab189999a83"):
        read_pose_dataset("re10k", tmp_path)


def test_one_rotated_camera_gives_hand_computed_scores(tmp_path):
    """10 cameras on the x axis, all looking along +z; the prediction turns the last one by 20.5° about its
    optical axis. The 9 pairs (i, 9) then have rotation and translation errors of 20.5°, the other 36 none."""
    poses = np.tile(np.eye(4), (10, 1, 1))
    poses[:, 0, 3] = np.arange(10)
    frames = tuple(PoseFrame(f"f{k}", lambda: None) for k in range(10))
    dataset = PoseDataset("line", (PoseSequence("line", frames, poses),), 512, "test")
    turned = poses.copy()
    turned[9, :3, :3] = rotation("z", 20.5)
    write_predictions(tmp_path, dataset, lambda sequence: turned)
    record = evaluate_pose(dataset, predictions=PredictionFolder(tmp_path, ("line",)))
    for key in ("RRA@30", "RTA@30"):
        assert record[key] == pytest.approx(100.0)
    for key in ("RRA@15", "RTA@15", "RRA@5", "RTA@5", "AUC@15", "AUC@5"):
        assert record[key] == pytest.approx(100 * 36 / 45)
    assert record["AUC@30"] == pytest.approx(100 * (20 * 36 / 45 + 10) / 30)  # below 21..30°: all pairs


def test_synthetic_pose_set_and_errors(tmp_path):
    dataset = read_pose_dataset("synthetic", None)
    assert len(dataset.sequences) == 20 and all(len(s.frames) == 10 for s in dataset.sequences)
    with pytest.raises(ValueError, match="no <category>_test.jgz"):
        read_pose_dataset("co3d", tmp_path)
    with pytest.raises(ValueError, match="unknown pose dataset 'scannet'"):
        read_pose_dataset("scannet", tmp_path)


def test_runner_choice_missing_and_unreadable_predictions(tmp_path):
    """benchmarks/reconstruction/runner.py through the pose runner: exactly one source; a missing file fails before any work; an
    unreadable one is skipped and counted (its 9 pairs drop out); saved predictions have no model timings."""
    poses = np.tile(np.eye(4), (10, 1, 1))
    poses[:, 0, 3] = np.arange(10)
    frames = tuple(PoseFrame(f"f{k}", lambda: None) for k in range(10))
    dataset = PoseDataset("line", (PoseSequence("line", frames, poses),), 512, "test")
    with pytest.raises(ValueError, match="evaluate_pose: give exactly one of a predictor"):
        evaluate_pose(dataset)
    write_predictions(tmp_path, dataset, lambda sequence: poses)
    (tmp_path / "line" / "f3.npy").unlink()
    with pytest.raises(ValueError, match=r"1 of 10 frames have no prediction .* line/f3"):
        evaluate_pose(dataset, predictions=PredictionFolder(tmp_path, ("line",)))
    (tmp_path / "line" / "f3.npy").write_bytes(b"not an array")
    record = evaluate_pose(dataset, predictions=PredictionFolder(tmp_path, ("line",)))
    assert record["n_pairs"] == 36 and record["n_images"] == 9 and record["AUC@30"] == pytest.approx(100.0)
    assert record["skipped_frames"] == 1 and "f3.npy" in record["skipped_examples"][0]
    assert record["images_per_s"] is None and record["load_width"] is None
    assert record["metric_time_vs_inference"] is None and record["seconds"]["inference"] is None
    assert record["seconds"]["total"] >= record["seconds"]["metrics"] + record["seconds"]["reading"] > 0
