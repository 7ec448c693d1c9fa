"""QA DataModule: the chat template, labels on answers only, every turn kept, markers on the ViT copy only,
token-budget packing, mixing by weight, a tokenizer loaded from a local folder."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import torch

from g2vlm.datamodules.qa.batch import GeometryPart, ImagePart, TextPart
from g2vlm.datamodules.qa.datamodule import QADataModule, built, token_budget_batches
from g2vlm.datamodules.qa.schema import Marker, QARecord
from g2vlm.datamodules.qa.shards import QAShardWriter, iter_qa_samples
from g2vlm.datamodules.qa.template import chat_text
from g2vlm.datamodules.qa.tokenizer import build_character_tokenizer, load_tokenizer
from g2vlm.datamodules.shards.decoding import encode_jpeg
from g2vlm.datamodules.shards.schema import DataError
from g2vlm.datamodules.shards.skip_log import SkipLog
from g2vlm.datamodules.synthetic.qa import write_synthetic_qa_shards


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    build_character_tokenizer(folder)
    return folder


def _grey_jpeg(value: int = 128) -> bytes:
    return encode_jpeg(np.full((40, 40, 3), value, np.uint8), quality=95)


def _module(tokenizer_folder, shards, **changes) -> QADataModule:
    args = dict(tokenizer=str(tokenizer_folder), train_shards=shards, geometry_size=(32, 32), vit_size=(32, 32),
                geometry_patch_size=4, vit_patch_size=4, max_tokens=4000, num_workers=0, train_batches_per_epoch=2)
    data = QADataModule(**{**args, **changes})
    data.setup("fit")
    return data


def test_template_labels_turns_and_markers(tokenizer_folder, tmp_path):
    turns = [("How many chairs?", "Two."), ("And tables?", "One.")]
    record = QARecord("vqa", "room", "chat", "free_form", turns, num_images=2,
                      markers=[Marker("point", "red", 1, (500.0, 500.0))])
    with QAShardWriter(tmp_path, "qa") as writer:
        writer.write("sample", record, [_grey_jpeg(), _grey_jpeg()])
    shard = str(tmp_path / "qa-000000.tar")
    data = _module(tokenizer_folder, [shard], val_shards=[shard])
    (sample,) = next(iter(data.val_dataloader())).samples
    tokenizer = data.tokenizer
    text = tokenizer.decode(torch.cat([p.ids for p in sample.parts if isinstance(p, TextPart)]))
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "Reconstruct the 3D scene.<|vision_start|><|vision_end|><|vision_start|><|vision_end|>"
                    "<|vision_start|><|vision_end|>How many chairs?<|im_end|>\n<|im_start|>assistant\nTwo.<|im_end|>"
                    "\n<|im_start|>user\nAnd tables?<|im_end|>\n<|im_start|>assistant\nOne.<|im_end|>")
    assert text.replace("<|vision_start|><|vision_end|>", "") == chat_text(turns)  # the tokenizer corpus' text
    supervised = [tokenizer.decode(p.ids) for p in sample.parts if isinstance(p, TextPart) and p.supervised]
    assert supervised == ["Two.<|im_end|>", "One.<|im_end|>"]  # both turns, nothing else
    assert tokenizer.decode(sample.prompt[-1].ids).endswith("<|im_start|>assistant\n") and sample.answer == "One."
    kinds = [type(p) for p in sample.parts]
    assert kinds.count(GeometryPart) == 1 and kinds.count(ImagePart) == 2
    assert kinds.index(GeometryPart) < kinds.index(ImagePart)  # geometry first: the ViT and text tokens see it
    # the red marker is on the second ViT copy only; the geometry copy and the first ViT copy stay grey
    vit = [p.image for p in sample.parts if isinstance(p, ImagePart)]
    geometry = next(p.frames for p in sample.parts if isinstance(p, GeometryPart))
    red, green, blue = vit[1][:, 16, 16].tolist()
    assert red > 240 and green < 15 and blue < 15
    assert (vit[0].int() - 128).abs().max() <= 2 and (geometry.int() - 128).abs().max() <= 2
    assert sample.num_tokens == sum(p.ids.numel() for p in sample.parts if isinstance(p, TextPart)) + 2 * 16 + 2 * 64
    # markers_on_geometry (not official, for models trained from scratch) marks the geometry copy too
    marked = _module(tokenizer_folder, [shard], val_shards=[shard], markers_on_geometry=True)
    (sample,) = next(iter(marked.val_dataloader())).samples
    frames = next(p.frames for p in sample.parts if isinstance(p, GeometryPart))
    red, green, blue = frames[1, :, 16, 16].tolist()
    assert red > 240 and green < 15 and blue < 15 and (frames[0].int() - 128).abs().max() <= 2


def test_vit_copy_keeps_markers_at_the_image_corners(tokenizer_folder, tmp_path):
    """A 4:3 image with SPAR markers at its four corners: each reaches the model's ViT input in its corner (the
    whole image is resized, as the official loader does; a centre crop to the square input would cut 12.5 % off
    either side and both markers of that side)."""
    from g2vlm.lit.spatial_reasoning import to_segments
    from g2vlm.model.packing import VitImage

    colours = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 128, 0), "yellow": (255, 255, 0)}
    corners = {"red": (25, 35), "blue": (975, 35), "green": (25, 965), "yellow": (975, 965)}  # 0-1000 scale
    markers = [Marker("point", c, 0, corners[c], "spar", colours[c]) for c in colours]
    record = QARecord("spar_scannet", "scene0000_00", "depth_prediction_oc", "numeric", [("How deep?", "1.5")], 1,
                      markers)
    with QAShardWriter(tmp_path, "qa") as writer:
        writer.write("corners", record, [encode_jpeg(np.full((240, 320, 3), 128, np.uint8), quality=95)])
    data = _module(tokenizer_folder, [str(tmp_path / "qa-000000.tar")], vit_size=(112, 112))
    (sample,) = built(iter_qa_samples([str(tmp_path / "qa-000000.tar")], SkipLog()), data.template, 10**6, SkipLog())
    (vit,) = [s.image for s in to_segments(sample.parts) if isinstance(s, VitImage)]  # what the ViT is fed
    assert vit.shape == (3, 112, 112)
    for colour, (x, y) in corners.items():
        column, row = round(x / 1000 * 112), round(y / 1000 * 112)
        assert 255 * vit[:, row, column] == pytest.approx(torch.tensor(colours[colour], dtype=torch.float32),
                                                          abs=12), colour


def test_budget_packing_and_mixing(tokenizer_folder, tmp_path):
    write_synthetic_qa_shards(tmp_path / "spatial", scenes=6, views=2, height=32, width=32, questions_per_scene=4)
    vqa = QARecord("vqa", "photo", "caption", "free_form", [("What is this?", "A grey square.")], 1,
                   reconstruct=False)
    with QAShardWriter(tmp_path / "vqa", "vqa") as writer:
        for index in range(10):
            writer.write(f"v{index}", vqa, [_grey_jpeg()])
    shards = [str(tmp_path / "spatial" / "synthetic_qa-train-000000.tar"), str(tmp_path / "vqa" / "vqa-000000.tar")]
    data = _module(tokenizer_folder, shards, train_weights=[1.0, 0.0], max_tokens=900, train_batches_per_epoch=6)
    batches = list(data.train_dataloader())
    assert len(batches) == 6
    assert all(b.num_tokens <= 900 for b in batches) and max(b.batch_size for b in batches) >= 2
    assert all(s.task != "caption" for b in batches for s in b.samples)  # weight 0: never drawn
    data = _module(tokenizer_folder, shards, train_weights=[0.0, 1.0], max_tokens=900)
    sample = next(iter(data.train_dataloader())).samples[0]
    assert sample.task == "caption" and not any(isinstance(p, GeometryPart) for p in sample.parts)  # plain VQA
    # a sample alone over the budget is skipped and counted, never truncated
    skips = SkipLog()
    records = iter_qa_samples([shards[0]], skips)
    assert list(token_budget_batches(built(records, data.template, 100, skips), 100, skips)) == []
    assert skips.counts["over_budget"] == 24


def test_tokenizer_needs_a_local_folder_with_the_special_tokens(tmp_path, tokenizer_folder):
    with pytest.raises(ValueError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")
    tokenizer = load_tokenizer(tokenizer_folder)
    assert len(tokenizer) <= 128  # fits the tiny presets' vocabulary
    assert tokenizer.decode(tokenizer("2.5 m, <|im_end|>", add_special_tokens=False)["input_ids"]) == "2.5 m, <|im_end|>"


def test_trained_bpe_keeps_the_special_tokens_whole(tmp_path):
    from g2vlm.datamodules.qa.tokenizer import QWEN_SPECIAL_TOKENS, train_bpe_tokenizer

    texts = [f"<|im_start|>user\nHow far is the red box {i}.{i} m?<|im_end|>\n" for i in range(50)]
    tokenizer = train_bpe_tokenizer(tmp_path / "bpe", texts, vocab_size=300)
    assert len(tokenizer) <= 300
    text = "<|im_start|>user\nHow far is the blue sphere, 2.75 m?<|im_end|>\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text) / 2  # merges learnt on the corpus: far fewer ids than characters
    for token in QWEN_SPECIAL_TOKENS:
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1
    # as Qwen2's tokenizer, numbers are split into single digits, although "12.12" and the like recur in the corpus
    tokens = tokenizer.tokenize("12.12 m or 2.75 m, 10.25")
    assert [t for t in tokens if any(c.isdigit() for c in t)] == list("1212") + list("275") + list("1025")


def test_qa_samples_that_all_fail_to_decode_stop_the_training_stream_with_the_shards_and_counts(tokenizer_folder,
                                                                                              tmp_path):
    """Every sample reads and validates (its JPEG header is intact) but no image decodes: the training stream stops
    with one DataError naming the shards and the skip counts, instead of drawing shards forever."""


    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    cut = encode_jpeg(noise, quality=95)[:2000]  # the header survives, most of the scan data does not
    record = QARecord("vqa", "room", "chat", "free_form", [("How many chairs?", "Two.")], num_images=1)
    shards = []
    for number in range(2):
        with QAShardWriter(tmp_path, f"cut{number}") as writer:
            for index in range(3):
                writer.write(f"sample{index}", record, [cut])
        shards.append(str(tmp_path / f"cut{number}-000000.tar"))
    data = _module(tokenizer_folder, shards)

    def expire(signum, frame):
        raise TimeoutError("the training stream still draws after 60 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    try:
        with pytest.raises(DataError) as raised:
            next(iter(data.train_dataloader()))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    message = str(raised.value)
    assert message.startswith("TrainQABatches: 1000 samples in a row were skipped")
    assert shards[0] in message and shards[1] in message and "'decode': 1000" in message


@pytest.mark.parametrize(("shards", "world_size", "workers", "refused"), [(3, 2, 2, True), (4, 2, 2, False)])
def test_qa_validation_with_fewer_shards_than_loader_slots_is_refused_at_setup(tokenizer_folder, tmp_path, shards,
                                                                             world_size, workers, refused):
    from types import SimpleNamespace

    record = QARecord("vqa", "room", "chat", "free_form", [("How many chairs?", "Two.")], num_images=1)
    for number in range(shards):
        with QAShardWriter(tmp_path, f"val{number}") as writer:
            writer.write("sample", record, [_grey_jpeg()])
    data = QADataModule(tokenizer=str(tokenizer_folder), val_shards=[str(tmp_path / "val*-000000.tar")],
                        num_workers=workers)
    data.trainer = SimpleNamespace(global_rank=0, world_size=world_size, limit_val_batches=1.0)
    if not refused:
        data.setup("fit")
        return
    with pytest.raises(ValueError, match=f"QADataModule val_shards: {shards} validation shards for {world_size} ranks "
                                         f"x {workers} workers"):
        data.setup("fit")


def test_a_training_stream_whose_samples_all_exceed_the_token_budget_stops_with_one_error(tokenizer_folder, tmp_path):
    """Every sample longer than max_tokens: skipped as over_budget and counted by the failures-in-a-row guard, so
    the resampled stream raises DataError instead of drawing forever."""
    record = QARecord("vqa", "room", "chat", "free_form", [("How many chairs?", "Two.")], num_images=1)
    with QAShardWriter(tmp_path, "long") as writer:
        for index in range(3):
            writer.write(f"sample{index}", record, [_grey_jpeg()])
    data = _module(tokenizer_folder, [str(tmp_path / "long-000000.tar")], max_tokens=4)

    def expire(signum, frame):
        raise TimeoutError("the training stream still draws after 60 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    try:
        with pytest.raises(DataError, match="samples in a row were skipped") as raised:
            next(iter(data.train_dataloader()))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert "'over_budget': 1000" in str(raised.value)


def test_qa_skip_counts_reach_tensorboard_and_the_checkpoint_state(tokenizer_folder, tmp_path):
    """Samples over the token budget are skipped; their running total reaches the trainer's TensorBoard logger as
    data/skipped/over_budget and the DataModule's checkpoint state (as for the multi-view clips)."""
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_synthetic_qa_shards(tmp_path / "spatial", scenes=6, views=2, height=32, width=32, questions_per_scene=4)
    shards = [str(tmp_path / "spatial" / "synthetic_qa-train-000000.tar")]
    data = _module(tokenizer_folder, shards)
    lengths = sorted(data.template.build(record).num_tokens for record in iter_qa_samples(shards, SkipLog()))
    budget = lengths[len(lengths) // 2]  # about half the samples are longer: skipped as over_budget
    assert lengths[0] <= budget < lengths[-1]

    class Counting(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))

        def training_step(self, batch, batch_idx):
            return self.weight * batch.batch_size

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = QADataModule(tokenizer=str(tokenizer_folder), train_shards=shards, geometry_size=(32, 32),
                        vit_size=(32, 32), geometry_patch_size=4, vit_patch_size=4, max_tokens=budget, num_workers=0,
                        train_batches_per_epoch=6)
    logger = TensorBoardLogger(tmp_path / "runs", name="", version="")
    trainer = L.Trainer(accelerator="cpu", max_steps=6, log_every_n_steps=1, logger=logger, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Counting(), datamodule=data)
    assert data.skipped_counts["over_budget"] >= 1
    assert data.state_dict()["skipped_counts"] == dict(data.skipped_counts)
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    values = [event.value for event in events.Scalars("data/skipped/over_budget")]
    assert values == sorted(values) and values[-1] == data.skipped_counts["over_budget"]
