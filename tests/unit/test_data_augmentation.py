"""Crops, focal crops and resizes keep the geometry: unprojection with the updated K lands on the same world
points; depth is sampled nearest (never blended); view sampling windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from g2vlm.datamodules.augmentation import ClipColorJitter, crop_box, crop_resize
from g2vlm.datamodules.multiview.view_sampling import evenly_spaced_views, sample_training_views
from g2vlm.geometry.camera import unproject_depth

SOURCE_H, SOURCE_W = 48, 64
PLANE_DEPTH_M = 2.5


def source_view() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A camera facing a fronto-parallel plane (constant depth). The image encodes each pixel's own source
    coordinates affinely (R = u, G = v, scaled), so the colour of any resampled pixel says where it came from."""
    K = torch.tensor([[[52.0, 0.0, 33.7], [0.0, 55.0, 21.9], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    angle = 0.3
    camera_to_world = torch.eye(4, dtype=torch.float64)[None].clone()
    camera_to_world[0, :3, :3] = torch.tensor(
        [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]], dtype=torch.float64
    )
    camera_to_world[0, :3, 3] = torch.tensor([0.4, -0.2, 1.0], dtype=torch.float64)
    v, u = torch.meshgrid(torch.arange(SOURCE_H, dtype=torch.float64), torch.arange(SOURCE_W, dtype=torch.float64), indexing="ij")
    images = torch.stack([0.1 + 0.8 * u / SOURCE_W, 0.1 + 0.8 * v / SOURCE_H, torch.full_like(u, 0.5)])[None]
    depth = torch.full((1, SOURCE_H, SOURCE_W), PLANE_DEPTH_M, dtype=torch.float64)
    return images, depth, K, camera_to_world


def decode_source_coordinates(images: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) -> (1, H, W, 2) source (u, v) encoded by `source_view`."""
    u = (images[:, 0] - 0.1) / 0.8 * SOURCE_W
    v = (images[:, 1] - 0.1) / 0.8 * SOURCE_H
    return torch.stack([u, v], dim=-1)


def pixel_to_world(uv: torch.Tensor, depth: float, K: torch.Tensor, camera_to_world: torch.Tensor) -> torch.Tensor:
    rays = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1) @ torch.linalg.inv(K[0]).T
    points = rays * depth
    return points @ camera_to_world[0, :3, :3].T + camera_to_world[0, :3, 3]


@pytest.mark.parametrize(
    ("target_hw", "scale", "placement"),
    [
        ((32, 32), 1.0, "principal_point"),  # aspect change + downscale, crop centred on the principal point
        ((24, 40), 0.6, "random"),  # focal crop + random placement
        ((56, 72), 0.7, "random"),  # upscale
        ((30, 30), 0.85, "random"),
        ((48, 64), 1.0, "principal_point"),  # identity size
        ((16, 20), 1.0, "random"),  # 3x reduction: box filter, then bilinear
        ((20, 24), 0.95, "principal_point"),  # 2x reduction on a trimmed box
    ],
)
def test_unprojection_with_updated_K_lands_on_the_same_world_points(target_hw, scale, placement):
    images, depth, K, camera_to_world = source_view()
    rng = np.random.default_rng(hash(target_hw) % 1000)
    for _ in range(3):
        box = crop_box((SOURCE_H, SOURCE_W), target_hw, scale, rng if placement == "random" else None,
                       principal_point=(float(K[0, 0, 2]), float(K[0, 1, 2])))
        out_images, out_depth, _, out_K = crop_resize(images, depth, None, K, box, target_hw)
        assert out_images.shape == (1, 3, *target_hw) and out_depth.shape == (1, *target_hw)
        world_after = unproject_depth(out_depth, out_K, camera_to_world)[0]  # (H, W, 3)
        source_uv = decode_source_coordinates(out_images)[0]
        world_before = pixel_to_world(source_uv, PLANE_DEPTH_M, K, camera_to_world)
        margin = 3  # resampling filters are truncated at the crop border
        error = (world_after - world_before)[margin:-margin, margin:-margin].norm(dim=-1)
        assert error.max() < 1e-4


def test_uint8_images_resample_like_float_images():
    rng = np.random.default_rng(2)
    images_uint8 = torch.from_numpy(rng.integers(0, 256, (2, SOURCE_H, SOURCE_W, 3), dtype=np.uint8)).permute(0, 3, 1, 2)
    K = source_view()[2].float().expand(2, 3, 3)
    for target_hw, scale in [((40, 40), 0.9), ((16, 24), 1.0), ((64, 80), 0.5)]:
        box = crop_box((SOURCE_H, SOURCE_W), target_hw, scale, rng)
        from_uint8, _, _, K_uint8 = crop_resize(images_uint8, None, None, K, box, target_hw)
        from_float, _, _, K_float = crop_resize(images_uint8.float() / 255, None, None, K, box, target_hw)
        assert from_uint8.dtype == torch.uint8 and from_float.dtype == torch.float32
        torch.testing.assert_close(K_uint8, K_float)
        # the same resampling; torch's uint8 kernel uses fixed-point weights and rounds: within one uint8 level
        assert (from_uint8.float() / 255 - from_float).abs().max() <= 1 / 255 + 1e-6


def test_depth_is_resampled_nearest_not_blended():
    images, _, K, _ = source_view()
    v, u = torch.meshgrid(torch.arange(SOURCE_H, dtype=torch.float64), torch.arange(SOURCE_W, dtype=torch.float64), indexing="ij")
    depth_codes = (1.0 + u + 100.0 * v)[None]  # each source pixel has its own value
    rng = np.random.default_rng(0)
    for target_hw, scale in [((20, 36), 0.9), ((60, 60), 0.55), ((33, 47), 1.0)]:
        box = crop_box((SOURCE_H, SOURCE_W), target_hw, scale, rng)
        _, out_depth, _, out_K = crop_resize(images, depth_codes, None, K, box, target_hw)
        codes = out_depth[0] - 1.0
        assert torch.all(codes == torch.round(codes))  # values are source values, never averages
        picked_u, picked_v = codes % 100, torch.div(codes, 100, rounding_mode="floor")
        # the picked source pixel is the one nearest to where the updated K says the output pixel comes from
        out_v, out_u = torch.meshgrid(torch.arange(target_hw[0], dtype=torch.float64), torch.arange(target_hw[1], dtype=torch.float64), indexing="ij")
        rays = torch.stack([out_u, out_v, torch.ones_like(out_u)], -1) @ torch.linalg.inv(out_K[0]).T
        mapped = rays @ K[0].T
        assert (picked_u - mapped[..., 0]).abs().max() <= 0.5 + 1e-9
        assert (picked_v - mapped[..., 1]).abs().max() <= 0.5 + 1e-9


def test_crop_box_keeps_target_aspect_and_stays_inside():
    rng = np.random.default_rng(1)
    for _ in range(50):
        box = crop_box((48, 64), (28, 42), float(rng.uniform(0.5, 1.0)), rng)
        assert 0 <= box.left and box.left + box.width <= 64 and 0 <= box.top and box.top + box.height <= 48
        assert abs(box.width / box.height - 42 / 28) < 0.1
    full = crop_box((48, 64), (48, 48), 1.0)
    assert (full.width, full.height, full.left, full.top) == (48, 48, 8, 0)


def test_colour_jitter_is_one_draw_per_clip():
    torch.manual_seed(0)
    jitter = ClipColorJitter(probability=1.0, grayscale_probability=0.0)
    clips = torch.rand(1, 1, 3, 8, 8).repeat(3, 4, 1, 1, 1)  # three clips of four identical views
    out = jitter.apply_per_clip(clips)
    assert out.shape == clips.shape and not torch.allclose(out, clips)
    for clip in out:
        for view in clip[1:]:
            torch.testing.assert_close(view, clip[0])  # shared by the views of a clip
    assert not torch.allclose(out[0], out[1])  # never shared across clips


def test_training_views_stay_in_the_window_and_are_distinct():
    rng = np.random.default_rng(0)
    for _ in range(100):
        views = sample_training_views(num_frames=30, num_views=5, rng=rng, window=4)
        assert len(set(views)) == 5 and max(views) - min(views) <= 8
    assert sorted(sample_training_views(3, 5, rng, None)[:5]).count(0) >= 1  # short clips repeat frames
    orders = {tuple(sample_training_views(6, 6, rng, None)) for _ in range(20)}
    assert len(orders) > 1  # shuffled
    assert evenly_spaced_views(9, 3) == [0, 4, 8]


def reference_crop_box(source_hw, target_hw, scale, rng, principal_point):
    """crop_box as first written (numpy clips): the Python-min/max version must give the same boxes and draws."""
    source_h, source_w = source_hw
    aspect = target_hw[1] / target_hw[0]
    if source_w / source_h >= aspect:
        height, width = source_h, source_h * aspect
    else:
        height, width = source_w / aspect, source_w
    width = int(np.clip(round(width * scale), 1, source_w))
    height = int(np.clip(round(height * scale), 1, source_h))
    if rng is not None:
        return width, height, int(rng.integers(0, source_w - width + 1)), int(rng.integers(0, source_h - height + 1))
    cx, cy = principal_point
    return (width, height, int(np.clip(round(cx + 0.5 - width / 2), 0, source_w - width)),
            int(np.clip(round(cy + 0.5 - height / 2), 0, source_h - height)))


def test_crop_box_equals_the_numpy_clip_formulation():
    rng, draws, reference_draws = np.random.default_rng(5), np.random.default_rng(6), np.random.default_rng(6)
    for _ in range(300):
        source_hw = (int(rng.integers(1, 80)), int(rng.integers(1, 80)))
        target_hw = (int(rng.integers(1, 60)), int(rng.integers(1, 60)))
        scale = float(rng.uniform(0.05, 1.0))
        principal_point = (float(rng.uniform(-5, source_hw[1] + 5)), float(rng.uniform(-5, source_hw[0] + 5)))
        for random in (True, False):
            box = crop_box(source_hw, target_hw, scale, draws if random else None, principal_point)
            expected = reference_crop_box(source_hw, target_hw, scale, reference_draws if random else None,
                                          principal_point)
            assert (box.width, box.height, box.left, box.top) == expected


def reference_training_views(num_frames, num_views, rng, window):
    """sample_training_views as first written (choice from the list of candidates, numpy clip)."""
    reference = int(rng.integers(num_frames))
    span = num_frames if window is None else min(num_frames, 2 * window + 1)
    start = int(np.clip(reference - (span - 1) // 2, 0, num_frames - span))
    others = [i for i in range(start, start + span) if i != reference]
    if len(others) >= num_views - 1:
        picks = rng.choice(others, num_views - 1, replace=False).tolist() if num_views > 1 else []
    else:
        picks = others + rng.choice(range(start, start + span), num_views - 1 - len(others), replace=True).tolist()
    views = [reference, *picks]
    rng.shuffle(views)
    return [int(i) for i in views]


def test_training_views_draw_exactly_as_the_reference():
    rng, reference_rng, cases = np.random.default_rng(3), np.random.default_rng(3), np.random.default_rng(4)
    for _ in range(500):
        num_frames, num_views = int(cases.integers(1, 40)), int(cases.integers(1, 12))
        window = None if cases.random() < 0.3 else int(cases.integers(0, 10))
        assert sample_training_views(num_frames, num_views, rng, window) == reference_training_views(
            num_frames, num_views, reference_rng, window)
    assert rng.random() == reference_rng.random()  # the same number of draws
