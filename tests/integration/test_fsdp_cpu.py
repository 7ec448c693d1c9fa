"""FSDP2 on CPU: 2 processes over gloo, the tiny preset, through the real `lightning` and `g2vlm` console scripts,
with the sharding composed from experiments/trainer/fsdp.yaml as on GPUs (tests/gpu/test_fsdp.py runs the same on
CUDA).

In `make test`: the GPU policy (bf16 trunk, fp32 heads) trains, every rank writes only its own shards, and
`g2vlm consolidate` of the folder loads in one CPU process with the gathered weights, also as `init_weights`.

`slow`: against DDP for 10 steps; SIGUSR1 -> sharded save on every rank -> `--ckpt_path last` -> the same losses,
learning rates and AdamW moments as an uninterrupted run; consolidation of that folder; 2 -> 1 -> 2 processes
through DCP resharding; a 2-D (replicate across 2 nodes × shard) mesh; SpatialReasoning with generation in
validation.

The comparison runs use fp32 parameters (`param_dtype: float32`) and AdamW eps 1e-8 in every run, DDP included.
The official eps 1e-15 makes AdamW take a full step of sign(g) on any gradient above 1e-15, and at step 0 the
zero-initialised projector leaves the trunk's q/k gradients at ~1e-13, pure fp32 rounding: their signs then depend
on summation order (measured: they differ by 16 % between DDP and FSDP2), and the runs part after a few steps.
With eps 1e-8 such noise moves nothing, so what is left between DDP and FSDP2 is the fp32 rounding of the sharded
norm and the reduce-scatter (1e-7 relative), grown over 10 AdamW steps: measured at most 2e-5 relative in the
losses; the tolerance is 1e-4.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from g2vlm.lit.geometry_pretraining import GeometryPretraining
from g2vlm.safe_load import read_dcp_metadata as read_metadata
from tests.conftest import REPO_ROOT, VENV_BIN, fake_slurm_env, run_console_script
from tests.fixtures.fit_records import CONFIG, FSDP, RECORDERS, STEPS, grad_norms, logged, losses, recorder_overlay

pytestmark = pytest.mark.integration
MULTINODE = str(REPO_ROOT / "experiments" / "trainer" / "fsdp_multinode.yaml")
FP32 = ["--trainer.strategy.init_args.param_dtype", "float32"]


def fit_args(workdir, name: str, root: str, fsdp: bool = True, extra_callbacks: str = "",
             recorders=RECORDERS) -> list[str]:
    """`lightning fit` arguments: the 2-rank config (+ the FSDP2 overlay in fp32), recorders writing to
    <workdir>/<name>, the run folder runs/<root>, log every step, AdamW eps 1e-8 (module docstring)."""
    overlay = recorder_overlay(workdir, name, extra_callbacks, recorders)
    sharding = ["--config", FSDP, *FP32] if fsdp else []
    return ["fit", "--config", CONFIG, *sharding, "--config", str(overlay), "--model.init_args.optimization.eps", "1e-8",
            "--trainer.max_steps", str(STEPS), "--trainer.log_every_n_steps", "1",
            "--trainer.default_root_dir", f"runs/{root}"]


def fit(workdir, name: str, *args: str, root: str | None = None, fsdp: bool = True, extra_callbacks: str = "",
        env: dict[str, str] | None = None):
    result = run_console_script("lightning", *fit_args(workdir, name, root or name, fsdp, extra_callbacks), *args,
                                cwd=workdir, env=env, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir / name


def assert_same_state(got: dict, expected: dict, what: str) -> None:
    """Parameters and AdamW moments (gathered records of RecordGatheredState) bit for bit."""
    for key in ("parameters", "exp_avg", "exp_avg_sq"):
        assert got[key].keys() == expected[key].keys(), (what, key)
        for name, value in expected[key].items():
            assert torch.equal(got[key][name], value), (what, key, name)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_synthetic_shards):
    root = tmp_path_factory.mktemp("fsdp-cpu")
    (root / "data").symlink_to(tiny_synthetic_shards / "data")
    return root


@pytest.fixture(scope="module")
def fsdp_reference(workdir):
    """An uninterrupted 10-step FSDP2 run (fp32) with every recorder."""
    return fit(workdir, "fsdp-reference")


@pytest.fixture(scope="module")
def ddp_reference(workdir):
    """The same run under DDP."""
    return fit(workdir, "ddp-reference", fsdp=False)


@pytest.fixture(scope="module")
def preempted(workdir):
    """The FSDP2 run, SIGUSR1 on rank 1 after step 2 (checked every 2 steps: all ranks save at step 4 and stop);
    a fake `scontrol` records the requeue. -> (recorder folder, checkpoint folder, requeue log, env)."""
    env, requeue_log = fake_slurm_env(workdir)
    signal_on_rank_1 = """    - class_path: tests.fixtures.callbacks.SignalAtStep
      init_args: {step: 2, signal_name: SIGUSR1, rank: 1}
