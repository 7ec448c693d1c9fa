"""Official G²VLM checkpoints -> our model, through `g2vlm import-weights --official`, strictly.

The official names come from tests/fixtures/official_g2vlm.py, which lists the official state dict module class by
module class (checked against the official code: same names, shapes and order at the tiny and the 2B sizes); they
are never derived from our keys.
"""

from __future__ import annotations

import json
import weakref

import pytest
import torch

from g2vlm.model.config import OfficialInputConfig, model_config
from g2vlm.model.official_weights import (
    OFFICIAL_DROPPED,
    import_official,
    official_model_config,
    plan_official_import,
)
from g2vlm.model.weights import TensorSource, WeightLoadingError, load_model, model_record, same_architecture
from g2vlm.tools import main
from tests.conftest import run_console_script
from tests.fixtures.official_g2vlm import (
    DINO_L,
    TEXT_2B,
    TINY_DINO,
    TINY_TEXT,
    TINY_VIT,
    TRAINING_LOSS_KEYS,
    VIT_2B,
    official_key_shapes,
    official_state,
    write_official_folder,
)


class MetaSource:
    """A TensorSource stand-in that has only names and shapes (no data): the 2B checkpoint on the meta device."""

    def __init__(self, key_shapes: dict[str, tuple[int, ...]]) -> None:
        self.path, self.key_shapes = "G2VLM-2B (meta)", key_shapes

    def keys(self) -> list[str]:
        return list(self.key_shapes)

    def meta(self, name: str) -> torch.Tensor:
        return torch.empty(self.key_shapes[name], device="meta")


def test_2b_every_official_tensor_maps_with_equal_shapes(tmp_path):
    """At the released size: all 1,947 official tensors map (the DINO mask token by the named allow-list),
    shapes equal, none left over; the architecture read from the official config files is our g2vlm-2b."""
    for name, config in (("text_config.json", TEXT_2B), ("vit_config.json", VIT_2B), ("dino_config.json", DINO_L)):
        (tmp_path / name).write_text(json.dumps(config))
    config = official_model_config(tmp_path)
    assert same_architecture(config, model_config("g2vlm-2b"))
    key_shapes = official_key_shapes(TEXT_2B, VIT_2B, DINO_L)
    assert len(key_shapes) == 1947
    official = config.replace(official_input=OfficialInputConfig((151644, 1, 2), 151652, 151653))
    plan, dropped, planned = plan_official_import(MetaSource(key_shapes), official)  # raises on any mismatch
    used = {key for sources, _ in plan.values() for key in sources}
    assert used | set(dropped) == set(key_shapes)
    assert dropped == {"dino_model.embeddings.mask_token": "dino_model.embeddings.mask_token"}
    assert len(plan) == len(_meta_model(official).state_dict())
    # the fused DINO qkv comes from the three official projections, in order
    assert plan["dino.vit.blocks.23.attn.qkv.weight"][0] == tuple(
        f"dino_model.encoder.layer.23.attention.attention.{n}.weight" for n in ("query", "key", "value"))
    assert planned["dino.vit.blocks.23.attn.qkv.weight"].shape == (3072, 1024)


def _meta_model(config):
    from g2vlm.model.g2vlm import G2VLM

    with torch.device("meta"):
        return G2VLM(config)


@pytest.fixture(scope="module")
def official_folder(tmp_path_factory):
    """The tiny official checkpoint in three shards with an index, with the confidence heads and training-loss
    keys, and its state dict."""
    state = official_state(official_key_shapes(TINY_TEXT, TINY_VIT, TINY_DINO, confidence=True, training_loss=True))
    folder = write_official_folder(tmp_path_factory.mktemp("official") / "G2VLM-tiny", state, shards=3)
    return folder, state


