"""Parity with the reference implementations, through our offline loaders (nothing downloaded):
- our semantic path vs transformers' Qwen2VLForConditionalGeneration (text-only, image+text);
- our patchify vs Qwen2-VL's image processor;
- a Hugging Face Dinov2WithRegistersModel loaded into timm gives the same patch tokens.
"""

import pytest
import torch
from transformers import (
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)

from g2vlm.model.config import DinoConfig, model_config
from g2vlm.model.g2vlm import G2VLM
from g2vlm.model.packing import Text, VitImage, pack
from g2vlm.model.vision_tower import patchify
from g2vlm.model.weights import (
    WeightLoadingError,
    load_dino,
    load_model,
    load_qwen2vl,
    save_model,
)

IMAGE_TOKEN, VISION_START, VISION_END = 120, 122, 123


def _hf_qwen_config(tie: bool = False) -> Qwen2VLConfig:
    """transformers' config with the dimensions of our `tiny` preset."""
    c = model_config("tiny")
    return Qwen2VLConfig(
        text_config={
            "vocab_size": c.vocab_size,
            "hidden_size": c.width,
            "intermediate_size": c.mlp_size,
            "num_hidden_layers": c.layers,
            "num_attention_heads": c.heads,
            "num_key_value_heads": c.kv_heads,
            "rms_norm_eps": c.rms_eps,
            "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta, "mrope_section": list(c.mrope_section)},
            "tie_word_embeddings": tie,
            "bos_token_id": None,
            "eos_token_id": None,
        },
        vision_config={
            "depth": c.vit.depth,
            "embed_dim": c.vit.width,
            "hidden_size": c.width,
            "num_heads": c.vit.heads,
            "mlp_ratio": c.vit.mlp_ratio,
            "patch_size": c.vit.patch_size,
            "temporal_patch_size": c.vit.temporal_patch_size,
            "spatial_merge_size": c.vit.spatial_merge_size,
        },
        image_token_id=IMAGE_TOKEN,
        video_token_id=121,
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
        tie_word_embeddings=tie,
    )


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory):
    torch.manual_seed(0)
    reference = Qwen2VLForConditionalGeneration(_hf_qwen_config()).eval()
    with torch.no_grad():  # biases and norms away from their trivial init, so every weight matters
        for name, p in reference.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path_factory.mktemp("qwen2vl")
    reference.save_pretrained(folder)
    return folder, reference


def _ours(folder) -> G2VLM:
    torch.manual_seed(1)
    model = G2VLM(model_config("tiny", semantic_qk_norm=False, vit_attention="causal")).eval()
    load_qwen2vl(model, folder)
    return model


