"""Raw-dataset converters (ScanNet, Co3Dv2, DL3DV) on miniature raw layouts built from synthetic scenes.

Each layout is written in the dataset's own documented format and conventions from scenes whose depth, K and
OpenCV camera_to_world are exact, so the converted shards, read back through `MultiViewDataModule`, must give
those cameras back, the depth bit for bit, and views that agree with each other (a pixel unprojected in view i
lands on view j's depth). A conversion that gets a convention wrong (an OpenGL pose not flipped, a PyTorch3D
pose not converted, a world-to-camera read as camera-to-world) fails the cross-view check: the controls show it.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from g2vlm.datamodules.convert.co3dv2 import Co3Dv2
from g2vlm.datamodules.convert.common import (
    SKIP_BAD_POSE,
    SKIP_LOW_QUALITY,
    SKIP_UNREADABLE,
    ClipOptions,
    convert_dataset,
    format_summary,
)
from g2vlm.datamodules.convert.dl3dv import DL3DV, OPENGL_TO_OPENCV
from g2vlm.datamodules.convert.scannet import ScanNet
from g2vlm.datamodules.multiview.datamodule import MultiViewDataModule
from g2vlm.datamodules.shards.decoding import encode_depth_png
from g2vlm.datamodules.shards.reader import read_clips
from g2vlm.datamodules.synthetic.render import FIRST_OBJECT, render
from g2vlm.datamodules.synthetic.scene import sample_scene
from g2vlm.geometry.camera import project_points, se3_inverse, unproject_depth

HEIGHT, WIDTH = 24, 32
VIEWS = 6
CLIP = ClipOptions(clip_frames=4, clip_step=2, frame_stride=1, long_side=640)  # windows [0..3], [2..5]
AGREEMENT_MIN = 0.99  # of the co-visible pixels within 1 % (depth quantisation may flip a borderline few)
CONTROL_MAX = 0.5
COVISIBLE_MIN = 30


@dataclasses.dataclass
class Truth:
    """Ground truth of one synthetic scene: K (V, 3, 3), camera_to_world (V, 4, 4), depth_m (V, H, W) float64,
    rgb (V, H, W, 3) uint8 and the surface ids, all at HEIGHT x WIDTH."""

    K: np.ndarray
    camera_to_world: np.ndarray
    depth_m: np.ndarray
    rgb: np.ndarray
    surface_id: np.ndarray


def synthetic_truth(scene_index: int, principal_offset: tuple[float, float] = (0.0, 0.0), upscale: int = 1):
    """A synthetic scene at HEIGHT x WIDTH with its principal point moved by `principal_offset` px, and its colour
    rendered `upscale` times larger (same view; K scaled exactly, pixel centres at integer coordinates)."""
    scene = sample_scene(seed=11, scene_index=scene_index, views=VIEWS, height=HEIGHT, width=WIDTH)
    K = scene.K.copy()
    K[:, 0, 2] += principal_offset[0]
    K[:, 1, 2] += principal_offset[1]
    scene = dataclasses.replace(scene, K=K)
    rendering = render(scene)
    rgb = rendering.rgb
    if upscale > 1:
        K_up = K.copy()
        K_up[:, :2, :2] *= upscale
        K_up[:, :2, 2] = (K[:, :2, 2] + 0.5) * upscale - 0.5
        rgb = render(dataclasses.replace(scene, K=K_up, height=HEIGHT * upscale, width=WIDTH * upscale)).rgb
    truth = Truth(K, scene.camera_to_world, rendering.depth_m, rendering.rgb, rendering.surface_id)
    return truth, rgb


def save_image(path: Path, array: np.ndarray, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Miniature raw layouts


def write_scannet(root: Path) -> dict[str, tuple[Truth, np.ndarray]]:
    """Two exported scenes: colour at 2x the depth grid, depth PNG in mm with a 0 (invalid) block,
    pose/<i>.txt camera_to_world, intrinsic/intrinsic_depth.txt. Returns scene -> (truth, depth_mm)."""
    scenes = {}
    for index, name in enumerate(["scene0000_00", "scene0001_01"]):
        truth, color = synthetic_truth(index, principal_offset=(1.5, -1.0), upscale=2)
        depth_mm = np.round(truth.depth_m * 1000).astype(np.uint16)
        depth_mm[:, :4, :5] = 0  # invalid readings
        folder = root / name
        for frame in range(VIEWS):
            save_image(folder / "color" / f"{frame}.jpg", color[frame], quality=95)
            (folder / "depth").mkdir(parents=True, exist_ok=True)
            (folder / "depth" / f"{frame}.png").write_bytes(encode_depth_png(depth_mm[frame]))
            (folder / "pose").mkdir(parents=True, exist_ok=True)
            np.savetxt(folder / "pose" / f"{frame}.txt", truth.camera_to_world[frame], fmt="%.17g")
        intrinsics = np.eye(4)
        intrinsics[:3, :3] = truth.K[0]
        (folder / "intrinsic").mkdir(parents=True, exist_ok=True)
        np.savetxt(folder / "intrinsic" / "intrinsic_depth.txt", intrinsics, fmt="%.17g")
        scenes[name] = (truth, depth_mm)
    return scenes


FLIP_XY = np.diag([-1.0, -1.0, 1.0])


def pytorch3d_viewpoint(K: np.ndarray, camera_to_world: np.ndarray) -> dict:
    """OpenCV K (pixel centres at integers) and camera_to_world -> a Co3D `viewpoint` (ndc_isotropic), written
    from Co3D's own definitions: X_cam = X_world R + T with camera +x left, +y up; cx = W/2 - p_x s."""
    world_to_camera = np.linalg.inv(camera_to_world)
    rotation_p3d = (FLIP_XY @ world_to_camera[:3, :3]).T
    translation_p3d = FLIP_XY @ world_to_camera[:3, 3]
    s = min(HEIGHT, WIDTH) / 2
    return {
        "R": rotation_p3d.tolist(), "T": translation_p3d.tolist(),
        "focal_length": [K[0, 0] / s, K[1, 1] / s],
        "principal_point": [(WIDTH / 2 - (K[0, 2] + 0.5)) / s, (HEIGHT / 2 - (K[1, 2] + 0.5)) / s],
        "intrinsics_format": "ndc_isotropic",
    }


