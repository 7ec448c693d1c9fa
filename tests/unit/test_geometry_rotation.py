import math

import torch

from g2vlm.geometry.rotation import rotation_angle, rotation_from_9d


def axis_angle(axis, angle, dtype=torch.float64):
    """Rodrigues, written out for the test."""
    axis = torch.as_tensor(axis, dtype=dtype)
    axis = axis / axis.norm()
    k = torch.tensor(
        [[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]], dtype=dtype
    )
    return torch.eye(3, dtype=dtype) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def official_svd_orthogonalize(m9):
    """The official π³ formulation (torch.svd of the transposed row-normalised matrix), for parity."""
    m = torch.nn.functional.normalize(m9.reshape(-1, 3, 3), p=2, dim=-1).transpose(-1, -2)
    u, _, v = torch.svd(m)
    det = torch.det(v @ u.transpose(-2, -1))
    return torch.cat([v[:, :, :-1], v[:, :, -1:] * det.view(-1, 1, 1)], dim=2) @ u.transpose(-2, -1)


def test_rotation_from_9d_is_in_so3_and_matches_official_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 9, dtype=torch.float64, generator=g)
    R = rotation_from_9d(x)
    assert R.shape == (64, 3, 3)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, torch.eye(3, dtype=torch.float64).expand(64, 3, 3))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(64, dtype=torch.float64))
    torch.testing.assert_close(R, official_svd_orthogonalize(x))


def test_rotation_from_9d_fixed_points_and_reflections():
    R = axis_angle([1.0, 2.0, 3.0], 0.7)
    torch.testing.assert_close(rotation_from_9d(R.reshape(9)), R)
    # rows scaled independently: row normalisation removes the scales
    torch.testing.assert_close(rotation_from_9d((R * torch.tensor([[3.0], [0.5], [7.0]], dtype=torch.float64)).reshape(9)), R)
    # a reflection (det -1) still lands on SO(3)
    reflection = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)) @ R
    out = rotation_from_9d(reflection.reshape(1, 9))
    torch.testing.assert_close(torch.linalg.det(out), torch.ones(1, dtype=torch.float64))


def test_rotation_from_9d_gradcheck_and_finite_grad_at_identity():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 9, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(rotation_from_9d, (x,))
    # a det<0 input (special case of the projection)
    reflected = (torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)) @ axis_angle([0, 1, 1], 0.3))
    reflected = (reflected + 0.1 * torch.randn(3, 3, dtype=torch.float64, generator=g)).reshape(1, 9)
    assert torch.autograd.gradcheck(rotation_from_9d, (reflected.requires_grad_(),))
    # identity: all singular values equal; torch's own SVD backward gives NaN here
    identity = torch.eye(3, dtype=torch.float64).reshape(1, 9).requires_grad_()
    assert torch.autograd.gradcheck(rotation_from_9d, (identity,))
    (rotation_from_9d(identity.float()) * torch.randn(3, 3)).sum().backward()
    assert torch.isfinite(identity.grad).all()


def test_rotation_from_9d_bf16_input_gives_fp32():
    x = torch.randn(2, 9).bfloat16()
    assert rotation_from_9d(x).dtype == torch.float32


def test_rotation_angle_known_angles_including_near_zero_and_pi():
    base = axis_angle([0.3, -1.0, 0.4], 1.1)
    for angle in [0.0, 1e-7, 1e-3, 0.5, math.pi / 2, 3.0, math.pi - 1e-6, math.pi]:
        other = base @ axis_angle([1.0, 1.0, -2.0], angle)
        measured = rotation_angle(base, other)
        assert abs(measured.item() - angle) < 1e-9, (angle, measured.item())
        torch.testing.assert_close(rotation_angle(other, base), measured)


def test_rotation_angle_batched_shape_and_fp32_accuracy_near_zero():
    g = torch.Generator().manual_seed(2)
    R = rotation_from_9d(torch.randn(5, 7, 9, dtype=torch.float64, generator=g))
    assert rotation_angle(R, R).shape == (5, 7)
    # fp32: the arccos form would return ~3e-4 rad for a 1e-5 rad rotation; atan2 stays accurate
    small = axis_angle([0, 0, 1], 1e-5).float()
    assert abs(rotation_angle(torch.eye(3), small).item() - 1e-5) < 1e-7


def test_rotation_angle_gradient_finite_at_zero_and_pi():
    for angle in [0.0, math.pi]:
        R_b = axis_angle([0, 1, 0], angle).requires_grad_()
        R_a = torch.eye(3, dtype=torch.float64, requires_grad=True)
        rotation_angle(R_a, R_b).backward()
        assert torch.isfinite(R_a.grad).all() and torch.isfinite(R_b.grad).all()
    R_a = axis_angle([1, 2, 0], 0.4).requires_grad_()
    R_b = axis_angle([0, 1, 3], 1.2).requires_grad_()
    assert torch.autograd.gradcheck(rotation_angle, (R_a, R_b))


def test_rotation_from_9d_shapes_on_meta_device():
    # meta tensors (shape inference, FLOP counting) have no autocast; the wrapper must not require it
    out = rotation_angle(torch.empty(2, 3, 3, device="meta"), torch.empty(2, 3, 3, device="meta"))
    assert out.shape == (2,) and out.device.type == "meta"
