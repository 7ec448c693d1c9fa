"""The visualiser's depth comparison panel."""

from __future__ import annotations

import numpy as np
import torch

from g2vlm.callbacks.geometry_visualiser import depth_comparison


def test_depth_comparison_aligns_scale_and_lays_out_four_panels():
    generator = torch.Generator().manual_seed(0)
    depth_m = 1.0 + 3.0 * torch.rand(2, 8, 6, generator=generator)
    valid = torch.ones(2, 8, 6, dtype=torch.bool)
    valid[1, 0, 0] = False
    image = torch.rand(2, 3, 8, 6, generator=generator)
    grid = depth_comparison(image, depth_m, valid, pred_depth=0.5 * depth_m)  # a pure scale error
    assert grid.shape == (16, 24, 3) and grid.dtype == np.uint8
    view0 = grid[:8]
    np.testing.assert_array_equal(view0[:, :6], (image[0].permute(1, 2, 0) * 255).round().byte().numpy())
    np.testing.assert_array_equal(view0[:, 6:12], view0[:, 12:18])  # aligned prediction == GT
    assert (view0[:, 18:] == view0[0, 18]).all()  # zero error everywhere: one colour
    assert (grid[8, 6:12] == 0).all(axis=-1)[0]  # an invalid GT pixel is black