def test_import_command_loads_every_official_key_strictly(official_folder, tmp_path):
    folder, state = official_folder
    out = tmp_path / "imported.safetensors"
    result = run_console_script("g2vlm", "import-weights", "--official", str(folder), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "confidence head: on" in result.stdout
    for key in ("dino_model.embeddings.mask_token", *TRAINING_LOSS_KEYS):
        assert f"): {key}" in result.stdout, key  # reported as dropped, with its allow-list pattern
    model = load_model(out)  # strict: every key of ours was written, nothing else
    config = model.config
    assert config.geometry_heads.confidence and config.official_input is not None
    assert config.geometry_positions == "sequential" and config.official_input.dino_windows == "official"
    tokens = json.loads((folder / "tokenizer.json").read_text())["added_tokens"]
    ids = {t["content"]: t["id"] for t in tokens}
    assert config.official_input.prompt_ids[0] == ids["<|im_start|>"]
    assert (config.official_input.vision_start_id, config.official_input.vision_end_id) == \
        (ids["<|vision_start|>"], ids["<|vision_end|>"])
    ours = model.state_dict()
    # one tensor of every official module class lands where it belongs
    pairs = {
        "language_model.model.embed_tokens.weight": "embed_tokens.weight",
        "language_model.lm_head.weight": "lm_head.weight",
        "language_model.model.layers.1.self_attn.q_proj.weight": "trunk.layers.1.semantic.q_proj.weight",
        "language_model.model.layers.1.self_attn.k_proj_moe_geo.bias": "trunk.layers.1.geometric.k_proj.bias",
        "language_model.model.layers.0.self_attn.o_proj_moe_geo.weight": "trunk.layers.0.geometric.o_proj.weight",
        "language_model.model.layers.0.self_attn.k_norm_moe_geo.weight": "trunk.layers.0.geometric.k_norm.weight",
        "language_model.model.layers.0.self_attn.q_norm.weight": "trunk.layers.0.semantic.q_norm.weight",
        "language_model.model.layers.0.mlp_moe_geo.down_proj.weight": "trunk.layers.0.geometric.mlp.down_proj.weight",
        "language_model.model.layers.1.input_layernorm_moe_geo.weight": "trunk.layers.1.geometric.input_norm.weight",
        "language_model.model.layers.1.post_attention_layernorm.weight":
            "trunk.layers.1.semantic.post_attention_norm.weight",
        "language_model.model.layers.0.ls1.gamma": "trunk.layers.0.geometric.attention_scale",
        "language_model.model.layers.0.ls2.gamma": "trunk.layers.0.geometric.mlp_scale",
        "language_model.model.norm.weight": "trunk.semantic_norm.weight",
        "language_model.model.norm_moe_geo.weight": "trunk.geometric_norm.weight",
        "vit_model.patch_embed.proj.weight": "vision_tower.model.patch_embed.proj.weight",
        "vit_model.blocks.0.attn.qkv.weight": "vision_tower.model.blocks.0.attn.qkv.weight",
        "vit_model.merger.mlp.2.weight": "vision_tower.model.merger.mlp.2.weight",
        "dino_model.encoder.layer.1.mlp.fc2.weight": "dino.vit.blocks.1.mlp.fc2.weight",
        "dino_model.encoder.layer.1.attention.output.dense.bias": "dino.vit.blocks.1.attn.proj.bias",
        "dino_model.encoder.layer.0.layer_scale2.lambda1": "dino.vit.blocks.0.ls2.gamma",
        "dino_model.embeddings.register_tokens": "dino.vit.reg_token",
        "dino2llm.weight": "dino_projector.weight",
        "point_decoder.blocks.4.attn.qkv.weight": "heads.point_decoder.blocks.4.attn.qkv.weight",
        "point_head.proj.weight": "heads.point_head.proj.weight",
        "camera_decoder.linear_out.bias": "heads.camera_decoder.linear_out.bias",
        "camera_head.res_conv.1.res_conv3.bias": "heads.camera_head.res_conv.1.res_conv3.bias",
        "camera_head.more_mlps.2.weight": "heads.camera_head.more_mlps.2.weight",
        "camera_head.fc_rot.weight": "heads.camera_head.fc_rot.weight",
        "global_points_decoder.blocks.0.cross_attn.q_proj.weight":
            "heads.global_point_decoder.blocks.0.cross_attn.q_proj.weight",
        "global_points_decoder.blocks.3.cross_attn.k_proj.bias":
            "heads.global_point_decoder.blocks.3.cross_attn.k_proj.bias",
        "global_points_decoder.blocks.4.cross_attn.v_proj.weight":
            "heads.global_point_decoder.blocks.4.cross_attn.v_proj.weight",
        "global_points_decoder.blocks.2.norm_y.weight": "heads.global_point_decoder.blocks.2.norm_y.weight",
        "global_point_head.proj.bias": "heads.global_point_head.proj.bias",
        "conf_decoder.blocks.0.mlp.fc1.weight": "heads.confidence_decoder.blocks.0.mlp.fc1.weight",
        "conf_head.proj.weight": "heads.confidence_head.proj.weight",
    }
    for official, mine in pairs.items():
        assert torch.equal(ours[mine], state[official]), official
    layer = "dino_model.encoder.layer.0.attention.attention"
    assert torch.equal(ours["dino.vit.blocks.0.attn.qkv.weight"],
                       torch.cat([state[f"{layer}.{n}.weight"] for n in ("query", "key", "value")]))
    position = state["dino_model.embeddings.position_embeddings"]
    assert torch.equal(ours["dino.vit.pos_embed"], position[:, 1:])
    assert torch.equal(ours["dino.vit.cls_token"], state["dino_model.embeddings.cls_token"] + position[:, :1])
    assert model_record(out)["input_format"] == "official"


def _g2vlm(*args: str) -> int:
    """The `g2vlm` command in-process (the subprocess test above covers the console script itself)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code


def test_import_of_one_file_beside_the_config_files(official_folder, tmp_path):
    folder, state = official_folder
    single = write_official_folder(tmp_path / "single", state)  # one model.safetensors
    out = tmp_path / "imported.safetensors"
    assert _g2vlm("import-weights", "--official", str(single / "model.safetensors"), "--out", str(out)) == 0
    assert torch.equal(load_model(out).state_dict()["heads.confidence_head.proj.bias"], state["conf_head.proj.bias"])


def test_import_refuses_an_unknown_key_and_names_it(tmp_path, capsys):
    state = official_state(official_key_shapes(TINY_TEXT, TINY_VIT, TINY_DINO))
    state["language_model.model.layers.0.mystery_moe_geo.weight"] = torch.zeros(3)
    folder = write_official_folder(tmp_path / "bad", state)
    assert _g2vlm("import-weights", "--official", str(folder), "--out", str(tmp_path / "x.safetensors")) == 2
    assert "language_model.model.layers.0.mystery_moe_geo.weight" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_import_without_a_tokenizer_asks_for_one(official_folder, tmp_path, capsys):
    folder, state = official_folder
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.safetensors").symlink_to(folder / "model-00001-of-00003.safetensors")
    assert _g2vlm("import-weights", "--official", str(bare), "--out", str(tmp_path / "x.safetensors")) == 2
    assert "--tokenizer" in capsys.readouterr().err


def test_import_refuses_a_missing_key_and_a_wrong_shape(tmp_path):
    official_input = OfficialInputConfig((89, 1), 91, 92)
    state = official_state(official_key_shapes(TINY_TEXT, TINY_VIT, TINY_DINO))
    missing = dict(state)
    del missing["global_points_decoder.blocks.1.cross_attn.v_proj.bias"]
    with pytest.raises(WeightLoadingError, match=r"heads\.global_point_decoder\.blocks\.1\.cross_attn\.v_proj\.bias"):
        import_official(write_official_folder(tmp_path / "missing", missing), tmp_path / "a.safetensors",
                        official_input, progress=False)
    wrong = dict(state)
    wrong["dino2llm.bias"] = torch.zeros(7)
    with pytest.raises(WeightLoadingError, match=r"dino_projector\.bias \(7,\)"):
        import_official(write_official_folder(tmp_path / "wrong", wrong), tmp_path / "b.safetensors",
                        official_input, progress=False)


def test_the_allow_list_is_named_and_small():
    assert set(OFFICIAL_DROPPED) == {"dino_model.embeddings.mask_token", "Pi3Loss.*", "*.rotary_emb.inv_freq",
                                     "*.rotary_pos_emb.inv_freq"}
    assert all(reason for reason in OFFICIAL_DROPPED.values())


def test_import_streams_one_tensor_at_a_time(official_folder, tmp_path, monkeypatch):
    """The converter never holds more than the few source tensors of one output tensor (Q, K, V for a fused DINO
    qkv): the checkpoint never sits in memory, let alone twice."""
    folder, _ = official_folder
    alive: list[weakref.ref] = []
    most = 0
    original = TensorSource.get

    def tracked(self, name):
        nonlocal most
        alive[:] = [ref for ref in alive if ref() is not None]
        tensor = original(self, name)
        alive.append(weakref.ref(tensor))
        most = max(most, len(alive))
        return tensor

    monkeypatch.setattr(TensorSource, "get", tracked)
    import_official(folder, tmp_path / "streamed.safetensors", OfficialInputConfig((89, 1), 91, 92), progress=False)
    assert 1 <= most <= 3