def test_text_only_logits_match_transformers(qwen_folder):
    folder, reference = qwen_folder
    model = _ours(folder)
    ids = torch.randint(0, 120, (17,), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference(input_ids=ids[None]).logits[0]
        logits = model(pack([[Text(ids)]], model.config)).logits
    assert logits.shape == expected.shape
    assert (logits - expected).abs().max() <= 1e-4


def test_answer_loss_matches_transformers_labels(qwen_folder):
    """Text(supervised=True) segments give the same next-token CE as transformers' shifted labels."""
    folder, reference = qwen_folder
    model = _ours(folder)
    g = torch.Generator().manual_seed(7)
    prompt, answer = torch.randint(0, 120, (9,), generator=g), torch.randint(0, 120, (4,), generator=g)
    ids = torch.cat([prompt, answer])
    labels = torch.cat([torch.full_like(prompt, -100), answer])
    with torch.no_grad():
        expected = reference(input_ids=ids[None], labels=labels[None]).loss
        batch = pack([[Text(prompt), Text(answer, supervised=True)]], model.config)
        loss = torch.nn.functional.cross_entropy(model(batch).logits, batch.text_labels, ignore_index=-100)
    assert (batch.text_labels != -100).sum() == len(answer)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


def test_image_and_text_logits_match_transformers(qwen_folder):
    folder, reference = qwen_folder
    model = _ours(folder)
    g = torch.Generator().manual_seed(4)
    image = torch.rand(3, 16, 24, generator=g)  # 4x6 patches -> 2x3 merged tokens
    before = torch.cat([torch.randint(0, 120, (5,), generator=g), torch.tensor([VISION_START])])
    after = torch.cat([torch.tensor([VISION_END]), torch.randint(0, 120, (7,), generator=g)])
    patches, grid = patchify(image, model.config.vit)
    num_image_tokens = grid[1] * grid[2] // 4
    input_ids = torch.cat([before, torch.full((num_image_tokens,), IMAGE_TOKEN), after])[None]
    mm_token_type_ids = (input_ids == IMAGE_TOKEN).int()
    with torch.no_grad():
        expected = reference(
            input_ids=input_ids,
            pixel_values=patches,
            image_grid_thw=torch.tensor([grid]),
            mm_token_type_ids=mm_token_type_ids,
        ).logits[0]
        logits = model(pack([[Text(before), VitImage(image), Text(after)]], model.config)).logits
    text = input_ids[0] != IMAGE_TOKEN
    assert logits.shape == expected[text].shape
    assert (logits - expected[text]).abs().max() <= 1e-4
    # the image matters: a different image changes the logits after it
    with torch.no_grad():
        other = model(pack([[Text(before), VitImage(image.flip(-1)), Text(after)]], model.config)).logits
    assert (other[len(before) :] - logits[len(before) :]).abs().max() > 1e-4


def test_patchify_matches_qwen_image_processor():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import (
        Qwen2VLImageProcessor,
    )

    config = model_config("tiny").vit
    image = torch.rand(3, 16, 24, generator=torch.Generator().manual_seed(5))
    processor = Qwen2VLImageProcessor(
        patch_size=config.patch_size, temporal_patch_size=config.temporal_patch_size, merge_size=config.spatial_merge_size
    )
    reference = processor(images=[image], do_resize=False, do_rescale=False, return_tensors="pt")
    patches, grid = patchify(image, config)
    assert tuple(reference["image_grid_thw"][0].tolist()) == grid
    torch.testing.assert_close(patches, reference["pixel_values"], atol=1e-5, rtol=1e-5)


def test_tied_lm_head_and_qk_norm_allow_list(tmp_path):
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(_hf_qwen_config(tie=True)).save_pretrained(tmp_path)
    model = G2VLM(model_config("tiny"))  # semantic QK-norm on: its weights are not in Qwen2-VL
    allowed = load_qwen2vl(model, tmp_path)
    assert all(".q_norm." in k or ".k_norm." in k for k in allowed) and len(allowed) == 2 * model.config.layers
    torch.testing.assert_close(model.lm_head.weight, model.embed_tokens.weight)


def test_mismatched_config_is_named(qwen_folder):
    folder, _ = qwen_folder
    model = G2VLM(model_config("tiny", mlp_size=96))
    with pytest.raises(ValueError, match="intermediate_size"):
        load_qwen2vl(model, folder)


def test_save_and_load_our_checkpoint_is_strict(tmp_path):
    torch.manual_seed(0)
    model = G2VLM(model_config("tiny"))
    path = tmp_path / "model.safetensors"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    from safetensors.torch import load_file, save_file

    state = load_file(path)
    state.pop("heads.camera_head.fc_t.bias")
    state["unknown.weight"] = torch.zeros(1)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    save_file(state, str(path), metadata=metadata)
    with pytest.raises(WeightLoadingError, match=r"heads\.camera_head\.fc_t\.bias.*unknown\.weight"):
        load_model(path)


def _hf_dino(seed: int = 0) -> Dinov2WithRegistersModel:
    config = Dinov2WithRegistersConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        patch_size=4,
        image_size=32,
        num_register_tokens=4,
        layerscale_value=1.0,
    )
    torch.manual_seed(seed)
    model = Dinov2WithRegistersModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model


