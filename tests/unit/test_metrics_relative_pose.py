import math

import numpy as np
import torch

from g2vlm.geometry.camera import se3_from_rotation_translation
from g2vlm.geometry.rotation import rotation_from_9d
from g2vlm.metrics.relative_pose import RelativePoseMetrics, pair_errors_deg, pose_auc


def random_poses(B, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    rotation = rotation_from_9d(torch.randn(B, N, 9, dtype=torch.float64, generator=g))
    return se3_from_rotation_translation(rotation, torch.randn(B, N, 3, dtype=torch.float64, generator=g))


def about_z(degrees):
    a = math.radians(degrees)
    return torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]], dtype=torch.float64)


def test_gt_vs_gt_is_perfect_and_invariant_to_world_frame_and_scale():
    gt = random_poses(2, 10)
    metric = RelativePoseMetrics()
    metric.update(gt, gt)
    world = se3_from_rotation_translation(about_z(37.0), torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    moved = world @ gt
    moved[..., :3, 3] *= 3.0  # any global scale
    metric.update(moved, gt)
    out = metric.compute()
    for tau in (5, 15, 30):
        assert out[f"RRA@{tau}"] == 100 and out[f"RTA@{tau}"] == 100
        torch.testing.assert_close(out[f"AUC@{tau}"], torch.tensor(100.0, dtype=torch.float64))
    assert out["pairs"] == 2 * 2 * 45


def test_known_rotation_of_one_camera():
    gt = random_poses(1, 4, seed=1)
    pred = gt.clone()
    pred[0, 2, :3, :3] = pred[0, 2, :3, :3] @ about_z(10.0)  # rotate camera 2 about its own optical axis
    rotation_error, _ = pair_errors_deg(pred, gt)
    involved = torch.tensor([i == 2 or j == 2 for i, j in zip(*torch.triu_indices(4, 4, 1).tolist())])
    torch.testing.assert_close(rotation_error[0, involved], torch.full((3,), 10.0, dtype=torch.float64))
    assert rotation_error[0, ~involved].abs().max() < 1e-9
    metric = RelativePoseMetrics()
    metric.update(pred, gt)
    out = metric.compute()
    assert out["RRA@5"] == 50 and out["RRA@15"] == 100


def test_translation_direction_error_without_sign():
    identity = torch.eye(3, dtype=torch.float64)
    def poses(c1):
        centres = torch.tensor([[0.0, 0.0, 0.0], c1], dtype=torch.float64)
        return se3_from_rotation_translation(identity.expand(2, 3, 3), centres)[None]
    gt = poses([1.0, 0.0, 0.0])
    assert pair_errors_deg(poses([-2.0, 0.0, 0.0]), gt)[1].item() < 1e-9  # reversed direction: 0 after sign removal
    torch.testing.assert_close(pair_errors_deg(poses([1.0, 1.0, 0.0]), gt)[1], torch.tensor([[45.0]], dtype=torch.float64))
    assert pair_errors_deg(poses([0.0, 0.0, 0.0]), gt)[1].item() == 90.0  # zero translation, as the official eps formula


def test_auc_matches_numpy_histogram_definition():
    rotation = torch.tensor([0.5, 1.5, 29.5, 31.0, 3.0, 0.0], dtype=torch.float64)
    translation = torch.tensor([0.2, 0.1, 2.0, 1.0, 30.0, 0.0], dtype=torch.float64)
    errors = np.maximum(rotation.numpy(), translation.numpy())
    histogram, _ = np.histogram(errors, bins=np.arange(31))
    expected = np.mean(np.cumsum(histogram / len(errors)))
    assert abs(pose_auc(rotation, translation, 30).item() - expected) < 1e-12
    torch.testing.assert_close(pose_auc(torch.zeros(5), torch.zeros(5), 30), torch.tensor(1.0, dtype=torch.float64))