"""
    out = fit(workdir, "stopped", root="preempt", extra_callbacks=signal_on_rank_1, env=env)
    return out, workdir / "runs" / "preempt" / "checkpoints", requeue_log, env


def test_gpu_policy_trains_each_rank_saves_its_shards_and_consolidation_loads_in_one_process(console_script,
                                                                                             tiny_workdir):
    out = tiny_workdir / "record"
    overlay = tiny_workdir / "record.yaml"
    overlay.write_text(f"""
trainer:
  callbacks+:
    - class_path: tests.fixtures.callbacks.RecordLosses
      init_args: {{out_dir: {out}}}
    - class_path: tests.fixtures.callbacks.RecordGatheredState
      init_args: {{out_dir: {out}}}
""")
    result = console_script("lightning", "fit", "--config", CONFIG, "--config", FSDP, "--config", str(overlay),
                            "--trainer.max_steps", "2", "--checkpoint.every_n_train_steps", "2", cwd=tiny_workdir,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    for rank in (0, 1):
        assert all(torch.isfinite(torch.tensor(loss)) for loss in losses(out, rank).values())

    folder = tiny_workdir / "runs" / "two-ranks" / "checkpoints" / "step=2.ckpt"
    assert sorted(path.name for path in folder.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"]
    # no full state gathered anywhere: every tensor of two rows or more is stored as two halves, each in its
    # rank's file, for the model and the AdamW moments alike
    metadata = read_metadata(folder / ".metadata")
    files = {(index.fqn, tuple(index.offset)): info.relative_path for index, info in metadata.storage_data.items()
             if index.offset is not None}
    checked = {"state_dict": 0, "optimizer_0": 0}
    for key, entry in metadata.state_dict_metadata.items():
        if not hasattr(entry, "chunks") or len(entry.size) == 0 or entry.size[0] < 2:
            continue
        half = (entry.size[0] + 1) // 2
        offsets = sorted(tuple(chunk.offsets) for chunk in entry.chunks)
        assert [offset[0] for offset in offsets] == [0, half], key
        assert [files[(key, offset)] for offset in offsets] == ["__0_0.distcp", "__1_0.distcp"], key
        checked[key.split(".")[0]] += 1
    assert checked["state_dict"] > 100 and checked["optimizer_0"] > 100, checked  # parameters; exp_avg, exp_avg_sq

    consolidated = console_script("g2vlm", "consolidate", str(folder), "--out", "portable.ckpt", cwd=tiny_workdir)
    assert consolidated.returncode == 0, consolidated.stderr
    gathered = torch.load(out / "end.pt", weights_only=True)  # the shards of both ranks at step 2, gathered
    module = GeometryPretraining.load_from_checkpoint(tiny_workdir / "portable.ckpt", map_location="cpu")
    state = module.state_dict()
    assert gathered["parameters"] and all(torch.equal(state[name], value)
                                          for name, value in gathered["parameters"].items())
    started = GeometryPretraining(preset="tiny", freeze=["vit", "semantic"],
                                  init_weights=str(tiny_workdir / "portable.ckpt"))
    started.configure_model()
    assert all(torch.equal(value, gathered["parameters"][f"model.{name}"])
               for name, value in started.model.state_dict().items())


@pytest.mark.slow
def test_fsdp2_losses_and_gradient_norms_equal_ddp(workdir, fsdp_reference, ddp_reference):
    for rank in (0, 1):
        expected, got = losses(ddp_reference, rank), losses(fsdp_reference, rank)
        assert sorted(got) == list(range(STEPS))
        for step in range(STEPS):
            assert got[step] == pytest.approx(expected[step], rel=1e-4, abs=0), (rank, step)
    fsdp_logged = logged(workdir, "fsdp-reference", "train/grad_norm/total")
    ddp_logged = logged(workdir, "ddp-reference", "train/grad_norm/total")
    # step 0: the same parameters and batches, so the logged pre-clip norm is the unsharded one up to sum order
    assert fsdp_logged[0] == pytest.approx(ddp_logged[0], rel=1e-6)
    # every step: the norm FSDP2 logs from the shards is the norm of the whole gradients (gathered, float64)
    whole = grad_norms(fsdp_reference, 0, "pre_clip")
    assert sorted(fsdp_logged) == sorted(whole) == list(range(STEPS))
    for step in range(STEPS):
        assert fsdp_logged[step] == pytest.approx(whole[step], rel=1e-5), step
    assert sum(norm > 1.0 for norm in whole.values()) >= 5  # clipping was active
    for rank in (0, 1):  # the applied norm (1 + 1e-6: the clip factor 1 / (norm + 1e-6) is rounded to fp32)
        applied = grad_norms(fsdp_reference, rank, "applied")
        assert sorted(applied) == list(range(STEPS))
        assert all(norm <= 1.0 + 1e-6 for norm in applied.values()), applied


@pytest.mark.slow
def test_sigusr1_saves_sharded_on_every_rank_and_resume_continues_exactly(workdir, fsdp_reference, preempted):
    stopped, checkpoints, requeue_log, env = preempted
    assert [json.loads((stopped / f"losses-rank{r}.json").read_text())["final_step"] for r in (0, 1)] == [4, 4]
    assert requeue_log.read_text().split() == ["requeue", "4242"]  # rank 0 only, once
    folder = checkpoints / "last-preempted.ckpt"
    assert sorted(path.name for path in folder.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"]
    assert torch.load(folder / "meta.pt", weights_only=True)["global_step"] == 4

    resumed = fit(workdir, "resumed", "--ckpt_path", "last", root="preempt", env=env)
    for rank in (0, 1):
        expected_losses, got_losses = losses(fsdp_reference, rank), losses(resumed, rank)
        assert sorted(got_losses) == list(range(4, STEPS))
        expected = torch.load(fsdp_reference / f"optimizer-rank{rank}.pt", weights_only=True)
        got = torch.load(resumed / f"optimizer-rank{rank}.pt", weights_only=True)
        for step in range(4, STEPS):
            assert got_losses[step] == expected_losses[step], (rank, step)
            assert got[step]["lr"] == expected[step]["lr"], (rank, step)
            for key in ("exp_avg", "exp_avg_sq"):
                assert got[step][key].keys() == expected[step][key].keys()
                for name, value in expected[step][key].items():
                    assert torch.equal(got[step][key][name], value), (rank, step, key, name)


@pytest.mark.slow
def test_consolidated_preempted_folder_loads_in_one_cpu_process(workdir, preempted):
    stopped, checkpoints, _, _ = preempted
    portable = workdir / "preempted.ckpt"
    result = run_console_script("g2vlm", "consolidate", str(checkpoints / "last-preempted.ckpt"), "--out",
                                str(portable), cwd=workdir)
    assert result.returncode == 0, result.stderr
    gathered = torch.load(stopped / "end.pt", weights_only=True)  # both ranks' shards at the save, gathered
    record = torch.load(portable, map_location="cpu", weights_only=True)
    assert record["global_step"] == 4
    module = GeometryPretraining.load_from_checkpoint(portable, map_location="cpu")
    state = module.state_dict()
    for name, value in gathered["parameters"].items():
        assert torch.equal(state[name], value), name
    moments = record["optimizer_states"][0]["state"]
    for key in ("exp_avg", "exp_avg_sq"):
        for name, value in gathered[key].items():
            assert torch.equal(moments[name][key], value), (key, name)
    started = GeometryPretraining(preset="tiny", freeze=["vit", "semantic"], init_weights=str(portable))
    started.configure_model()
    for name, value in started.model.state_dict().items():
        assert torch.equal(value, gathered["parameters"][f"model.{name}"]), name


@pytest.mark.slow
def test_resume_two_to_one_to_two_processes_reshards(workdir, preempted):
    stopped, checkpoints, _, _ = preempted
    at_save = torch.load(stopped / "end.pt", weights_only=True)
    folder = workdir / "runs" / "one-process" / "checkpoints" / "last-preempted.ckpt"
    shutil.copytree(checkpoints / "last-preempted.ckpt", folder)  # 2 ranks' shards, step 4
    signal_after_5 = """    - class_path: tests.fixtures.callbacks.SignalAtStep
      init_args: {step: 5, signal_name: SIGUSR1}
