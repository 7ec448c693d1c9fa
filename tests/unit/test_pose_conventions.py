"""One pose convention everywhere: the data (`camera_to_world` maps camera to world coordinates), the geometry heads
(world points = R·local + t of their own `camera_to_world`), the geometry loss and the relative-pose metric. Clips
rendered with known motion and read through the real loader check that they agree; world_to_camera matrices passed
where camera_to_world belongs must be caught by the loss and by the metric alike."""

from __future__ import annotations

import math

import torch

from g2vlm.datamodules.multiview.datamodule import MultiViewDataModule
from g2vlm.demo import mean_relative_pose
from g2vlm.geometry.camera import (
    project_points,
    se3_from_rotation_translation,
    se3_inverse,
    transform_points,
    unproject_depth,
)
from g2vlm.geometry.rotation import rotation_from_9d
from g2vlm.losses.geometry_loss import GeometryLoss, GeometryTarget
from g2vlm.metrics.relative_pose import RelativePoseMetrics, pair_errors_deg
from g2vlm.model.config import model_config
from g2vlm.model.g2vlm import G2VLM
from g2vlm.model.outputs import GeometryOutput


def clips(root):
    data = MultiViewDataModule(val_shards=[str(root / "data/synthetic-tiny/synthetic-val-000000.tar")],
                               image_size=(32, 32), size_multiple=4, views_max=4, val_views=4, image_budget=16,
                               num_workers=0)
    data.setup("validate")
    return next(iter(data.val_dataloader()))


def reprojection_agreement(batch, poses: torch.Tensor) -> float:
    """Fraction of view-0 pixels seen by view 1 whose depth, carried through `poses` as camera_to_world, lands
    within 3 % of view 1's own depth."""
    depth, K = batch.depth_m.double(), batch.K.double()
    world = unproject_depth(depth[:, 0], K[:, 0], poses[:, 0].double())
    uv, z = project_points(world, K[:, 1], poses[:, 1].double())
    u, v = uv[..., 0].round().long(), uv[..., 1].round().long()
    size = depth.shape[-1]
    inside = (u >= 0) & (u < size) & (v >= 0) & (v < size) & (z > 0) & batch.valid[:, 0]
    clip = torch.arange(depth.shape[0])[:, None, None].expand_as(u)
    target = depth[clip, 1, v.clamp(0, size - 1), u.clamp(0, size - 1)]
    seen = inside & (target > 0)
    return ((z - target).abs() < 0.03 * target)[seen].double().mean().item()


def prediction(local_points: torch.Tensor, camera_to_world: torch.Tensor) -> GeometryOutput:
    """A prediction of these camera-frame points (B, N, H, W, 3) and poses (B, N, 4, 4), no global points."""
    return GeometryOutput(depth=local_points[..., 2], local_points=local_points, camera_to_world=camera_to_world,
                          world_points=transform_points(camera_to_world, local_points), global_points=None)


def test_loader_poses_carry_one_views_depth_onto_anothers(tiny_synthetic_shards):
    batch = clips(tiny_synthetic_shards)
    assert reprojection_agreement(batch, batch.camera_to_world) > 0.8
    assert reprojection_agreement(batch, se3_inverse(batch.camera_to_world)) < 0.3


def test_loss_and_metric_accept_the_data_convention_and_reject_its_inverse(tiny_synthetic_shards):
    batch = clips(tiny_synthetic_shards)
    local = unproject_depth(batch.depth_m, batch.K)
    loss = GeometryLoss(normal_datasets=[])

    def scores(poses):
        out = loss(prediction(local, poses), GeometryTarget.of(batch))
        metric = RelativePoseMetrics(thresholds=(30,))
        metric.update(poses, batch.camera_to_world)
        return out, metric.compute()["AUC@30"].item()

    right, right_auc = scores(batch.camera_to_world)
    assert right.camera_rotation < 1e-3 and right.camera_translation < 1e-6 and right_auc > 99.0
    wrong, wrong_auc = scores(se3_inverse(batch.camera_to_world))
    assert wrong.camera_rotation > 0.05 and wrong.camera_translation > 1e-3 and wrong_auc < right_auc - 20