@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
def test_hf_dinov2_with_registers_in_timm_gives_the_same_patch_tokens(tmp_path, size):
    from safetensors.torch import save_file

    reference = _hf_dino()
    reference.save_pretrained(tmp_path)  # the on-disk layout (attention.attention.query, ...)
    in_memory = tmp_path / "in_memory.safetensors"  # transformers 5's module names (attention.q_proj, ...)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(in_memory))
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        expected = reference(pixel_values=(images - mean) / std).last_hidden_state[:, 1 + 4 :]
    for source in (tmp_path, in_memory):
        model = _tiny_dino_model()
        load_dino(model, source)
        with torch.no_grad():
            tokens = model.dino(images)
        assert tokens.shape == expected.shape
        assert (tokens - expected).abs().max() <= 1e-5, source


def test_import_weights_tool_builds_a_strict_starting_checkpoint(qwen_folder, tmp_path):
    from g2vlm.tools import main

    folder, reference = qwen_folder
    dino = _hf_dino()
    dino.save_pretrained(tmp_path / "dino")
    out = tmp_path / "start.safetensors"
    argv = ["import-weights", "--preset", "tiny", "--semantic-qk-norm", "off", "--qwen2vl", str(folder)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--dinov2", str(tmp_path / "dino"), "--out", str(out)])
    assert exit_info.value.code == 0
    model = load_model(out)
    assert not model.config.semantic_qk_norm
    torch.testing.assert_close(model.embed_tokens.weight, reference.model.language_model.embed_tokens.weight)
    torch.testing.assert_close(
        model.trunk.layers[1].semantic.mlp.down_proj.weight, reference.model.language_model.layers[1].mlp.down_proj.weight
    )
    torch.testing.assert_close(model.dino.vit.blocks[1].mlp.fc2.weight, dino.encoder.layer[1].mlp.fc2.weight)


def _tiny_dino_model() -> G2VLM:
    dino = DinoConfig(width=32, depth=2, heads=4, patch_size=4, registers=4, img_size=32)
    return G2VLM(model_config("tiny", semantic=False, vit=None, dino=dino))


def test_dino_loads_from_timm_and_original_dinov2_layouts(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = _tiny_dino_model()
    with torch.no_grad():
        for p in source.dino.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected = source.dino(images)
    timm_state = {k: v.contiguous() for k, v in source.dino.vit.state_dict().items()}
    save_file(timm_state, str(tmp_path / "timm.safetensors"))
    # the original facebookresearch layout: CLS position inside pos_embed, `register_tokens`, `mask_token`
    original = dict(timm_state)
    cls_position = torch.randn(1, 1, 32) * 0.2
    original["cls_token"] = timm_state["cls_token"] - cls_position
    original["pos_embed"] = torch.cat([cls_position, timm_state["pos_embed"]], dim=1)
    original["register_tokens"] = original.pop("reg_token")
    original["mask_token"] = torch.zeros(1, 32)
    torch.save(original, tmp_path / "original.pth")
    for name in ("timm.safetensors", "original.pth"):
        model = _tiny_dino_model()
        load_dino(model, tmp_path / name)
        with torch.no_grad():
            assert (model.dino(images) - expected).abs().max() <= 1e-6, name


def test_dino_with_missing_keys_is_refused(tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in _tiny_dino_model().dino.vit.state_dict().items()}
    state.pop("blocks.1.mlp.fc2.weight")
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(WeightLoadingError, match=r"blocks\.1\.mlp\.fc2\.weight"):
        load_dino(_tiny_dino_model(), tmp_path / "broken.safetensors")


def test_qwen2vl_in_memory_layout_loads_the_same(qwen_folder, tmp_path):
    """transformers 5 module names (model.language_model.*, model.visual.*) map like the on-disk names."""
    import shutil

    from safetensors.torch import save_file

    folder, reference = qwen_folder
    shutil.copy(folder / "config.json", tmp_path / "config.json")
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(tmp_path / "model.safetensors"))
    assert any(k.startswith("model.language_model.") for k in reference.state_dict())
    on_disk, in_memory = _ours(folder), _ours(tmp_path)
    for (name, a), (_, b) in zip(on_disk.state_dict().items(), in_memory.state_dict().items()):
        assert torch.equal(a, b), name
