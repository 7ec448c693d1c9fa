"""The hot paths stay fast: no host synchronisation in the geometry step, attention in one half-precision dtype
(flash-eligible), the torch.compile switch. Correctness, not speed: nothing here is timed.

On a CPU, syncs are found by what would cause them on CUDA: a tensor built from Python data (`aten.lift_fresh`, a
blocking host-to-device copy) or a device value read by the host (`.item()`, `nonzero`, boolean-mask indexing).
The CUDA-only checks (`set_sync_debug_mode`, the flash kernel) are marked `gpu`.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter
from torch.utils._python_dispatch import TorchDispatchMode

from g2vlm.losses.geometry_loss import GeometryLoss, GeometryTarget
from g2vlm.model.config import HeadsConfig, model_config
from g2vlm.model.g2vlm import G2VLM
from g2vlm.model.outputs import GeometryOutput

HOST_SYNC_OPS = {
    torch.ops.aten.lift_fresh.default,  # torch.tensor(python data): a blocking host-to-device copy on CUDA
    torch.ops.aten._local_scalar_dense.default,  # .item(), float(t), bool(t), if t: ...
    torch.ops.aten.nonzero.default,
    torch.ops.aten.masked_select.default,
}


class HostSyncSpy(TorchDispatchMode):
    """Records the operators that synchronise a CUDA stream with the host."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        boolean_index = func is torch.ops.aten.index.Tensor and any(
            index is not None and index.dtype == torch.bool for index in args[1])
        if func in HOST_SYNC_OPS or boolean_index:
            self.found.append(str(func))
        return func(*args, **(kwargs or {}))


def _clip_and_ground_truth(b: int = 2, n: int = 3, size: int = 32):
    images = torch.rand(b, n, 3, size, size)
    depth_m = 1 + torch.rand(b, n, size, size)
    K = torch.tensor([[0.8 * size, 0, (size - 1) / 2], [0, 0.8 * size, (size - 1) / 2], [0, 0, 1.0]]).expand(b, n, 3, 3)
    camera_to_world = torch.eye(4).repeat(b, n, 1, 1)
    camera_to_world[..., 0, 3] = torch.linspace(0, 0.3, n)
    return images, depth_m, depth_m > 0, K, camera_to_world


def test_the_spy_sees_syncs():
    spy = HostSyncSpy()
    x = torch.rand(4)
    with spy:
        torch.tensor([1.0, 2.0])
        x.sum().item()
        x[x > 0.5]
    assert spy.found == ["aten.lift_fresh.default", "aten._local_scalar_dense.default", "aten.index.Tensor"]


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_geometry_step_of_the_model_has_no_host_sync(preset):
    model = G2VLM(model_config(preset))
    size = 32 if preset == "tiny" else 64
    images = _clip_and_ground_truth(size=size)[0]
    model.forward_geometry(images)  # first call outside the spy (lazy initialisations are not per step)
    spy = HostSyncSpy()
    with spy:
        output = model.forward_geometry(images)
        (output.depth.sum() + output.camera_to_world.sum() + output.global_points.sum()).backward()
    assert spy.found == []


def test_geometry_loss_has_no_host_sync():
    images, depth_m, valid, K, camera_to_world = _clip_and_ground_truth()
    points = torch.rand(2, 3, 32, 32, 3) + torch.tensor([0.0, 0.0, 1.0])
    output = GeometryOutput(points[..., 2], points, camera_to_world, points, points)
    target = GeometryTarget(depth_m, valid, K, camera_to_world, torch.ones(2, dtype=torch.bool), ["scannet", "co3d"])
    spy = HostSyncSpy()
    with spy:
        GeometryLoss()(output, target)
    assert spy.found == []