def test_known_sideways_motion_is_the_relative_translation_of_loss_and_metric():
    """Camera 1 = camera 0 moved 1 m to its own right (+x): the relative pose inverse(P_0)·P_1 is a +x translation.
    Predicting the mirrored motion (to the left) costs in the loss; the metric ignores the sign of the direction."""
    rotation = rotation_from_9d(torch.randn(9, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    start = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    poses = se3_from_rotation_translation(rotation.expand(2, 3, 3), torch.stack([start, start + rotation[:, 0]]))[None]
    relative = se3_inverse(poses[0, 0]) @ poses[0, 1]
    torch.testing.assert_close(relative[:3, 3], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    mirrored = poses.clone()
    mirrored[0, 1, :3, 3] = start - rotation[:, 0]
    rotation_error, translation_error = pair_errors_deg(mirrored, poses)
    assert rotation_error.abs().max() < 1e-9 and translation_error.abs().max() < 1e-6
    depth = torch.full((1, 2, 6, 6), 3.0, dtype=torch.float64)
    K = torch.tensor([[5.0, 0, 2.5], [0, 5.0, 2.5], [0, 0, 1]], dtype=torch.float64).expand(1, 2, 3, 3)
    local, valid = unproject_depth(depth, K), torch.ones(1, 2, 6, 6, dtype=torch.bool)
    loss = GeometryLoss(normal_datasets=[], min_valid_pixels=1)
    target = GeometryTarget(depth, valid, K, poses, torch.ones(1, dtype=torch.bool), ["synthetic"])
    assert loss(prediction(local, poses), target).camera_translation < 1e-12
    assert loss(prediction(local, mirrored), target).camera_translation > 1e-3


def test_heads_world_points_are_local_points_moved_by_their_camera_to_world():
    torch.manual_seed(0)
    model = G2VLM(model_config("small")).eval()
    torch.nn.init.normal_(model.dino_projector.weight, std=0.5)  # the zero-initialised projector would hide the frames
    with torch.no_grad():
        out = model.forward_geometry(torch.rand(1, 3, 3, 64, 64))
    rotation, translation = out.camera_to_world[..., :3, :3], out.camera_to_world[..., :3, 3]
    expected = torch.einsum("bnij,bnhwj->bnhwi", rotation, out.local_points) + translation[:, :, None, None]
    torch.testing.assert_close(out.world_points, expected)
    assert (out.camera_to_world[0, 1] - out.camera_to_world[0, 0]).abs().max() > 1e-4  # frames differ


def test_mean_relative_pose_recovers_a_shared_motion_in_any_world_frame_and_sign():
    generator = torch.Generator().manual_seed(0)
    motion = se3_from_rotation_translation(rotation_from_9d(torch.randn(3, 9, generator=generator, dtype=torch.float64)),
                                           torch.randn(3, 3, generator=generator, dtype=torch.float64))
    motion[0] = torch.eye(4, dtype=torch.float64)  # view k relative to view 0
    worlds = se3_from_rotation_translation(rotation_from_9d(torch.randn(20, 9, generator=generator, dtype=torch.float64)),
                                           5 * torch.randn(20, 3, generator=generator, dtype=torch.float64))
    clips = worlds[:, None] @ motion[None]  # (20, 3, 4, 4): the same motion from 20 starting poses
    torch.testing.assert_close(mean_relative_pose(clips).double(), motion, atol=1e-5, rtol=0)
    flipped = motion.clone()
    flipped[1:, :3, 3] *= -1  # 6 of 20 clips move the other way along the same axis
    clips[:6] = worlds[:6, None] @ flipped[None]
    mean = mean_relative_pose(clips).double()
    torch.testing.assert_close(mean[:, :3, :3], motion[:, :3, :3], atol=1e-5, rtol=0)
    torch.testing.assert_close(mean[1:, :3, 3], motion[1:, :3, 3], atol=1e-5, rtol=0)  # the majority's direction
    assert math.isclose(float(pair_errors_deg(mean[None], motion[None])[1].max()), 0.0, abs_tol=1e-3)
