"""Rotations: the nearest rotation to a matrix, the 9-D -> SO(3) head parameterisation and the geodesic angle.

All functions return float32 (float64 if the input is float64); half-precision inputs are upcast first
(SVD is neither supported nor stable in bf16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from g2vlm.geometry.precision import outside_autocast, upcast
from g2vlm.geometry.vector import safe_norm


class _SpecialProcrustes(torch.autograd.Function):
    """Nearest rotation to a 3x3 matrix M: R = U diag(1, 1, det(U V^T)) V^T for M = U S V^T.

    The backward is the closed form of the polar factor's differential, dL/dM = U' B V^T with
    B_ij = (A_ij - A_ji) / (s'_i + s'_j), A = U'^T G V, U' = U diag(1, 1, d), s' = (s1, s2, d·s3).
    It only divides by sums of singular values, so it stays finite at repeated singular values
    (e.g. M = I), where differentiating U and V separately (torch's SVD backward) gives inf/NaN.
    """

    @staticmethod
    def forward(ctx, matrix: torch.Tensor) -> torch.Tensor:
        u, s, vh = torch.linalg.svd(matrix)
        det = torch.linalg.det(u @ vh)
        sign = torch.ones_like(s)
        sign[..., 2] = torch.where(det < 0, -1.0, 1.0).to(s.dtype)
        u_signed = u * sign.unsqueeze(-2)  # flip the last column of U when det < 0
        rotation = u_signed @ vh
        ctx.save_for_backward(u_signed, s * sign, vh)
        return rotation

    @staticmethod
    def backward(ctx, grad_rotation: torch.Tensor) -> torch.Tensor:
        u_signed, s_signed, vh = ctx.saved_tensors
        a = u_signed.transpose(-1, -2) @ grad_rotation @ vh.transpose(-1, -2)
        denominator = s_signed.unsqueeze(-1) + s_signed.unsqueeze(-2)
        tiny = torch.finfo(denominator.dtype).eps
        denominator = torch.where(
            denominator.abs() < tiny, torch.full_like(denominator, tiny).copysign(denominator), denominator
        )
        b = (a - a.transpose(-1, -2)) / denominator
        return u_signed @ b @ vh


@outside_autocast
def nearest_rotation(matrix: torch.Tensor) -> torch.Tensor:
    """The rotation nearest (Frobenius) to each 3x3 matrix, det +1 (special Procrustes). (..., 3, 3) -> (..., 3, 3).

    Differentiable, with a gradient that stays finite at repeated singular values (`_SpecialProcrustes`)."""
    (matrix,) = upcast(matrix)
    return _SpecialProcrustes.apply(matrix)


@outside_autocast
def rotation_from_9d(x: torch.Tensor) -> torch.Tensor:
    """9-D head output -> rotation matrix in SO(3). (..., 9) -> (..., 3, 3).

    As the official camera head (π³ `svd_orthogonalize`): reshape to 3x3 (row-major), L2-normalise each
    row, transpose, SVD, and fix the determinant's sign so that det = +1. The transposed-SVD formulation
    returns the rotation nearest (Frobenius) to the row-normalised matrix itself.
    """
    (x,) = upcast(x)
    if x.shape[-1] != 9:
        raise ValueError(f"geometry/rotation.py rotation_from_9d: last dim must be 9, got {tuple(x.shape)}")
    matrix = F.normalize(x.reshape(*x.shape[:-1], 3, 3), p=2.0, dim=-1)
    # Official: SVD of the transpose M^T = U S V^T, R = V diag(1,1,d) U^T, i.e. the special
    # Procrustes projection of M (row-normalised) itself.
    return nearest_rotation(matrix)


@outside_autocast
def rotation_angle(R_a: torch.Tensor, R_b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle (radians, in [0, π]) between rotations. (..., 3, 3) x (..., 3, 3) -> (...).

    Uses atan2(|axis vector|, tr - 1) of R_a^T R_b, which is accurate near 0 and near π, unlike
    arccos((tr - 1) / 2) whose argument saturates there; its gradient is finite everywhere (at exactly
    0 or π the subgradient 0 is used for the sine part).
    """
    R_a, R_b = upcast(R_a, R_b)
    relative = R_a.transpose(-1, -2) @ R_b
    trace = relative.diagonal(dim1=-2, dim2=-1).sum(-1)
    axis = torch.stack(
        [
            relative[..., 2, 1] - relative[..., 1, 2],
            relative[..., 0, 2] - relative[..., 2, 0],
            relative[..., 1, 0] - relative[..., 0, 1],
        ],
        dim=-1,
    )
    return torch.atan2(safe_norm(axis), trace - 1.0)

