import math

import torch

from g2vlm.geometry.camera import (
    se3_from_rotation_translation,
    se3_inverse,
    transform_points,
    unproject_depth,
)
from g2vlm.geometry.rotation import rotation_from_9d
from g2vlm.losses.geometry_loss import GeometryLoss, GeometryTarget
from g2vlm.model.outputs import GeometryOutput


def run(loss, pred: dict, gt: dict, scale=None):
    """`loss` on a prediction given as pred_* tensors (no pred_global_points: no global term) and GT fields."""
    local, pose = pred["pred_local_points"], pred["pred_camera_to_world"]
    output = GeometryOutput(depth=local[..., 2], local_points=local, camera_to_world=pose,
                            world_points=transform_points(pose, local), global_points=pred.get("pred_global_points"))
    return loss(output, GeometryTarget(**gt), scale=scale)


def make_scene(B=2, N=3, H=10, W=12, dtype=torch.float32, seed=0):
    """Smooth GT depth (tilted planes with a gentle bump), random poses, and a perfect prediction."""
    g = torch.Generator().manual_seed(seed)
    v, u = torch.meshgrid(torch.linspace(-1, 1, H, dtype=torch.float64), torch.linspace(-1, 1, W, dtype=torch.float64), indexing="ij")
    tilt = torch.rand(B, N, 2, 1, 1, dtype=torch.float64, generator=g) * 0.1
    depth = 2.0 + tilt[:, :, 0] * u + tilt[:, :, 1] * v + 0.02 * torch.sin(2 * u) * torch.cos(2 * v)
    valid = torch.ones(B, N, H, W, dtype=torch.bool)
    valid[:, :, 0, :2] = False
    K = torch.tensor([[8.0, 0, (W - 1) / 2], [0, 8.0, (H - 1) / 2], [0, 0, 1]], dtype=torch.float64).expand(B, N, 3, 3)
    rotation = rotation_from_9d(torch.randn(B, N, 9, dtype=torch.float64, generator=g))
    c2w = se3_from_rotation_translation(rotation, torch.randn(B, N, 3, dtype=torch.float64, generator=g))
    local = unproject_depth(depth, K)
    world0 = transform_points(se3_inverse(c2w[:, :1]) @ c2w, local)
    gt = {
        "depth_m": depth.to(dtype),
        "valid": valid,
        "K": K.to(dtype),
        "camera_to_world": c2w.to(dtype),
        "has_depth": torch.ones(B, dtype=torch.bool),
        "dataset_names": ["scannet"] * B,
    }
    pred = {"pred_local_points": local.to(dtype), "pred_camera_to_world": c2w.to(dtype), "pred_global_points": world0.to(dtype)}
    return pred, gt


def perturb(pred, seed=1, amount=0.05):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in pred.items():
        noise = amount * torch.randn(value.shape, dtype=value.dtype, generator=g)
        if key == "pred_camera_to_world":
            small = rotation_from_9d(torch.eye(3, dtype=value.dtype).reshape(9) + noise[..., :3, :3].reshape(*value.shape[:-2], 9))
            value = se3_from_rotation_translation(value[..., :3, :3] @ small, value[..., :3, 3] + noise[..., :3, 3])
        else:
            value = value + noise
        out[key] = value
    return out


def scale_prediction(pred, k):
    pose = pred["pred_camera_to_world"].clone()
    pose[..., :3, 3] *= k
    return {"pred_local_points": pred["pred_local_points"] * k, "pred_camera_to_world": pose, "pred_global_points": pred["pred_global_points"] * k}


def test_perfect_prediction_gives_zero_point_and_camera_terms():
    pred, gt = make_scene(dtype=torch.float64)
    pred = scale_prediction(pred, 3.7)  # any global scale
    out = run(GeometryLoss(), pred, gt)
    for term in (out.local_points, out.global_points, out.camera_translation, out.camera_rotation):
        assert term.abs() < 1e-10
    # the normal term is positive even when perfect: MoGe clamps angles at 1° before smoothing
    smoothed_min = 0.5 * math.radians(1.0) ** 2 / math.radians(3.0)
    assert 0 < out.normal <= 4 * smoothed_min / (4 * 12) + 1e-12
    assert out.total.dtype == torch.float64


