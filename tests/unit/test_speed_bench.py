"""`g2vlm bench train|infer` on a CPU: the commands run end to end and write complete JSON (not speed: no timings
are asserted beyond being positive and finite), and the step's size and FLOP bookkeeping is right."""

from __future__ import annotations

import json
import math

import pytest
import torch
from lightning.fabric.utilities.throughput import measure_flops
from torch.nn.attention import SDPBackend, sdpa_kernel

from g2vlm.benchmarks.speed.train import (
    JOINT_FREEZE,
    SUITES,
    geometry_batch_size,
    joint_flops,
    joint_samples,
)
from g2vlm.datamodules.qa.batch import ImagePart, TextPart
from g2vlm.lit.spatial_reasoning import to_segments
from g2vlm.model.config import model_config
from g2vlm.model.g2vlm import G2VLM
from g2vlm.model.packing import pack
from g2vlm.tools import build_parser


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


def test_bench_train_on_cpu_writes_every_field(tmp_path, capsys):
    out = tmp_path / "train.json"
    assert _run(["bench", "train", "--device", "cpu", "--case", "geo-64-2v-ckpt", "--case", "joint-512",
                 "--warmup", "1", "--steps", "2", "--out", str(out)]) == 0
    assert "geo-64-2v-ckpt" in capsys.readouterr().out
    result = json.loads(out.read_text())
    train, env = result["train"], result["env"]
    assert train["device"].startswith("cpu") and train["peak_bf16_flops"] is None
    assert env["versions"]["torch"] == torch.__version__.split("+")[0] and env["date"]
    assert [case["id"] for case in train["cases"]] == ["geo-64-2v-ckpt", "joint-512"]
    geometry, joint = train["cases"]
    assert (geometry["batch_size"], geometry["views"], geometry["tokens_per_step"]) == (4, 2, 4 * 2 * 64)
    assert geometry["checkpointing"] is True and joint["checkpointing"] is False
    assert joint["tokens_per_step"] == 512 and joint["answer_tokens"] > 0
    for case in train["cases"]:
        assert case["status"] == "ok" and case["mfu"] is None  # no bf16 peak on a CPU
        assert len(case["step_s_all"]) == 2 and all(_positive(s) for s in case["step_s_all"])
        for key in ("step_s", "tokens_per_s", "images_per_s", "flops_per_step", "achieved_tflops", "peak_memory_gib"):
            assert _positive(case[key]), (case["id"], key, case[key])
        assert case["tokens_per_s"] == pytest.approx(case["tokens_per_step"] / case["step_s"])


