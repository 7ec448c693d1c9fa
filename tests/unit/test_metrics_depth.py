import torch

from g2vlm.metrics.depth import DepthMetrics


def random_depth(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g) * 9 + 0.5


def test_gt_vs_gt_is_perfect_in_every_mode():
    gt = random_depth(3, 8, 10)
    for alignment in ("scale", "median", "scale_shift", "scale_shift_exact", "none"):
        metric = DepthMetrics(alignment=alignment)
        metric.update(gt.clone(), gt)
        out = metric.compute()
        assert out["abs_rel"] < 1e-6 and out["rmse"] < 1e-5 and out["log_rmse"] < 1e-5, alignment
        assert out["delta_1"] == 1 and out["delta_3"] == 1


def test_any_scale_mono_and_scale_shift_video_are_aligned_away():
    gt = random_depth(4, 8, 10, seed=1)
    scales = torch.tensor([0.01, 0.7, 3.0, 250.0])[:, None, None]
    for alignment in ("scale", "median"):
        metric = DepthMetrics(alignment=alignment)
        metric.update(gt * scales, gt)
        out = metric.compute()
        assert out["abs_rel"] < 1e-6 and out["delta_1"] == 1, alignment
    video = random_depth(2, 5, 8, 10, seed=2)  # two sequences of 5 frames: one alignment each
    pred = video * torch.tensor([0.3, 4.0])[:, None, None, None] + torch.tensor([2.0, -1.5])[:, None, None, None]
    metric = DepthMetrics(alignment="scale_shift_exact")
    metric.update(pred, video)
    out = metric.compute()
    assert out["abs_rel"] < 1e-5 and out["delta_1"] == 1
    # a scale-only alignment cannot remove a shift
    metric = DepthMetrics(alignment="scale")
    metric.update(pred, video)
    assert metric.compute()["abs_rel"] > 1e-2


def test_official_video_fit_is_adam_from_the_median_ratio():
    """The official fit starts at median(gt) / median(pred), t = 0, and takes Adam steps of about lr = 1e-4: a scale
    alone is found at once, a 2 m shift is not (1000 steps move t by at most ~0.1)."""
    video = random_depth(1, 5, 8, 10, seed=2)
    metric = DepthMetrics(alignment="scale_shift")
    metric.update(video * 0.3, video)
    assert metric.compute()["abs_rel"] < 1e-5
    metric = DepthMetrics(alignment="scale_shift")
    metric.update(video * 0.3 + 2.0, video)
    assert metric.compute()["abs_rel"] > 0.05


def test_hand_computed_values_without_alignment():
    gt = torch.tensor([[[1.0, 2.0, 4.0]]])
    pred = torch.tensor([[[1.0, 2.0, 5.0]]])
    metric = DepthMetrics(alignment="none")
    metric.update(pred, gt)
    out = metric.compute()
    torch.testing.assert_close(out["abs_rel"], torch.tensor(0.25 / 3))
    torch.testing.assert_close(out["sq_rel"], torch.tensor(0.25 / 3))
    torch.testing.assert_close(out["rmse"], torch.tensor((1 / 3) ** 0.5))
    torch.testing.assert_close(out["log_rmse"], torch.tensor(((torch.log(torch.tensor(1.25)) ** 2) / 3).sqrt().item()))
    torch.testing.assert_close(out["delta_1"], torch.tensor(2 / 3))  # 5/4 = 1.25 is not < 1.25
    torch.testing.assert_close(out["delta_2"], torch.tensor(1.0))


def test_aggregation_weighted_by_valid_pixels_and_skips_empty_units():
    gt = torch.ones(3, 1, 4)
    pred = torch.ones(3, 1, 4)
    pred[0, 0, 0] = 2.0  # unit 0: abs rel 1 on one valid pixel
    valid = torch.zeros(3, 1, 4, dtype=torch.bool)
    valid[0, 0, 0] = True
    valid[1] = True  # unit 1: 4 perfect pixels
    metric = DepthMetrics(alignment="none")
    metric.update(pred, gt, valid)  # unit 2 has no valid pixel
    out = metric.compute()
    torch.testing.assert_close(out["abs_rel"], torch.tensor(1 / 5))  # pixel-weighted, not (1 + 0) / 2
    assert out["valid_pixels"] == 5 and out["skipped_units"] == 1


def test_caps_clip_and_official_irls_alignment():
    gt = torch.tensor([[[10.0, 20.0, 80.0, 0.0]]])
    pred = torch.tensor([[[10.0, 20.0, 1.0, 5.0]]])
    metric = DepthMetrics.for_dataset("sintel", alignment="none")  # cap 70: 80 m and 0 are invalid
    metric.update(pred, gt)
    assert metric.compute()["abs_rel"] == 0 and metric.compute()["valid_pixels"] == 2
    metric = DepthMetrics(alignment="none", clip_max_m=15.0)
    metric.update(torch.tensor([[[30.0]]]), torch.tensor([[[10.0]]]))
    torch.testing.assert_close(metric.compute()["abs_rel"], torch.tensor(0.5))
    # IRLS-L1 recovers the scale of the inliers despite an outlier (least squares would not)
    gt = torch.arange(1.0, 11.0)[None, None]
    pred = gt * 0.5
    pred[0, 0, 9] = 10.0
    metric = DepthMetrics(alignment="scale")
    metric.update(pred, gt)
    out = metric.compute()
    assert out["delta_1"] == 0.9
    assert out["abs_rel"] < 0.1 + 1e-4  # the 9 inliers are exact; the outlier's relative error is 1


def test_non_finite_entries_are_invalid_and_empty_units_skipped():
    gt = torch.full((3, 2, 4), 2.0)
    pred = torch.full((3, 2, 4), 1.0)
    pred[0, 0, 0] = float("nan")
    pred[0, 0, 1] = 50.0  # an outlier among valid pixels
    gt[0, 1, 0] = float("inf")
    gt[2] = 0.0  # unit 2: no valid pixel
    metric = DepthMetrics(alignment="median")
    metric.update(pred, gt)
    out = metric.compute()
    assert out["valid_pixels"] == 6 + 8 and out["skipped_units"] == 1
    torch.testing.assert_close(out["abs_rel"], torch.tensor(49.0 / 14))  # scale 2: 100 m against 2 m, relative 49


def test_prediction_resized_bicubic_to_gt_resolution():
    gt = torch.full((2, 12, 16), 3.0)
    pred = torch.full((2, 6, 8), 1.5)
    metric = DepthMetrics(alignment="median")
    metric.update(pred, gt)
    assert metric.compute()["abs_rel"] < 1e-6
