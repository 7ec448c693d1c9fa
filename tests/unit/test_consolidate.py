"""`g2vlm consolidate` through the console script, on folders in the layout FSDP2Strategy (Lightning's
ModelParallelStrategy) writes: torch.distributed.checkpoint shards of `state_dict` and `optimizer_0`, plus `meta.pt`
with everything else. Real strategy-written folders are consolidated in tests/integration/test_fsdp_cpu.py; here the
folders are written by `torch.distributed.checkpoint.save` in one process, and the refusals are checked: a checkpoint
whose pickles ask for anything but plain data and DCP metadata classes is refused without running them."""

from __future__ import annotations

import os
import pickle

import torch
import torch.distributed.checkpoint as dcp

from g2vlm.lit.geometry_pretraining import GeometryPretraining


class Payload:
    """Unpickling this runs `touch <marker>`: stands in for code smuggled into a checkpoint."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def trained_module() -> GeometryPretraining:
    torch.manual_seed(0)
    module = GeometryPretraining(preset="tiny", freeze=["vit", "semantic"])
    module.configure_model()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn_like(parameter))  # not the initialisation: a checkpoint worth reading
    return module


def sharded_checkpoint(folder, module: GeometryPretraining, global_step: int, extra: dict | None = None) -> dict:
    """What ModelParallelStrategy.save_checkpoint writes (one process): DCP `state_dict` + `optimizer_0`, `meta.pt`."""
    first = next(name for name, p in module.named_parameters() if p.requires_grad)
    optimizer_state = {"state": {first: {"step": torch.tensor(3.0), "exp_avg": torch.full((2,), 0.5),
                                         "exp_avg_sq": torch.full((2,), 0.25)}},
                       "param_groups": [{"name": "dino", "lr": 1e-3, "betas": (0.9, 0.95), "params": [first]}]}
    dcp.save({"state_dict": module.state_dict(), "optimizer_0": optimizer_state, **(extra or {})},
             checkpoint_id=folder, no_dist=True)
    torch.save({"global_step": global_step, "epoch": 0, "pytorch-lightning_version": "2.6.6",
                "hyper_parameters": dict(module.hparams), "loops": {}, "callbacks": {}}, folder / "meta.pt")
    return optimizer_state


def test_consolidated_file_loads_on_cpu_with_identical_weights(tmp_path, console_script):
    module = trained_module()
    folder = tmp_path / "checkpoints" / "step=7.ckpt"
    optimizer_state = sharded_checkpoint(folder, module, global_step=7)
    (tmp_path / "checkpoints" / "last.ckpt").symlink_to(folder)

    result = console_script("g2vlm", "consolidate", "checkpoints/last.ckpt", "--out", "portable.ckpt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    portable = torch.load(tmp_path / "portable.ckpt", map_location="cpu", weights_only=True)
    assert portable["global_step"] == 7
    assert portable["optimizer_states"][0]["param_groups"] == optimizer_state["param_groups"]
    for key, value in optimizer_state["state"].items():
        for name, tensor in value.items():
            assert torch.equal(portable["optimizer_states"][0]["state"][key][name], tensor)
    loaded = GeometryPretraining.load_from_checkpoint(tmp_path / "portable.ckpt", map_location="cpu")
    for key, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    restarted = GeometryPretraining(preset="tiny", freeze=["vit", "semantic"], init_weights=str(tmp_path / "portable.ckpt"))
    restarted.configure_model()  # as the starting weights of a new stage
    for key, value in module.model.state_dict().items():
        assert torch.equal(restarted.model.state_dict()[key], value), key


def test_consolidate_keeps_an_existing_output_unless_told_to_overwrite(tmp_path, console_script):
    sharded_checkpoint(tmp_path / "step=1.ckpt", trained_module(), global_step=1)
    (tmp_path / "portable.ckpt").write_bytes(b"precious")
    result = console_script("g2vlm", "consolidate", "step=1.ckpt", "--out", "portable.ckpt", cwd=tmp_path)
    assert result.returncode == 2 and "exists; pass --overwrite" in result.stderr
    assert (tmp_path / "portable.ckpt").read_bytes() == b"precious"
    result = console_script("g2vlm", "consolidate", "step=1.ckpt", "--out", "portable.ckpt", "--overwrite",
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert torch.load(tmp_path / "portable.ckpt", weights_only=True)["global_step"] == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["portable.ckpt", "step=1.ckpt"]  # no partial file


def test_consolidate_refuses_what_is_not_a_sharded_folder(tmp_path, console_script):
    (tmp_path / "single.ckpt").write_bytes(b"x")
    result = console_script("g2vlm", "consolidate", "single.ckpt", cwd=tmp_path)
    assert result.returncode == 2 and "single file already" in result.stderr
    (tmp_path / "empty.ckpt").mkdir()
    result = console_script("g2vlm", "consolidate", "empty.ckpt", cwd=tmp_path)
    assert result.returncode == 2 and "has no .metadata" in result.stderr
    (tmp_path / "garbage.ckpt").mkdir()
    (tmp_path / "garbage.ckpt" / ".metadata").write_bytes(b"not a pickle")
    (tmp_path / "garbage.ckpt" / "meta.pt").write_bytes(b"")
    result = console_script("g2vlm", "consolidate", "garbage.ckpt", cwd=tmp_path)
    assert result.returncode == 2 and "not readable as torch.distributed.checkpoint metadata" in result.stderr
    (tmp_path / "raw.ckpt").mkdir()  # a DCP folder without Lightning's meta.pt
    dcp.save({"state_dict": {"w": torch.ones(2)}}, checkpoint_id=tmp_path / "raw.ckpt", no_dist=True)
    result = console_script("g2vlm", "consolidate", "raw.ckpt", cwd=tmp_path)
    assert result.returncode == 2 and "has no meta.pt" in result.stderr
    assert not list(tmp_path.glob("*.consolidated.ckpt"))


def test_consolidate_runs_no_code_from_the_checkpoint(tmp_path, console_script):
    """Code in any of the three pickled parts (DCP's `.metadata`, a non-tensor DCP entry, `meta.pt`) is refused
    with the file and what it asked for named; the code never runs."""
    marker = tmp_path / "payload-ran"
    module = trained_module()

    smuggled_metadata = tmp_path / "metadata.ckpt"
    sharded_checkpoint(smuggled_metadata, module, global_step=1)
    (smuggled_metadata / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    smuggled_entry = tmp_path / "entry.ckpt"
    sharded_checkpoint(smuggled_entry, module, global_step=1, extra={"extra": {"note": Payload(marker)}})
    smuggled_meta = tmp_path / "meta.ckpt"
    sharded_checkpoint(smuggled_meta, module, global_step=1)
    torch.save({"global_step": Payload(marker)}, smuggled_meta / "meta.pt")

    for folder, message in ((smuggled_metadata, ".metadata: refused to load: its pickle asks for `posix.system`"),
                            (smuggled_entry, "(entry 'extra.note'): refused to load: its pickle asks for `posix.system`"),
                            (smuggled_meta, "meta.pt: refused to load: its pickle asks for `posix.system`")):
        result = console_script("g2vlm", "consolidate", folder.name, cwd=tmp_path)
        assert result.returncode == 2, (folder, result.stdout, result.stderr)
        assert message in result.stderr and str(folder.name) in result.stderr, (folder, result.stderr)
        assert not marker.exists(), folder
    assert not list(tmp_path.glob("*.consolidated.ckpt*"))


def test_consolidate_help_says_what_it_refuses(console_script, tmp_path):
    result = console_script("g2vlm", "consolidate", "--help", cwd=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--overwrite" in text and "unpickler" in text and "weights_only=True" in text