def test_bench_infer_on_cpu_writes_every_field(tmp_path, capsys):
    out = tmp_path / "infer.json"
    assert _run(["bench", "infer", "--device", "cpu", "--views", "1,3", "--warmup", "0", "--steps", "2",
                 "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "VGGT" in table and "3 views" in table
    infer = json.loads(out.read_text())["infer"]
    assert (infer["preset"], infer["height"], infer["width"]) == ("small", 64, 64)
    assert infer["vggt_h100_aggregator"]["100"] == {"seconds": 3.12, "memory_gb": 21.15}
    assert [case["views"] for case in infer["cases"]] == [1, 3]
    for case in infer["cases"]:
        assert case["status"] == "ok" and case["tokens"] == case["views"] * 64
        for key in ("seconds", "views_per_s", "flops", "achieved_tflops", "peak_memory_gib"):
            assert _positive(case[key]), (case["views"], key)
    assert infer["cases"][1]["flops"] > 3 * infer["cases"][0]["flops"]  # attention across views grows faster


def test_bad_arguments_are_one_line_errors(capsys):
    assert _run(["bench", "train", "--device", "cpu", "--case", "geo-224-8v"]) == 2  # a case of the full suite
    assert "--case geo-224-8v: not a case of this suite" in capsys.readouterr().err
    assert _run(["bench", "infer", "--device", "cpu", "--size", "60x64"]) == 2
    assert "multiples of the patch size 8" in capsys.readouterr().err
    assert _run(["bench", "train", "--device", "cpu", "--steps", "0"]) == 2


def test_geometry_batches_fill_the_official_token_budget():
    # 25,600 trunk tokens per GPU (official pretrain.sh); 224² has 16×16 patches, 392×518 has 28×37
    assert geometry_batch_size(25_600, 24, 224, 224, 14) == 4  # 4 × 6,144 tokens
    assert geometry_batch_size(25_600, 8, 224, 224, 14) == 12  # 12 × 2,048
    assert geometry_batch_size(25_600, 8, 392, 518, 14) == 3  # 3 × 8,288
    assert geometry_batch_size(25_600, 32, 518, 518, 14) == 1  # never zero


def test_joint_samples_pack_to_exactly_the_token_budget():
    config = model_config("tiny")
    suite = SUITES["cpu"]
    for tokens in (512, 700, 90, 5):
        samples = joint_samples(config, suite, tokens)
        batch = pack([to_segments(sample.parts) for sample in samples], config)
        assert [sample.num_tokens for sample in samples] == [pack([to_segments(s.parts)], config).num_tokens
                                                             for s in samples]
        assert batch.num_tokens == tokens
        assert (batch.text_labels != -100).sum() > 0  # every sample has a supervised answer
    # the full suite: 40,960 tokens of 2,098-token images (27² ViT + 37² DINO) and text, without building pixels
    full = SUITES["full"]
    per_image = (756 // 28) ** 2 + (518 // 14) ** 2
    assert per_image == 2098
    counts = []
    for sample in joint_samples(model_config("g2vlm-2b"), full, 40_960):
        images = sum(isinstance(part, ImagePart) for part in sample.parts)
        text = sum(part.ids.numel() for part in sample.parts if isinstance(part, TextPart))
        counts.append((images, text))
    assert sum(images * per_image + text for images, text in counts) == 40_960
    assert counts[0] == (4, 96) and len(counts) == 5


def test_joint_flops_equal_a_count_of_the_real_model():
    """The meta-device count with the stand-in ViT plus the ViT's shape formula equals FlopCounter on the real
    tiny model (one sample: per-sample and whole-pack counting coincide). Model FLOPs: the real model runs the
    math attention, whose backward is two matmuls per forward matmul (a fused kernel's backward would also be
    counted with its recomputation of the scores)."""
    config = model_config("tiny")
    sample = [to_segments(qa.parts) for qa in joint_samples(config, SUITES["cpu"], 184)]
    assert len(sample) == 1
    model = G2VLM(config)
    model.freeze(*JOINT_FREEZE)
    batch = pack(sample, config)
    with sdpa_kernel(SDPBackend.MATH):
        counted = measure_flops(model, lambda: model(batch), loss_fn=lambda out: out.logits.float().sum())
    assert joint_flops(config, sample) == counted


def test_peak_flops_are_dense_bf16_figures(monkeypatch):
    from g2vlm.benchmarks.speed.train import peak_bf16_flops

    assert peak_bf16_flops(torch.device("cpu"))[0] is None
    for name, expected in (("NVIDIA H100 80GB HBM3", 989.4e12), ("NVIDIA H200", 989.4e12), ("NVIDIA A100-SXM4-80GB", 312e12)):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, name=name: name)
        assert peak_bf16_flops(torch.device("cuda"))[0] == pytest.approx(expected), name


def test_bench_train_times_the_lightning_modules_own_step(monkeypatch, tmp_path):
    """The timed step is GeometryPretraining's / SpatialReasoning's own: their training_step, configure_optimizers and
    gradient-norm hook run once per step (a change to the real step is measured), not a copy of them."""
    from g2vlm.lit.base import BaseTask

    calls = {"training_step": 0, "configure_optimizers": 0, "on_before_optimizer_step": 0}
    for name in calls:
        original = getattr(BaseTask, name)

        def counted(self, *args, name=name, original=original, **kwargs):
            calls[name] += 1
            return original(self, *args, **kwargs)

        monkeypatch.setattr(BaseTask, name, counted)
    out = tmp_path / "train.json"
    assert _run(["bench", "train", "--device", "cpu", "--case", "geo-64-2v", "--case", "joint-512", "--warmup", "1",
                 "--steps", "2", "--out", str(out)]) == 0
    assert calls == {"training_step": 6, "configure_optimizers": 2, "on_before_optimizer_step": 6}
    geometry, joint = json.loads(out.read_text())["train"]["cases"]
    assert len(geometry["step_s_all"]) == len(joint["step_s_all"]) == 2