"""
    one = fit(workdir, "one-process", "--trainer.devices", "1", "--trainer.max_steps", "8", "--ckpt_path", str(folder),
              extra_callbacks=signal_after_5)
    start = torch.load(one / "start.pt", weights_only=True)
    assert start["global_step"] == 4
    assert_same_state(start, at_save, "2 -> 1")
    # preempted at step 6, saved over the folder it started from, as a whole: no shard of the 2-rank save is left
    assert sorted(path.name for path in folder.iterdir()) == [".metadata", "__0_0.distcp", "meta.pt"]
    assert torch.load(folder / "meta.pt", weights_only=True)["global_step"] == 6

    two = fit(workdir, "two-processes", "--trainer.max_steps", "8", "--ckpt_path", str(folder))
    start = torch.load(two / "start.pt", weights_only=True)
    assert start["global_step"] == 6
    assert_same_state(start, torch.load(one / "end.pt", weights_only=True), "1 -> 2")
    for rank in (0, 1):
        resumed_losses = losses(two, rank)
        assert sorted(resumed_losses) == [6, 7] and all(torch.isfinite(torch.tensor(v)) for v in resumed_losses.values())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_node_hybrid_mesh_equals_ddp(workdir, ddp_reference):
    """fsdp_multinode.yaml's 2-D mesh (replicate across nodes × shard within) on two "nodes" of one process each,
    launched as Lightning launches nodes (NODE_RANK, MASTER_ADDR, MASTER_PORT): the same ranks and batches as the
    2-process DDP run."""
    args = fit_args(workdir, "two-nodes", "two-nodes")
    args[args.index(FSDP) + 1:args.index(FSDP) + 1] = ["--config", MULTINODE]
    port = str(free_port())
    processes = [
        subprocess.Popen([str(VENV_BIN / "lightning"), *args, "--trainer.num_nodes", "2", "--trainer.devices", "1"],
                         cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "NODE_RANK": str(node),
                              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
        for node in (0, 1)]
    outputs = [process.communicate(timeout=1200)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    out = workdir / "two-nodes"
    for rank in (0, 1):
        expected, got = losses(ddp_reference, rank), losses(out, rank)
        for step in range(STEPS):
            assert got[step] == pytest.approx(expected[step], rel=1e-4, abs=0), (rank, step)
    assert logged(workdir, "two-nodes", "train/grad_norm/total")[0] == pytest.approx(
        logged(workdir, "ddp-reference", "train/grad_norm/total")[0], rel=1e-6)


def reasoning_fit(workdir, name: str, *args: str) -> None:
    val = "data/reasoning-tiny/synthetic_qa-val-000000.tar"
    overlay = workdir / f"{name}.yaml"
    overlay.write_text(f"""
