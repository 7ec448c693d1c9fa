"""`g2vlm consolidate` on a sharded checkpoint folder laid out as Lightning's FSDPStrategy writes it
(torch.distributed.checkpoint shards of `model` and `optimizer_0`, plus `meta.pt` with everything else)."""

from __future__ import annotations

import torch
import torch.distributed.checkpoint as dcp

from g2vlm.lit.geometry_pretraining import GeometryPretraining


def sharded_checkpoint(folder, module: GeometryPretraining, global_step: int) -> None:
    dcp.save({"model": module.state_dict()}, checkpoint_id=folder)
    torch.save({"global_step": global_step, "epoch": 0, "pytorch-lightning_version": "2.6.6",
                "hyper_parameters": dict(module.hparams), "loops": {}, "callbacks": {}}, folder / "meta.pt")


def test_consolidated_file_loads_on_cpu_with_identical_weights(tmp_path, console_script):
    torch.manual_seed(0)
    module = GeometryPretraining(preset="tiny", freeze=["vit", "semantic"])
    module.configure_model()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn_like(parameter))  # not the initialisation: a checkpoint worth reading
    folder = tmp_path / "checkpoints" / "step=7.ckpt"
    sharded_checkpoint(folder, module, global_step=7)
    (tmp_path / "checkpoints" / "last.ckpt").symlink_to(folder)

    result = console_script("g2vlm", "consolidate", "checkpoints/last.ckpt", "--out", "portable.ckpt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    portable = torch.load(tmp_path / "portable.ckpt", map_location="cpu", weights_only=False)
    assert portable["global_step"] == 7
    loaded = GeometryPretraining.load_from_checkpoint(tmp_path / "portable.ckpt", map_location="cpu", weights_only=False)
    for key, value in module.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)

    # and as the starting weights of a new stage
    restarted = GeometryPretraining(preset="tiny", freeze=["vit", "semantic"], init_weights=str(tmp_path / "portable.ckpt"))
    restarted.configure_model()
    for key, value in module.model.state_dict().items():
        torch.testing.assert_close(restarted.model.state_dict()[key], value, rtol=0, atol=0)


def test_consolidate_refuses_what_is_not_a_sharded_folder(tmp_path, console_script):
    (tmp_path / "single.ckpt").write_bytes(b"x")
    result = console_script("g2vlm", "consolidate", "single.ckpt", cwd=tmp_path)
    assert result.returncode == 2 and "single file already" in result.stderr
    (tmp_path / "empty.ckpt").mkdir()
    result = console_script("g2vlm", "consolidate", "empty.ckpt", cwd=tmp_path)
    assert result.returncode == 2 and "no .metadata" in result.stderr