def test_loss_invariant_to_global_scale_of_prediction_and_world_frame_of_gt():
    pred, gt = make_scene()
    noisy = perturb(pred)
    loss = GeometryLoss()
    reference = run(loss, noisy, gt)
    assert reference.total > 1e-3
    scaled = run(loss, scale_prediction(noisy, 0.013), gt)
    torch.testing.assert_close(scaled.total, reference.total, rtol=1e-5, atol=0)
    for name, value in reference.terms().items():
        torch.testing.assert_close(scaled.terms()[name], value, rtol=1e-4, atol=1e-7)
    g = torch.Generator().manual_seed(7)
    new_world = se3_from_rotation_translation(rotation_from_9d(torch.randn(9, generator=g)), 10 * torch.randn(3, generator=g))
    moved = dict(gt, camera_to_world=new_world @ gt["camera_to_world"])
    torch.testing.assert_close(run(loss, noisy, moved).total, reference.total, rtol=1e-5, atol=0)


def test_bf16_prediction_equals_its_fp32_upcast_and_autocast_is_ignored():
    pred, gt = make_scene()
    noisy = perturb(pred)
    bf16 = {k: v.bfloat16() for k, v in noisy.items()}
    upcast = {k: v.float() for k, v in bf16.items()}
    loss = GeometryLoss()
    out_bf16 = run(loss, bf16, gt)
    out_fp32 = run(loss, upcast, gt)
    assert out_bf16.total.dtype == torch.float32
    assert abs(out_bf16.total.item() - out_fp32.total.item()) <= 1e-6
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_autocast = run(loss, bf16, gt)
    assert out_autocast.total.dtype == torch.float32
    assert abs(out_autocast.total.item() - out_fp32.total.item()) <= 1e-6


def test_weights_combine_terms_as_documented():
    pred, gt = make_scene()
    noisy = perturb(pred)
    out = run(GeometryLoss(local_weight=2.0, normal_weight=3.0, global_weight=0.5, camera_weight=0.2, translation_weight=200.0), noisy, gt)
    expected = 2.0 * out.local_points + 3.0 * out.normal + 0.5 * out.global_points + 0.2 * (200.0 * out.camera_translation + out.camera_rotation)
    torch.testing.assert_close(out.total, expected)
    default = run(GeometryLoss(), noisy, gt)
    expected = default.local_points + default.normal + default.global_points + 0.2 * (100.0 * default.camera_translation + default.camera_rotation)
    torch.testing.assert_close(default.total, expected)


