import math

import pytest
import torch

from g2vlm.geometry.camera import se3_from_rotation_translation, transform_points
from g2vlm.geometry.icp import icp_point_to_point
from g2vlm.geometry.nearest_neighbors import NearestNeighborIndex, nearest_neighbors
from g2vlm.geometry.normals import knn_normals


def surface_points(count, seed=0):
    """Points on three unequal faces of a box corner (a surface, like a scan), unique up to rotation."""
    g = torch.Generator().manual_seed(seed)
    uv = torch.rand(count, 2, generator=g)
    face = torch.randint(0, 3, (count,), generator=g)
    zeros = torch.zeros(count)
    points = torch.where(
        (face == 0)[:, None],
        torch.stack([2.0 * uv[:, 0], 1.0 * uv[:, 1], zeros], -1),
        torch.where((face == 1)[:, None], torch.stack([2.0 * uv[:, 0], zeros, 0.6 * uv[:, 1]], -1), torch.stack([zeros, uv[:, 0], 0.6 * uv[:, 1]], -1)),
    )
    return points


def brute_force(queries, reference, k):
    distances = (queries[:, None, :] - reference[None, :, :]).norm(dim=-1)
    return distances.topk(k, dim=-1, largest=False)


@pytest.mark.parametrize("k", [1, 8])
def test_search_matches_brute_force_including_outliers(k):
    g = torch.Generator().manual_seed(1)
    reference = surface_points(3000)
    queries = surface_points(800, seed=2) + 0.01 * torch.randn(800, 3, generator=g)
    queries[:40] += 3.0 * torch.randn(40, 3, generator=g)  # far outliers
    distances, indices = NearestNeighborIndex(reference).query(queries, k=k)
    expected_distances, expected_indices = brute_force(queries, reference, k)
    torch.testing.assert_close(distances, expected_distances, atol=1e-5, rtol=0)
    # indices agree except at exact distance ties; the returned indices must realise the distances
    realised = (reference[indices] - queries[:, None, :]).norm(dim=-1)
    torch.testing.assert_close(realised, expected_distances, atol=1e-5, rtol=0)
    assert (indices == expected_indices).float().mean() > 0.99


def test_max_distance_reports_misses_and_small_clouds():
    reference = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    queries = torch.tensor([[0.05, 0.0, 0.0], [0.5, 0.3, 0.0], [5.0, 5.0, 5.0]])
    distances, indices = nearest_neighbors(queries, reference, max_distance=0.2)
    assert indices[:, 0].tolist() == [0, -1, -1]
    assert math.isinf(distances[1, 0]) and abs(distances[0, 0] - 0.05) < 1e-7
    distances, indices = nearest_neighbors(queries, reference, k=3)  # fewer reference points than k
    assert (indices[:, 2] == -1).all() and torch.isinf(distances[:, 2]).all()
    assert indices[2, :2].tolist() == [1, 0]


def test_icp_recovers_a_small_rigid_motion():
    target = surface_points(4000, seed=3)
    angle = math.radians(2.0)
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    motion = se3_from_rotation_translation(rotation, torch.tensor([0.02, -0.01, 0.015]))
    source = transform_points(torch.linalg.inv(motion), target)
    result = icp_point_to_point(source, target, max_distance=0.1)
    torch.testing.assert_close(result.transform, motion, atol=2e-4, rtol=0)
    assert result.fitness == 1.0 and result.inlier_rmse < 1e-3 and result.iterations < 30


def test_knn_normals_of_planes_are_unoriented_axes():
    g = torch.Generator().manual_seed(4)
    plane = torch.cat([torch.rand(500, 2, generator=g), torch.zeros(500, 1)], -1)
    normals = knn_normals(plane, k=30)
    torch.testing.assert_close(normals[:, 2].abs(), torch.ones(500), atol=1e-5, rtol=0)


def test_knn_normals_of_clouds_smaller_than_k():
    square = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.5, 0.5, 0.0]])
    tilted = square @ torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8], [0.0, -0.8, 0.6]]).T  # normal R e_z = (0, 0.8, 0.6)
    normals = knn_normals(tilted, k=30)  # every point uses all 5
    torch.testing.assert_close((normals @ torch.tensor([0.0, 0.8, 0.6])).abs(), torch.ones(5), atol=1e-5, rtol=0)
    assert knn_normals(square[:2], k=30).tolist() == [[0.0, 0.0, 1.0]] * 2  # fewer than 3 points: Open3D's default
