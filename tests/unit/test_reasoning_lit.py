"""SpatialReasoning: labels only on answer tokens, no leakage across packed samples, variants, starting weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from g2vlm.datamodules.qa.batch import GeometryPart, QABatch, TextPart
from g2vlm.datamodules.qa.datamodule import QADataModule
from g2vlm.datamodules.qa.tokenizer import build_character_tokenizer
from g2vlm.datamodules.synthetic.qa import write_synthetic_qa_shards
from g2vlm.lit.geometry_pretraining import GeometryPretraining
from g2vlm.lit.spatial_reasoning import SpatialReasoning, build_model_config, score_qa


@pytest.fixture(scope="module")
def qa_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("qa")
    build_character_tokenizer(root / "tokenizer")
    write_synthetic_qa_shards(root, scenes=3, views=2, height=32, width=32, questions_per_scene=4, split="val")
    data = QADataModule(str(root / "tokenizer"), val_shards=[str(root / "synthetic_qa-val-000000.tar")],
                        geometry_size=(32, 32), vit_size=(32, 32), geometry_patch_size=4, vit_patch_size=4,
                        max_tokens=100_000, num_workers=0)
    (batch,) = list(data.val_dataloader())
    return root, data, batch


def _module(root, **changes) -> SpatialReasoning:
    torch.manual_seed(0)
    module = SpatialReasoning(str(root / "tokenizer"), preset="tiny", **changes)
    module.configure_model()
    return module


def test_labels_are_the_answer_tokens_only(qa_data):
    root, data, batch = qa_data
    module = _module(root)
    packed = module.pack(batch)
    labels = packed.text_labels
    targets = data.tokenizer.decode(labels[labels != -100])
    assert targets == "".join(f"{s.answer}<|im_end|>" for s in batch.samples)
    supervised = sum(p.ids.numel() for s in batch.samples for p in s.parts if isinstance(p, TextPart) and p.supervised)
    assert int((labels != -100).sum()) == supervised
    # each label is the token after its row: the row before an answer token is the prompt's last "\n"
    rows = torch.nonzero(labels != -100)[:, 0]
    assert torch.equal(packed.input_ids[rows + 1], labels[rows])
    # the training CE is the per-token mean over the answer tokens
    losses = module._losses(batch, run_heads=False)
    logits = module.model(packed).logits
    expected = F.cross_entropy(logits, labels, ignore_index=-100)
    torch.testing.assert_close(losses["ce_objective"], expected)


def test_packed_samples_do_not_leak(qa_data):
    root, _, batch = qa_data
    module = _module(root).eval()
    with torch.no_grad():  # make the geometry path matter (LayerScale and projector away from their tiny init)
        for layer in module.model.trunk.layers:
            layer.geometric.attention_scale.fill_(1.0)
        module.model.dino_projector.weight.normal_(0, 0.2)
    samples = batch.samples[:3]
    changed = [type(s)(**vars(s)) for s in samples]
    changed[1].parts = [GeometryPart(255 - p.frames) if isinstance(p, GeometryPart) else p for p in samples[1].parts]
    with torch.no_grad():
        before = module.model(module.pack(QABatch(samples)))
        after_batch = module.pack(QABatch(changed))
        after = module.model(after_batch)
    owner = after_batch.text_sample
    assert torch.equal(before.logits[owner != 1], after.logits[owner != 1])  # bit-identical
    assert (before.logits[owner == 1] - after.logits[owner == 1]).abs().max() > 1e-4  # the change is visible


def test_variants_decide_what_trains(qa_data):
    root, _, full = qa_data
    batch = QABatch(full.samples[:4])  # (the geometry loss of vg_ce is the slow part: a few samples suffice)

    def grads(module, run_heads):
        module.zero_grad()
        losses = module._losses(batch, run_heads)
        (losses["ce_objective"] + losses.get("vg", 0.0)).backward()
        groups = module.model.parts()
        return {part: any(p.grad is not None and p.grad.abs().sum() > 0 for m in groups[part] for p in m.parameters())
                for part in ("semantic_expert", "geometric_expert", "heads", "dino")}

    ce_only = _module(root, variant="ce_only")
    assert grads(ce_only, False) == {"semantic_expert": True, "geometric_expert": False, "heads": False, "dino": False}
    ce_ce = _module(root, variant="ce_ce")
    assert grads(ce_ce, False) == {"semantic_expert": True, "geometric_expert": True, "heads": False, "dino": False}
    vg_ce = _module(root, variant="vg_ce")
    losses = vg_ce._losses(batch, run_heads=True)
    assert {"ce", "vg", "vg_camera_rotation"} <= set(losses) and torch.isfinite(losses["vg"])
    assert grads(vg_ce, True) == {"semantic_expert": True, "geometric_expert": True, "heads": True, "dino": False}
    with pytest.raises(ValueError, match="trains the geometric expert"):
        SpatialReasoning(str(root / "tokenizer"), variant="ce_ce", freeze=["geometric"])


def test_starts_from_a_geometry_checkpoint(qa_data, tmp_path):
    root, _, _ = qa_data
    torch.manual_seed(3)
    geometry = GeometryPretraining(preset="tiny")
    geometry.configure_model()
    path = tmp_path / "geometry.ckpt"
    torch.save({"state_dict": geometry.state_dict()}, path)
    module = _module(root, geometry_checkpoint=str(path))
    fresh = _module(root)
    theirs, ours, random = geometry.model.state_dict(), module.model.state_dict(), fresh.model.state_dict()
    assert torch.equal(ours["trunk.layers.0.geometric.q_proj.weight"], theirs["trunk.layers.0.geometric.q_proj.weight"])
    assert torch.equal(ours["heads.camera_head.fc_t.bias"], theirs["heads.camera_head.fc_t.bias"])
    assert torch.equal(ours["trunk.layers.0.semantic.q_proj.weight"], random["trunk.layers.0.semantic.q_proj.weight"])
    state = {k: v for k, v in geometry.state_dict().items() if "heads.camera_head" not in k}
    torch.save({"state_dict": state}, path)
    with pytest.raises(RuntimeError, match="camera_head"):
        _module(root, geometry_checkpoint=str(path))


def test_model_overrides_and_scoring():
    config = build_model_config("small", {"semantic": True, "vocab_size": 128, "vit": {"depth": 1, "width": 32, "heads": 4,
                                                                                      "patch_size": 8}})
    assert config.semantic and config.vit.depth == 1 and config.vit.spatial_merge_size == 2 and config.layers == 3
    with pytest.raises(ValueError, match="model_overrides: .*wdith is not a field of ModelConfig"):
        build_model_config("tiny", {"wdith": 3})
    # freezing is the module's `freeze`, not a config field: a `frozen` override would do nothing, so it is refused
    with pytest.raises(ValueError, match="vit.frozen is not a field of VisionTowerConfig.*`freeze`"):
        build_model_config("tiny", {"vit": {"frozen": False}})
    assert score_qa("object_count", "numeric", "4", "4") == 1.0
    assert score_qa("object_distance", "numeric", "about 1.5 m", "2.0") == pytest.approx(0.6)  # error 0.25: θ = 0.50..0.75
    assert score_qa("left_right", "multiple_choice", "B", "B") == 1.0
    assert score_qa("left_right", "multiple_choice", "", "B") == 0.0  # SPAR would count an empty answer as correct
    assert score_qa("position_matching", "multiple_choice", "", "B") == 1.0  # ... and does on its own tasks