def test_camera_loss_known_rotation_and_translation():
    pred, gt = make_scene(B=1, N=2, dtype=torch.float64)
    angle = 0.3
    axis_rotation = torch.tensor(
        [[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    pose = pred["pred_camera_to_world"].clone()
    pose[0, 1, :3, :3] = pose[0, 1, :3, :3] @ axis_rotation  # rotate camera 1 about its own axis
    out = run(GeometryLoss(), dict(pred_local_points=pred["pred_local_points"], pred_camera_to_world=pose), gt)
    # both ordered pairs see a relative-rotation error of exactly `angle`; the camera centres are unchanged,
    # but the translation of pair (1 <- 0), expressed in the rotated camera 1, changes
    assert abs(out.camera_rotation.item() - angle) < 1e-9
    assert out.camera_translation > 0


def test_samples_without_depth_get_camera_loss_only():
    pred, gt = make_scene()
    noisy = perturb(pred)
    gt = dict(gt, has_depth=torch.tensor([False, False]))
    loss = GeometryLoss()
    out = run(loss, noisy, gt)
    assert out.local_points == 0 and out.global_points == 0 and out.normal == 0
    assert out.camera_rotation > 0 and out.camera_translation > 0
    assert out.num_valid_pixels == 0
    # the point predictions do not matter for such samples, and the camera loss is scale invariant
    other = dict(noisy, pred_local_points=noisy["pred_local_points"] * 5 + 1)
    torch.testing.assert_close(run(loss, other, gt).total, out.total)
    torch.testing.assert_close(run(loss, scale_prediction(noisy, 4.0), gt).total, out.total, rtol=1e-5, atol=0)


def test_normal_loss_gated_by_dataset_list():
    pred, gt = make_scene()
    noisy = perturb(pred)
    loss = GeometryLoss()
    gated_out = run(loss, noisy, dict(gt, dataset_names=["co3dv2", "wildrgbd"]))
    assert gated_out.normal == 0
    assert run(loss, noisy, dict(gt, dataset_names=["ScanNet", "co3dv2"])).normal > 0
    assert run(GeometryLoss(normal_datasets=["co3dv2"]), noisy, dict(gt, dataset_names=["co3dv2", "x"])).normal > 0


def test_normal_loss_switched_off_is_an_exact_zero_and_not_computed(monkeypatch):
    pred, gt = make_scene()
    noisy = perturb(pred)
    full = run(GeometryLoss(), noisy, gt)
    import g2vlm.losses.geometry_loss as module

    def forbidden(*args, **kwargs):
        raise AssertionError("the normal loss was computed although switched off")

    monkeypatch.setattr(module, "quad_triangle_normals", forbidden)
    for off in (GeometryLoss(normal_weight=0.0), GeometryLoss(normal_datasets=[])):
        out = run(off, noisy, gt)
        assert out.normal == 0
        for name in ("local_points", "global_points", "camera_translation", "camera_rotation"):
            torch.testing.assert_close(out.terms()[name], full.terms()[name])


def test_degenerate_samples_give_exact_zero_and_finite_grads():
    pred, gt = make_scene()
    noisy = {k: v.clone().requires_grad_() for k, v in perturb(pred).items()}
    all_invalid = dict(gt, valid=torch.zeros_like(gt["valid"]))
    out = run(GeometryLoss(), noisy, all_invalid)
    assert out.total.item() == 0.0 and out.total.requires_grad
    out.total.backward()
    for value in noisy.values():
        assert torch.isfinite(value.grad).all() and (value.grad == 0).all()
    # one degenerate sample among good ones contributes nothing
    few = gt["valid"].clone()
    few[1] = False
    few[1, 0, 0, :5] = True  # 5 < min_valid_pixels
    mixed = run(GeometryLoss(), noisy, dict(gt, valid=few))
    single = run(GeometryLoss(), {k: v[:1] for k, v in noisy.items()}, {k: v[:1] for k, v in gt.items()})
    torch.testing.assert_close(mixed.total, single.total)


def test_finite_gradients_at_identity_rotations_and_zero_translations():
    pred, gt = make_scene(B=2, N=3)
    identity = torch.eye(4).expand(2, 3, 4, 4).clone()
    gt = dict(gt, camera_to_world=identity)
    for has_depth in (True, False):
        inputs = dict(pred, pred_camera_to_world=identity.clone().requires_grad_())
        inputs["pred_local_points"] = inputs["pred_local_points"].clone().requires_grad_()
        out = run(GeometryLoss(), inputs, dict(gt, has_depth=torch.full((2,), has_depth)))
        out.total.backward()
        assert torch.isfinite(inputs["pred_camera_to_world"].grad).all()
        assert torch.isfinite(inputs["pred_local_points"].grad).all()


def test_gradcheck_each_term_with_scale_held_fixed():
    pred, gt = make_scene(B=2, N=2, H=5, W=6, dtype=torch.float64, seed=3)
    gt["dataset_names"] = ["scannet", "co3dv2"]
    noisy = perturb(pred, amount=0.1)
    loss = GeometryLoss(min_valid_pixels=4)
    scale = run(loss, noisy, gt).scale  # solved once, then held fixed
    names = ["pred_local_points", "pred_camera_to_world", "pred_global_points"]
    for term in ["local_points", "normal", "global_points", "camera_translation", "camera_rotation"]:

        def fn(local, pose, global_points, term=term):
            out = run(loss, dict(pred_local_points=local, pred_camera_to_world=pose, pred_global_points=global_points), gt, scale=scale)
            return getattr(out, term)

        inputs = tuple(noisy[n].clone().requires_grad_() for n in names)
        assert fn(*inputs) > 0, term
        # fast mode checks a random directional derivative (2 forwards instead of 2 per input element)
        assert torch.autograd.gradcheck(fn, inputs, atol=1e-6, fast_mode=True), term


def test_full_gradcheck_of_point_and_camera_terms_on_a_tiny_scene():
    pred, gt = make_scene(B=1, N=2, H=2, W=3, dtype=torch.float64, seed=4)
    gt["valid"] = torch.ones_like(gt["valid"])
    noisy = perturb(pred, seed=5, amount=0.1)
    loss = GeometryLoss(min_valid_pixels=4)
    scale = run(loss, noisy, gt).scale
    pose = noisy["pred_camera_to_world"]

    def local_term(local):
        return run(loss, dict(pred_local_points=local, pred_camera_to_world=pose), gt, scale=scale).local_points

    def camera_terms(camera_to_world):
        out = run(loss, dict(pred_local_points=noisy["pred_local_points"], pred_camera_to_world=camera_to_world), gt, scale=scale)
        return out.camera_translation, out.camera_rotation

    assert torch.autograd.gradcheck(local_term, (noisy["pred_local_points"].clone().requires_grad_(),))
    assert torch.autograd.gradcheck(camera_terms, (pose.clone().requires_grad_(),))