trainer:
  callbacks+:
    - class_path: tests.fixtures.callbacks.RecordLosses
      init_args: {{out_dir: {workdir / name}}}
""")
    result = run_console_script(
        "lightning", "fit", "--config", str(REPO_ROOT / "experiments" / "reasoning" / "tiny.yaml"), *args,
        "--config", str(overlay), "--trainer.devices", "2", "--model.init_args.variant", "vg_ce",
        "--model.init_args.optimization.eps", "1e-8", "--trainer.max_steps", "3", "--trainer.val_check_interval", "3",
        "--trainer.log_every_n_steps", "1", "--trainer.default_root_dir", f"runs/{name}",
        "--data.init_args.val_shards", f"[{val}, {val}]", cwd=workdir, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.slow
def test_spatial_reasoning_vg_ce_under_fsdp2_equals_ddp_and_generates_in_validation(reasoning_workdir):
    """SpatialReasoning's configure_model shards too. In `vg_ce` the heads run once per geometry sample, and the
    ranks' batches hold different numbers of them (the run hung before the heads' calls were evened out), so this
    compares the losses with DDP's (fp32, eps 1e-8 as above). Validation generates answers inside `gathered`;
    the one validation shard is named twice so that both ranks get a batch."""
    reasoning_fit(reasoning_workdir, "reasoning-ddp", "--trainer.strategy", "ddp")
    reasoning_fit(reasoning_workdir, "reasoning-fsdp", "--config", FSDP, *FP32)
    for rank in (0, 1):
        expected, got = losses(reasoning_workdir / "reasoning-ddp", rank), losses(reasoning_workdir / "reasoning-fsdp", rank)
        assert sorted(got) == [0, 1, 2]
        for step in range(3):
            assert got[step] == pytest.approx(expected[step], rel=1e-4, abs=0), (rank, step)
    events = EventAccumulator(str(reasoning_workdir / "runs" / "reasoning-fsdp" / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss/ce", "train/loss/vg", "train/grad_norm/total", "val/loss/ce", "val/qa/score"} <= scalars
    assert (reasoning_workdir / "runs" / "reasoning-fsdp" / "checkpoints" / "last.ckpt" / ".metadata").is_file()
