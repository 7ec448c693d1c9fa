"""Figures a person reads: the labelled depth comparison, the colour-bar ticks, the point renderer and the
similarity that moves a prediction onto the ground truth."""

from __future__ import annotations

import numpy as np
import torch

from g2vlm.figures import _nice_ticks as nice_ticks
from g2vlm.figures import (
    align_prediction,
    colourise_error,
    depth_comparison_figure,
    point_cloud_figure,
    render_points,
)
from g2vlm.geometry.camera import se3_from_rotation_translation
from g2vlm.geometry.rotation import rotation_from_9d
from g2vlm.visual_io import colourise


def find_panel(figure: np.ndarray, panel: np.ndarray) -> list[tuple[int, int]]:
    """Top-left corners where `panel` occurs exactly in `figure`."""
    h, w = panel.shape[:2]
    hits = []
    for y, x in np.argwhere((figure[: figure.shape[0] - h + 1, : figure.shape[1] - w + 1] == panel[0, 0]).all(-1)):
        if (figure[y : y + h, x : x + w] == panel).all():
            hits.append((int(y), int(x)))
    return hits


def clip(seed=0, views=2, size=16):
    generator = np.random.default_rng(seed)
    rgb = generator.integers(0, 256, (views, size, size, 3), dtype=np.uint8)
    depth = 1.0 + 4.0 * generator.random((views, size, size))
    valid = np.ones(depth.shape, bool)
    valid[0, 0, :3] = False
    return rgb, depth, valid


def test_perfect_prediction_shows_twice_the_ground_truth_and_a_white_error_upsampled():
    rgb, depth, valid = clip()
    figure = depth_comparison_figure(rgb, depth, valid, depth.copy(), scale=4)
    low, high = np.percentile(depth[valid], [1, 99])
    for view in range(2):
        gt_panel = colourise(depth[view], valid[view], low, high).repeat(4, 0).repeat(4, 1)
        pred_panel = colourise(depth[view], None, low, high).repeat(4, 0).repeat(4, 1)
        image_panel = rgb[view].repeat(4, 0).repeat(4, 1)
        (image_at,) = find_panel(figure, image_panel)
        row = image_at[0]
        gt_x = min(x for y, x in find_panel(figure, gt_panel) if y == row and x > image_at[1])  # GT right of the image
        assert any(y == row and x > gt_x for y, x in find_panel(figure, pred_panel))  # the prediction right of it
        error_panel = colourise_error(np.zeros((16, 16)), valid[view], 1.0).repeat(4, 0).repeat(4, 1)
        assert any(y == row and x > gt_x for y, x in find_panel(figure, error_panel))
    assert figure.shape[1] >= 4 * 64  # four upsampled columns and the colour bars


def test_demo_sized_figure_is_at_least_512_pixels_wide():
    rgb, depth, valid = clip(size=64, views=4)
    assert depth_comparison_figure(rgb, depth, valid, depth * 1.1).shape[1] >= 512


def test_error_ramp_is_white_at_zero_and_dark_red_at_the_top_invalid_black():
    rgb = colourise_error(np.array([[0.0, 2.0, 0.5]]), np.array([[True, True, False]]), 1.0)
    assert tuple(rgb[0, 0]) == (255, 255, 255)
    assert tuple(rgb[0, 1]) == (127, 0, 0)
    assert tuple(rgb[0, 2]) == (0, 0, 0)


def test_colour_bar_ticks_are_round_metres_inside_the_range():
    assert nice_ticks(1.23, 6.7) == [2.0, 4.0, 6.0]
    assert nice_ticks(0.0, 0.4) == [0.0, 0.1, 0.2, 0.30000000000000004, 0.4] or np.allclose(nice_ticks(0.0, 0.4),
                                                                                              [0, 0.1, 0.2, 0.3, 0.4])


def test_render_points_projects_with_the_pinhole_and_keeps_the_nearest():
    world_to_camera = np.eye(4)
    points = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 5.0], [1.0, 0.0, 2.0], [0.0, 0.0, -1.0]])
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)
    rgb, depth = render_points(points, colours, world_to_camera, focal=10.0, size=21, radius=0)
    assert tuple(rgb[10, 10]) == (255, 0, 0) and depth[10, 10] == 2.0  # nearer red hides green behind it
    assert tuple(rgb[10, 15]) == (0, 0, 255)  # x = 1 at z = 2: u = 10 + 10 * 1 / 2
    assert (rgb != 9).any(-1).all()  # the point behind the camera is not drawn
    assert np.isinf(depth).sum() == 21 * 21 - 2


def test_align_prediction_undoes_a_similarity_of_points_and_cameras():
    generator = torch.Generator().manual_seed(0)
    gt_points = torch.randn(50, 3, generator=generator, dtype=torch.float64)
    gt_cameras = se3_from_rotation_translation(rotation_from_9d(torch.randn(3, 9, generator=generator, dtype=torch.float64)),
                                               torch.randn(3, 3, generator=generator, dtype=torch.float64))
    rotation = rotation_from_9d(torch.randn(9, generator=generator, dtype=torch.float64))
    shift = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    pred_points = 0.3 * gt_points @ rotation.T + shift
    pred_cameras = gt_cameras.clone()
    pred_cameras[:, :3, :3] = rotation @ gt_cameras[:, :3, :3]
    pred_cameras[:, :3, 3] = 0.3 * gt_cameras[:, :3, 3] @ rotation.T + shift
    points, cameras = align_prediction(pred_points, pred_cameras, gt_points, torch.ones(50, dtype=torch.bool))
    np.testing.assert_allclose(points, gt_points.numpy(), atol=1e-9)
    np.testing.assert_allclose(cameras, gt_cameras.numpy(), atol=1e-9)


def test_point_cloud_figure_draws_both_clouds_and_the_predicted_cameras_in_red():
    generator = np.random.default_rng(0)
    points = generator.normal(size=(500, 3)) + [0.0, 0.0, 4.0]
    colours = generator.integers(0, 256, (500, 3), dtype=np.uint8)
    cameras = np.repeat(np.eye(4)[None], 2, axis=0)
    cameras[1, 0, 3] = 0.5
    figure = point_cloud_figure(points, cameras, points, cameras, colours, size=256)
    assert figure.shape[1] >= 512
    red = (figure == (220, 40, 40)).all(-1)
    assert red[:, figure.shape[1] // 2 :].any() and not red[:, : figure.shape[1] // 2].any()
