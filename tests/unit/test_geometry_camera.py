import math

import pytest
import torch

from g2vlm.geometry.camera import (
    from_homogeneous,
    project_points,
    relative_pose,
    se3_compose,
    se3_from_rotation_translation,
    se3_inverse,
    to_homogeneous,
    transform_points,
    unproject_depth,
)


def random_rotation(*batch, dtype=torch.float64, generator=None):
    q, r = torch.linalg.qr(torch.randn(*batch, 3, 3, dtype=dtype, generator=generator))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    det = torch.linalg.det(q)
    q[..., :, 2] *= det.unsqueeze(-1)
    return q


def random_pose(*batch, dtype=torch.float64, generator=None):
    rotation = random_rotation(*batch, dtype=dtype, generator=generator)
    translation = torch.randn(*batch, 3, dtype=dtype, generator=generator)
    return se3_from_rotation_translation(rotation, translation)


def intrinsics(fx, fy, cx, cy, dtype=torch.float64):
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype)


def test_se3_inverse_composes_to_identity():
    g = torch.Generator().manual_seed(0)
    T = random_pose(4, 3, generator=g)
    eye = torch.eye(4, dtype=torch.float64).expand(4, 3, 4, 4)
    torch.testing.assert_close(se3_compose(T, se3_inverse(T)), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(se3_inverse(T), torch.linalg.inv(T), atol=1e-12, rtol=0)


def test_relative_pose_maps_camera_j_to_camera_i():
    g = torch.Generator().manual_seed(1)
    P_i, P_j = random_pose(2, generator=g), random_pose(2, generator=g)
    point_in_j = torch.randn(2, 5, 3, dtype=torch.float64, generator=g)
    world = transform_points(P_j, point_in_j)
    expected_in_i = transform_points(se3_inverse(P_i), world)
    torch.testing.assert_close(transform_points(relative_pose(P_i, P_j), point_in_j), expected_in_i)


def test_transform_points_matches_homogeneous_product_and_keeps_inner_shape():
    g = torch.Generator().manual_seed(2)
    T = random_pose(2, 3, generator=g)
    points = torch.randn(2, 3, 4, 5, 3, dtype=torch.float64, generator=g)
    out = transform_points(T, points)
    assert out.shape == points.shape
    expected = from_homogeneous(torch.einsum("bnij,bnhwj->bnhwi", T, to_homogeneous(points)))
    torch.testing.assert_close(out, expected)
    # broadcasting: one pose per batch element applied to all frames
    out_b = transform_points(T[:, :1], points)
    torch.testing.assert_close(out_b[:, 2], transform_points(T[:, 0], points[:, 2]))


def test_unproject_hand_computed_pixels():
    depth = torch.full((3, 4), 2.0, dtype=torch.float64)
    K = intrinsics(2.0, 4.0, 1.5, 1.0)  # centred principal point for W=4, H=3
    points = unproject_depth(depth, K)
    assert points.shape == (3, 4, 3)
    # pixel (row 0, col 0): x = (0 - 1.5) / 2 * 2 = -1.5, y = (0 - 1) / 4 * 2 = -0.5
    torch.testing.assert_close(points[0, 0], torch.tensor([-1.5, -0.5, 2.0], dtype=torch.float64))
    # pixel (row 1, col 3): x = 1.5 / 2 * 2 = 1.5, y = 0
    torch.testing.assert_close(points[1, 3], torch.tensor([1.5, 0.0, 2.0], dtype=torch.float64))
    # image centre (u, v) = ((W-1)/2, (H-1)/2) is on the optical axis: mean of the middle row's x is 0
    assert points[1, :, 0].mean().abs() < 1e-12


def test_unproject_then_project_round_trips_with_poses():
    g = torch.Generator().manual_seed(3)
    B, N, H, W = 2, 3, 5, 6
    depth = torch.rand(B, N, H, W, dtype=torch.float64, generator=g) * 3 + 0.5
    K = intrinsics(5.0, 6.0, (W - 1) / 2, (H - 1) / 2).expand(B, N, 3, 3)
    c2w = random_pose(B, N, generator=g)
    world = unproject_depth(depth, K, c2w)
    assert world.shape == (B, N, H, W, 3)
    uv, z = project_points(world, K, c2w)
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    torch.testing.assert_close(uv, torch.stack([u, v], -1).expand(B, N, H, W, 2))
    torch.testing.assert_close(z, depth)
    # the world points, brought back into each camera, equal the camera-frame unprojection
    torch.testing.assert_close(transform_points(se3_inverse(c2w), world), unproject_depth(depth, K))


def test_dtype_rule_bf16_upcast_float64_kept():
    depth = torch.ones(2, 3, 4, dtype=torch.bfloat16)
    K = intrinsics(2.0, 2.0, 1.5, 1.0, dtype=torch.bfloat16).expand(2, 3, 3)
    assert unproject_depth(depth, K).dtype == torch.float32
    assert se3_inverse(torch.eye(4, dtype=torch.float16)).dtype == torch.float32
    assert se3_inverse(torch.eye(4, dtype=torch.float64)).dtype == torch.float64


def test_transform_points_rejects_bad_shape():
    with pytest.raises(ValueError, match="transform_points"):
        transform_points(torch.eye(4).expand(2, 4, 4), torch.zeros(2, 4))


def test_project_points_known_rotation():
    # camera rotated 90° about world y, sitting at the origin: world +x is the camera's forward (-z) ...
    angle = math.pi / 2
    rotation = torch.tensor(
        [[math.cos(angle), 0.0, math.sin(angle)], [0.0, 1.0, 0.0], [-math.sin(angle), 0.0, math.cos(angle)]],
        dtype=torch.float64,
    )
    c2w = se3_from_rotation_translation(rotation, torch.zeros(3, dtype=torch.float64))
    # the camera's forward axis (0, 0, 1) maps to world R @ (0, 0, 1) = (1, 0, 0)
    K = intrinsics(10.0, 10.0, 4.0, 3.0)
    uv, z = project_points(torch.tensor([[3.0, 0.0, 0.0]], dtype=torch.float64), K, c2w)
    torch.testing.assert_close(uv, torch.tensor([[4.0, 3.0]], dtype=torch.float64))
    torch.testing.assert_close(z, torch.tensor([3.0], dtype=torch.float64))


def test_geometry_is_fp32_inside_a_bf16_autocast_region():
    from g2vlm.geometry.alignment import umeyama_sim3
    from g2vlm.geometry.rotation import rotation_angle, rotation_from_9d

    g = torch.Generator().manual_seed(9)
    x = torch.randn(4, 9, generator=g)
    points = torch.randn(2, 5, 3, generator=g)
    T = se3_from_rotation_translation(rotation_from_9d(x[:2]), torch.randn(2, 3, generator=g))
    K = torch.tensor([[5.0, 0, 2.0], [0, 5.0, 1.5], [0, 0, 1]]).expand(2, 3, 3)
    depth = torch.rand(2, 4, 5, generator=g) + 1
    reference = (rotation_from_9d(x), transform_points(T, points), unproject_depth(depth, K, T), umeyama_sim3(points, 2 * points)[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = (rotation_from_9d(x), transform_points(T, points), unproject_depth(depth, K, T), umeyama_sim3(points, 2 * points)[0])
        angle = rotation_angle(inside[0], inside[0].flip(0))
    assert angle.dtype == torch.float32
    for expected, value in zip(reference, inside):
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, expected)
