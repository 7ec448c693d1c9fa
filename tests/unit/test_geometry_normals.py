import math

import torch

from g2vlm.geometry.camera import unproject_depth
from g2vlm.geometry.normals import (
    depth_edges,
    point_map_normals,
    quad_triangle_masks,
    quad_triangle_normals,
)


def plane_point_map(height=6, width=7, tilt=0.0):
    """Points of the plane z = 2 + tilt·x seen by a centred pinhole camera."""
    K = torch.tensor([[5.0, 0, (width - 1) / 2], [0, 5.0, (height - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    rays = unproject_depth(torch.ones(height, width, dtype=torch.float64), K)
    depth = 2.0 / (1.0 - tilt * rays[..., 0])  # z = 2 + tilt·x with x = ray_x·z
    return unproject_depth(depth, K)


def test_point_map_normals_of_planes():
    normals, ok = point_map_normals(plane_point_map())
    assert ok.all()
    torch.testing.assert_close(normals, torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64).expand_as(normals))
    tilt = 0.5
    normals, _ = point_map_normals(plane_point_map(tilt=tilt))
    expected = torch.tensor([tilt, 0.0, -1.0], dtype=torch.float64) / math.sqrt(1 + tilt**2)
    torch.testing.assert_close(normals, expected.expand_as(normals))


def test_point_map_normals_respect_validity():
    points = plane_point_map()
    valid = torch.ones(6, 7, dtype=torch.bool)
    valid[:, 3] = False  # a column of holes: one-sided differences are used next to it
    points[:, 3] = 1e6  # garbage in invalid pixels must not leak
    normals, ok = point_map_normals(points, valid)
    assert not ok[:, 3].any() and ok[:, [2, 4]].all()
    torch.testing.assert_close(normals[ok], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64).expand(int(ok.sum()), 3))


def test_quad_triangle_normals_are_parallel_on_a_plane():
    points = plane_point_map(tilt=0.3)
    normals = quad_triangle_normals(points)
    assert len(normals) == 4 and normals[0].shape == (5, 6, 3)
    reference, _ = point_map_normals(points)
    for n in normals:
        unit = n / n.norm(dim=-1, keepdim=True)
        torch.testing.assert_close(unit.abs(), reference[:-1, :-1].abs())
    valid = torch.ones(6, 7, dtype=torch.bool)
    valid[0, 0] = False
    masks = quad_triangle_masks(valid)
    # the quad at (0, 0) loses the three triangles that use its left-up corner
    assert [bool(m[0, 0]) for m in masks] == [True, False, False, False]


def test_depth_edges_hand_computed():
    depth = torch.tensor([[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]]).expand(4, 6)
    edges = depth_edges(depth, rtol=0.03)
    expected = torch.tensor([[False, False, True, True, False, False]]).expand(4, 6)
    assert torch.equal(edges, expected)
    assert torch.equal(depth_edges(depth, atol=1.5), torch.zeros(4, 6, dtype=torch.bool))
    # invalid pixels do not create edges
    valid = torch.ones(4, 6, dtype=torch.bool)
    valid[:, 3:] = False
    assert not depth_edges(depth, valid, rtol=0.03).any()