def write_jgz(path: Path, records: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as stream:
        json.dump(records, stream)


# sequence -> per-frame depth scale_adjustment (one shared scale: float16 .npy; mixed: float32 .npy)
CO3D_SEQUENCES = {"110_13051_23361": [2.0] * VIEWS, "34_1403_4393": [1.0, 0.5] * (VIEWS // 2)}


def write_co3dv2(root: Path) -> dict[str, tuple[Truth, np.ndarray, np.ndarray, list[float]]]:
    """Category `teddybear` with two good sequences and one of low viewpoint quality. Returns
    scene -> (truth, float16 depth as stored, foreground mask, scales)."""
    scenes, frames, sequences = {}, [], []
    for index, (sequence, scales) in enumerate([*CO3D_SEQUENCES.items(), ("999_1_2", [1.0] * VIEWS)]):
        truth, rgb = synthetic_truth(index + 2, principal_offset=(-2.0, 1.0))
        depth = np.stack([truth.depth_m[v] / scales[v] for v in range(VIEWS)]).astype(np.float16)
        depth[:, -3:, -6:] = 0  # no MVS depth there
        depth_valid = np.ones(depth.shape, bool)
        depth_valid[:, :2, :] = False  # the depth mask drops the top rows
        foreground = truth.surface_id >= FIRST_OBJECT
        probability = np.where(foreground, 230, 20).astype(np.uint8)
        base = f"teddybear/{sequence}"
        for view in range(VIEWS):
            number = 10 + 3 * view  # frame numbers need not start at 0 or be consecutive
            image = f"{base}/images/frame{number:06d}.jpg"
            save_image(root / image, rgb[view], quality=95)
            depth_path = f"{base}/depths/frame{number:06d}.jpg.geometric.png"
            (root / depth_path).parent.mkdir(parents=True, exist_ok=True)
            (root / depth_path).write_bytes(encode_depth_png(depth[view].view(np.uint16)))
            depth_mask = f"{base}/depth_masks/frame{number:06d}.png"
            save_image(root / depth_mask, np.where(depth_valid[view], 255, 0).astype(np.uint8))
            mask = f"{base}/masks/frame{number:06d}.png"
            save_image(root / mask, probability[view])
            frames.append({
                "sequence_name": sequence, "frame_number": number, "frame_timestamp": 0.1 * view,
                "image": {"path": image, "size": [HEIGHT, WIDTH]},
                "depth": {"path": depth_path, "scale_adjustment": scales[view], "mask_path": depth_mask},
                "mask": {"path": mask, "mass": int(foreground[view].sum())},
                "viewpoint": pytorch3d_viewpoint(truth.K[view], truth.camera_to_world[view]),
            })
        sequences.append({"sequence_name": sequence, "category": "teddybear",
                          "viewpoint_quality_score": 0.3 if sequence == "999_1_2" else 0.9})
        expected_depth = np.where(depth_valid, depth, np.float16(0))
        scenes[f"teddybear/{sequence}"] = (truth, expected_depth, probability >= 128, scales)
    frames.reverse()  # annotation order is not frame order
    write_jgz(root / "teddybear" / "frame_annotations.jgz", frames)
    write_jgz(root / "teddybear" / "sequence_annotations.jgz", sequences)
    return scenes


DL3DV_SCALE = 4  # transforms.json intrinsics refer to images 4x larger than the stored images_4 ones


def write_dl3dv(root: Path) -> dict[str, Truth]:
    """Two scenes under the subset folder 1K/: images_4/frame_NNNNN.png and transforms.json (OpenGL c2w,
    intrinsics of the 4x image with the corner origin)."""
    scenes = {}
    for index, name in enumerate(["1K/0a1b2c", "1K/ff00ee"]):
        truth, rgb = synthetic_truth(index + 5, principal_offset=(0.75, 1.25))
        K = truth.K[0]
        transforms = {
            "w": WIDTH * DL3DV_SCALE, "h": HEIGHT * DL3DV_SCALE,
            "fl_x": K[0, 0] * DL3DV_SCALE, "fl_y": K[1, 1] * DL3DV_SCALE,
            "cx": (K[0, 2] + 0.5) * DL3DV_SCALE, "cy": (K[1, 2] + 0.5) * DL3DV_SCALE,
            "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0, "camera_model": "OPENCV", "frames": [],
        }
        for view in range(VIEWS):
            save_image(root / name / "images_4" / f"frame_{view + 1:05d}.png", rgb[view])
            transforms["frames"].append({
                "file_path": f"images/frame_{view + 1:05d}.png",
                "transform_matrix": (truth.camera_to_world[view] @ OPENGL_TO_OPENCV).tolist(),
            })
        transforms["frames"].reverse()
        (root / name / "transforms.json").write_text(json.dumps(transforms))
        scenes[name] = truth
    return scenes


# ----------------------------------------------------------------------------------------------------------------
# Checks


def read_back(out: Path, dataset: str) -> list:
    """All clips through MultiViewDataModule's validation stream at the stored size, one clip per batch."""
    datamodule = MultiViewDataModule(
        val_shards=[str(out / f"{dataset}-train-*.tar")], image_size=(HEIGHT, WIDTH), views_min=2,
        views_max=CLIP.clip_frames, image_budget=CLIP.clip_frames, num_workers=0, color_jitter=False,
    )
    return [batch.with_float_images() for batch in datamodule.val_dataset()]


def cross_view_errors(depth_m, K, camera_to_world, view_i: int, view_j: int) -> torch.Tensor:
    """|z_j - D_j(uv)| / D_j(uv) for every pixel of view i (H, W): the pixel unprojected with its depth, projected
    into view j at uv with depth z_j, D_j view j's depth sampled bilinearly there. NaN where view i has no depth
    or the point falls outside view j, behind it, or next to an invalid pixel of j.
    depth_m (N, H, W), K (N, 3, 3), camera_to_world (N, 4, 4)."""
    depth_m, K, camera_to_world = (torch.as_tensor(x, dtype=torch.float64) for x in (depth_m, K, camera_to_world))
    height, width = depth_m.shape[-2:]
    points = unproject_depth(depth_m[view_i], K[view_i], camera_to_world[view_i])
    uv, z = project_points(points, K[view_j], camera_to_world[view_j])
    grid = torch.stack([2 * uv[..., 0] / (width - 1) - 1, 2 * uv[..., 1] / (height - 1) - 1], -1)[None]
    sampled = F.grid_sample(depth_m[view_j][None, None], grid, align_corners=True)[0, 0]
    all_valid = F.grid_sample((depth_m[view_j] > 0).double()[None, None], grid, align_corners=True)[0, 0] > 1 - 1e-9
    seen = (depth_m[view_i] > 0) & (z > 0) & (grid.abs() <= 1).all(-1)[0] & all_valid
    return torch.where(seen, (z - sampled).abs() / sampled, torch.nan)


def covisible(truth_depth_m, truth: Truth, views: list[int], view_i: int, view_j: int) -> torch.Tensor:
    """Pixels of view i that the exact scene shows in view j too (its exact depth, K and poses agree there within
    0.5 %): not occluded in j, not on a depth edge. truth_depth_m (N, H, W): the exact depth of the views, 0 where
    the dataset marks depth invalid. (H, W) bool."""
    return cross_view_errors(truth_depth_m, truth.K[views], truth.camera_to_world[views], view_i, view_j) <= 0.005


PAIRS = [(0, 1), (1, 0), (0, 3)]


def cross_view_agreement(
    depth_m, K, camera_to_world, truth: Truth, truth_depth_m: np.ndarray, views: list[int], pairs=PAIRS
) -> float:
    """The smallest, over view pairs (i, j), fraction of co-visible pixels of view i (see `covisible`) that land
    within 1 % of view j's depth when the converted depth, K and camera_to_world are used."""
    fractions = []
    for view_i, view_j in pairs:
        mask = covisible(truth_depth_m, truth, views, view_i, view_j)
        assert mask.sum() >= COVISIBLE_MIN, "too few co-visible pixels for the check"
        errors = cross_view_errors(depth_m, K, camera_to_world, view_i, view_j)[mask]
        fractions.append((errors <= 0.01).double().mean().item())  # NaN (lost) counts as disagreement
    return min(fractions)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


def assert_second_run_writes_nothing(dataset, out: Path) -> None:
    before = snapshot(out)
    summary = convert_dataset(dataset, out, CLIP)
    assert snapshot(out) == before
    assert summary["scenes_converted_now"] == 0 and summary["shards_written_now"] == 0
    assert summary["scenes_already_done"] == summary["scenes_found"]


# ----------------------------------------------------------------------------------------------------------------
# Acceptance: one test per dataset


def test_scannet_round_trip(tmp_path):
    scenes = write_scannet(tmp_path / "raw")
    summary = convert_dataset(ScanNet(tmp_path / "raw"), tmp_path / "out", CLIP, shard_bytes=1)
    assert (summary["scenes"], summary["clips"], summary["frames"], summary["shards"]) == (2, 4, 16, 2)
    assert summary["skipped"]["counts"] == {}
    batches = read_back(tmp_path / "out", "scannet")
    assert len(batches) == 4
    for batch in batches:
        scene = batch.keys[0].split("__")[1]
        truth, depth_mm = scenes[scene]
        frames = batch.frame_ids[0]
        torch.testing.assert_close(batch.camera_to_world[0], torch.from_numpy(truth.camera_to_world[frames]).float(),
                                   rtol=0, atol=1e-6)
        torch.testing.assert_close(batch.K[0], torch.from_numpy(truth.K[frames]).float(), rtol=0, atol=1e-5)
        expected_m = torch.from_numpy(depth_mm[frames].astype(np.float32) * np.float32(0.001))
        assert torch.equal(batch.depth_m[0], expected_m)  # bit-exact metres, 0 kept invalid
        assert torch.equal(batch.valid[0], expected_m > 0)
        # colour resized onto the depth grid lines up with the scene rendered there
        rgb = batch.images[0].permute(0, 2, 3, 1).numpy() * 255
        aligned = np.abs(rgb - truth.rgb[frames]).mean()
        shifted = np.abs(rgb - np.roll(truth.rgb[frames], 2, axis=2)).mean()
        assert aligned < 0.5 * shifted
        exact = np.where(depth_mm[frames] > 0, truth.depth_m[frames], 0)
        converted = (batch.depth_m[0], batch.K[0], batch.camera_to_world[0])
        assert cross_view_agreement(*converted, truth, exact, frames) >= AGREEMENT_MIN
        # control: a world-to-camera read as camera-to-world breaks the cross-view check
        world_to_camera = se3_inverse(batch.camera_to_world[0].double())
        assert cross_view_agreement(*converted[:2], world_to_camera, truth, exact, frames, [(0, 1)]) < CONTROL_MAX
    for clip in read_clips(sorted(str(p) for p in (tmp_path / "out").glob("*.tar"))):
        truth, _ = scenes[clip.meta.scene]
        np.testing.assert_array_equal(clip.camera_to_world, truth.camera_to_world[clip.meta.frame_ids])  # float64 exact
        assert clip.meta.depth_is_metric and clip.meta.has_depth and clip.meta.depth_scale == 0.001
    assert_second_run_writes_nothing(ScanNet(tmp_path / "raw"), tmp_path / "out")


def test_co3dv2_round_trip(tmp_path):
    scenes = write_co3dv2(tmp_path / "raw")
    summary = convert_dataset(Co3Dv2(tmp_path / "raw"), tmp_path / "out", CLIP)
    assert (summary["scenes"], summary["clips"], summary["frames"], summary["shards"]) == (2, 4, 16, 1)
    assert summary["skipped"]["counts"] == {SKIP_LOW_QUALITY: 1}
    assert "teddybear/999_1_2" in summary["skipped"]["examples"][SKIP_LOW_QUALITY][0]
    clips = list(read_clips([str(tmp_path / "out" / "co3dv2-train-000000.tar")]))
    batches = read_back(tmp_path / "out", "co3dv2")
    assert len(clips) == len(batches) == 4
    for clip, batch in zip(clips, batches):
        assert clip.key == batch.keys[0]
        truth, depth_f16, foreground, scales = scenes[clip.meta.scene]
        views = [(number - 10) // 3 for number in clip.meta.frame_ids]  # frame numbers 10, 13, 16, ...
        assert clip.meta.frame_ids == sorted(clip.meta.frame_ids) and not clip.meta.depth_is_metric
        np.testing.assert_allclose(clip.camera_to_world, truth.camera_to_world[views], rtol=0, atol=1e-12)
        np.testing.assert_allclose(clip.K, truth.K[views], rtol=0, atol=1e-12)
        # depth in the stored (COLMAP) scale, bit for bit: float16 value x the frame's scale_adjustment
        expected = np.stack([depth_f16[v].astype(np.float32) * np.float32(scales[v]) for v in views])
        np.testing.assert_array_equal(clip.depth_m, expected)
        np.testing.assert_array_equal(clip.mask, foreground[views])
        # the DataModule supervises depth on the foreground only
        assert torch.equal(batch.depth_m[0], torch.from_numpy(np.where(foreground[views], expected, 0)))
        exact = np.where(expected > 0, truth.depth_m[views], 0)
        assert cross_view_agreement(clip.depth_m, clip.K, clip.camera_to_world, truth, exact, views) >= AGREEMENT_MIN
        # control: the PyTorch3D camera taken as OpenCV (axes not flipped) breaks the cross-view check
        unflipped = clip.camera_to_world @ np.diag([-1.0, -1.0, 1.0, 1.0])
        assert cross_view_agreement(clip.depth_m, clip.K, unflipped, truth, exact, views, [(0, 1)]) < CONTROL_MAX
    # one shared scale: 16-bit PNG of power-of-two steps (depth_scale = step x 2.0); mixed scales: float32 .npy
    scales = {clip.meta.scene: clip.meta.depth_scale for clip in clips}
    assert scales["teddybear/34_1403_4393"] == 1.0
    step = scales["teddybear/110_13051_23361"] / 2.0
    assert step == 2.0 ** np.round(np.log2(step))
    with tarfile.open(tmp_path / "out" / "co3dv2-train-000000.tar") as tar:
        depth_members = {name.split(".", 1)[0].split("__")[1]: name.split(".", 2)[2] for name in tar.getnames()
                         if ".depth." in name}
    assert depth_members == {"teddybear_110_13051_23361": "depth.png", "teddybear_34_1403_4393": "depth.npy"}
    assert_second_run_writes_nothing(Co3Dv2(tmp_path / "raw"), tmp_path / "out")


def test_dl3dv_round_trip(tmp_path):
    scenes = write_dl3dv(tmp_path / "raw")
    summary = convert_dataset(DL3DV(tmp_path / "raw"), tmp_path / "out", CLIP)
    assert (summary["scenes"], summary["clips"], summary["frames"]) == (2, 4, 16)
    batches = read_back(tmp_path / "out", "dl3dv")
    assert len(batches) == 4
    for batch in batches:
        truth = scenes[batch.keys[0].split("__")[1].replace("1K_", "1K/")]
        views = [frame - 1 for frame in batch.frame_ids[0]]  # frame_00001.png is view 0
        assert not batch.has_depth[0] and not batch.valid.any()
        torch.testing.assert_close(batch.camera_to_world[0], torch.from_numpy(truth.camera_to_world[views]).float(),
                                   rtol=0, atol=1e-6)
        torch.testing.assert_close(batch.K[0], torch.from_numpy(truth.K[views]).float(), rtol=0, atol=1e-5)
        # no depth in DL3DV: the scenes' exact depth checks the converted cameras and intrinsics
        exact = truth.depth_m[views]
        assert cross_view_agreement(exact, batch.K[0], batch.camera_to_world[0], truth, exact, views) >= AGREEMENT_MIN
        # control: the OpenGL camera taken as OpenCV breaks the cross-view check
        opengl = batch.camera_to_world[0].double() @ torch.from_numpy(OPENGL_TO_OPENCV)
        assert cross_view_agreement(exact, batch.K[0], opengl, truth, exact, views, [(0, 1)]) < CONTROL_MAX
    for clip in read_clips(sorted(str(p) for p in (tmp_path / "out").glob("*.tar"))):
        assert not clip.meta.has_depth and not clip.meta.depth_is_metric and clip.depth_m is None
    assert_second_run_writes_nothing(DL3DV(tmp_path / "raw"), tmp_path / "out")


# ----------------------------------------------------------------------------------------------------------------
# A root with one corrupt image and one bad pose


def corrupt_scannet(root: Path) -> tuple[str, str]:
    (root / "scene0000_00" / "color" / "2.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    pose = root / "scene0001_01" / "pose" / "4.txt"
    pose.write_text("\n".join(["-inf -inf -inf -inf"] * 4))
    return "scene0000_00/color/2.jpg", "scene0001_01/pose/4.txt"


def corrupt_co3dv2(root: Path) -> tuple[str, str]:
    image = "teddybear/110_13051_23361/images/frame000016.jpg"
    (root / image).write_bytes(b"\xff\xd8 not a jpeg")
    path = root / "teddybear" / "frame_annotations.jgz"
    with gzip.open(path, "rt") as stream:
        frames = json.load(stream)
    bad = next(f for f in frames if f["sequence_name"] == "34_1403_4393" and f["frame_number"] == 22)
    bad["viewpoint"]["R"][0][0] = float("nan")
    write_jgz(path, frames)
    return image, "34_1403_4393 frame 22"


def corrupt_dl3dv(root: Path) -> tuple[str, str]:
    (root / "1K" / "0a1b2c" / "images_4" / "frame_00003.png").write_bytes(b"\x89PNG broken")
    path = root / "1K" / "ff00ee" / "transforms.json"
    transforms = json.loads(path.read_text())
    bad = next(f for f in transforms["frames"] if f["file_path"].endswith("frame_00005.png"))
    bad["transform_matrix"][0][0] = float("nan")
    path.write_text(json.dumps(transforms))
    return "1K/0a1b2c/images_4/frame_00003.png", "frame_00005.png"


@pytest.mark.parametrize("name, write, corrupt, make", [
    ("scannet", write_scannet, corrupt_scannet, ScanNet),
    ("co3dv2", write_co3dv2, corrupt_co3dv2, Co3Dv2),
    ("dl3dv", write_dl3dv, corrupt_dl3dv, DL3DV),
], ids=["scannet", "co3dv2", "dl3dv"])
def test_corrupt_image_and_bad_pose_are_skipped_and_reported(tmp_path, name, write, corrupt, make):
    write(tmp_path / "raw")
    bad_image, bad_pose = corrupt(tmp_path / "raw")
    summary = convert_dataset(make(tmp_path / "raw"), tmp_path / "out", CLIP)
    counts = summary["skipped"]["counts"]
    assert counts[SKIP_UNREADABLE] == 1 and counts[SKIP_BAD_POSE] == 1
    assert bad_image in summary["skipped"]["examples"][SKIP_UNREADABLE][0]
    assert bad_pose in summary["skipped"]["examples"][SKIP_BAD_POSE][0]
    text = format_summary(summary)
    assert bad_image in text and bad_pose in text
    # the rest converted: 2 scenes of 5 keyframes each -> windows [0..3], [1..4] per scene
    assert (summary["scenes"], summary["keyframes"], summary["clips"]) == (2, 10, 4)
    clips = list(read_clips(sorted(str(p) for p in (tmp_path / "out").glob("*.tar"))))
    assert len(clips) == 4 and all(clip.meta.num_frames == 4 for clip in clips)