def test_trunk_attention_runs_in_one_half_precision_dtype(monkeypatch):
    """Under bf16 autocast every trunk attention gets bf16 q, k and v (the QK-norm's fp32 output is cast after the
    rotary), which the flash kernel needs; the fp32 heads keep fp32."""
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        calls.append((q.shape[1], q.shape[-1], q.dtype, k.dtype, v.dtype))
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    config = model_config("tiny")
    model = G2VLM(config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.forward_geometry(torch.rand(1, 2, 3, 32, 32))
    # trunk: heads × head_dim of the trunk, not all-fp32 (the heads' calls are, and DINO's head dim differs)
    trunk = [dtypes for heads, dim, *dtypes in calls
             if (heads, dim) == (config.heads, config.head_dim) and dtypes != [torch.float32] * 3]
    assert len(trunk) == config.layers
    assert all(dtypes == [torch.bfloat16] * 3 for dtypes in trunk)
    assert all(q == k == v for _, _, q, k, v in calls)


def test_compile_switch_keeps_outputs_and_shares_one_graph_across_layers():
    config = model_config("tiny", layers=4, geometry_heads=HeadsConfig(depth=2, heads=4, point_dim=32, camera_dim=16))
    torch.manual_seed(0)
    model = G2VLM(config)
    model.set_gradient_checkpointing(True)
    images = torch.rand(1, 2, 3, 32, 32)
    eager = model.forward_geometry(images)
    counter = CompileCounter()
    model.compile_blocks(backend=counter)
    compiled = model.forward_geometry(images)
    # one graph for all trunk layers, one per head block kind (self-attention, with context); no graph breaks
    assert counter.frame_count == 3
    for name in ("depth", "camera_to_world", "global_points"):
        torch.testing.assert_close(getattr(compiled, name), getattr(eager, name))
    compiled.depth.sum().backward()  # through activation checkpointing of the compiled layers
    assert model.trunk.layers[0].geometric.q_proj.weight.grad is not None


def test_checkpointing_covers_the_fp32_heads():
    """With checkpointing on, the head decoders keep only their block inputs for backward (the fp32 heads run on
    every token: at g2vlm-2b, 224², 4 × 24 views, 58 GiB of saved tensors without it, 4 GiB with it, counted on
    the meta device), and the gradients are unchanged."""
    config = model_config("tiny", geometry_heads=HeadsConfig(depth=2, heads=4, point_dim=32, camera_dim=16))
    torch.manual_seed(0)
    model = G2VLM(config)
    tokens = torch.randn(2, 3, 8 * 8, config.width)

    def saved_bytes_and_gradients(checkpointing: bool):
        model.set_gradient_checkpointing(checkpointing)
        model.zero_grad(set_to_none=True)
        saved = []

        def pack(tensor):
            saved.append(tensor.numel() * tensor.element_size())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            output = model.heads(tokens, 8, 8)
        (output["depth"].sum() + output["camera_to_world"].sum() + output["global_points"].sum()).backward()
        return sum(saved), {name: p.grad for name, p in model.heads.named_parameters()}

    full, gradients = saved_bytes_and_gradients(False)
    checkpointed, checkpointed_gradients = saved_bytes_and_gradients(True)
    assert checkpointed < full / 2
    for name, gradient in gradients.items():
        torch.testing.assert_close(checkpointed_gradients[name], gradient, msg=name)

# ------------------------------------------------------------------------------------------------- CUDA only
def _cuda_trunk_step(model: G2VLM, images: torch.Tensor) -> None:
    """Encoder + trunk forward under bf16 autocast, backward, clipping, a fused AdamW step."""
    from g2vlm.model.rope import geometry_positions

    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, fused=True)
    b, n, _, height, width = images.shape
    patch = model.config.dino.patch_size
    positions, _ = geometry_positions(n, height // patch, width // patch, 0, "shared", device=images.device)
    cos, sin = model._rope(positions)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        tokens = model.encode_frames(images.flatten(0, 1)).reshape(b, -1, model.config.width)
        hidden = model.trunk.forward_geometry(tokens, cos[None], sin[None])
    hidden.float().square().mean().backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0, foreach=True)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@pytest.mark.gpu
def test_cuda_trunk_step_does_not_synchronise():
    model = G2VLM(model_config("tiny")).cuda()
    images = torch.rand(2, 3, 3, 32, 32, device="cuda")
    _cuda_trunk_step(model, images)  # warm-up: lazy CUDA initialisation may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _cuda_trunk_step(model, images)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
def test_cuda_geometry_trunk_runs_on_the_flash_kernel():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = G2VLM(model_config("tiny")).cuda()
    images = torch.rand(2, 3, 3, 32, 32, device="cuda")
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # raises if any trunk attention cannot use flash
        _cuda_trunk_step(model, images)


@pytest.mark.gpu
def test_cuda_block_mask_is_built_compiled_and_equals_the_eager_one():
    from g2vlm.model.packing import Geometry, Text, pack

    config = model_config("tiny")
    samples = [[Text(torch.arange(150)), Geometry(torch.rand(2, 3, 32, 32)), Text(torch.arange(40), supervised=True)],
               [Text(torch.arange(90)), Geometry(torch.rand(1, 3, 32, 32))]]
    batch = pack(samples, config)
    eager, compiled = batch.block_mask(), batch.to("cuda").block_mask()
    for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
        torch.testing.assert_close(getattr(compiled, name).cpu(), getattr(eager, name), msg=name)
