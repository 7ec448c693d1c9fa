"""`g2vlm bench train` (`make bench-train`): speed of one training step — forward, backward, gradient clipping
and the optimizer step — for geometry pretraining and for joint (packed) training.

    g2vlm bench train --out runs/bench/train.json            # CUDA: the `full` suite at g2vlm-2b
    g2vlm bench train --device cpu --steps 3                  # CPU: the `cpu` suite (small / tiny presets)
    g2vlm bench train --case geo-224-24v --case geo-224-24v-ckpt --compile

Suites (`--suite`, default `full` on CUDA and `cpu` on a CPU):
- full (g2vlm-2b; official stage-1 freezing: DINO, ViT and the semantic expert frozen):
  geometry pretraining at 224×224 with 8 and 24 views and at 392×518 (H×W) with 8 views, each with activation
  checkpointing off and on; the batch size is ⌊25,600 / trunk tokens per clip⌋ (the official per-GPU token
  budget, reference g2vlm-official.md §3.1). Joint training: one packed sequence of 40,960 tokens (samples of 4
  images, each as a 756×756 Qwen-ViT copy and a 518×518 DINO frame, plus text; the official joint recipe
  `joint_train.sh`: DINO and ViT frozen, semantic and geometric experts trained by the text CE; the unused
  heads frozen), flex attention with a BlockMask.
- cpu (exercised by the tests): `small` geometry at 64×64 with 2 and 4 views, `tiny` joint at 512 tokens (the
  `small` preset has no semantic side), SDPA with the per-sample masks of the reference path.

Step: the LightningModules' own — `GeometryPretraining` (official stage-1 freezing, loss and optimisation) and
`SpatialReasoning` (variant ce_ce, the official joint freezing) — driven by a Lightning `Trainer`: `training_step`,
`configure_optimizers` (AdamW with per-part groups, fused on CUDA, and the warmup-cosine schedule), the per-part
gradient-norm logging and norm clipping at 1.0 (`g2vlm.lit.base.BaseTask`); bf16 mixed precision on CUDA (the
trunk in bf16; heads, geometry and losses in fp32 as the model does; fp32 matmuls may use TF32,
`--fp32-matmul-precision`), fp32 on a CPU. Geometry batches: random images and ground truth; joint batches: random
token ids and images, CE over the answer tokens. Data loading is excluded (one batch is built on the device and
reused). The first `--warmup` steps are not timed; the step time is the median of `--steps` timed steps (CUDA
events on CUDA), from Lightning's `on_train_batch_start` to `on_train_batch_end`.

Reported per case: step time, tokens/s (trunk tokens), images/s (DINO frames; joint: DINO frames + ViT
images), model FLOPs per step (forward + backward counted on a meta-device copy, where attention runs as plain
matmuls: a backward costs two matmuls per forward matmul; neither a fused kernel's recomputation nor the forward
recomputed by activation checkpointing is counted, so MFU with checkpointing on is model-FLOPs utilisation;
`GeometryPretraining.measure_flops_per_batch` for geometry; joint: per packed sample — attention within a sample
counted dense, none across samples — plus the frozen Qwen-ViT's forward from its layer shapes), achieved TFLOP/s, MFU
against the device's dense bf16 peak (`peak_bf16_flops`; n/a on a CPU), and peak memory (CUDA: max allocated during
the timed steps; CPU: the process's peak RSS so far). A case that runs out of memory is retried with half the
batch, down to 1 clip, and the sizes that did not fit are listed. JSON: {"train": {...}, "env": {...}}.
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from g2vlm.benchmarks.command import reports_value_errors

GEOMETRY_TOKEN_BUDGET = 25_600  # official trunk tokens per GPU in geometry pretraining (reference §3.1)
JOINT_FREEZE = ("dino", "vit", "heads")  # official joint_train.sh (freeze_dino, freeze_vit); heads unused by CE


@dataclass(frozen=True)
class GeometryCase:
    """Geometry pretraining: clips of `views` frames of height × width, batch from the token budget."""

    id: str
    height: int
    width: int
    views: int
    checkpointing: bool


@dataclass(frozen=True)
class JointCase:
    """Joint training: one packed sequence of `tokens` tokens (see `joint_samples`)."""

    id: str
    tokens: int
    checkpointing: bool


@dataclass(frozen=True)
class Suite:
    geometry_preset: str
    geometry_token_budget: int
    joint_preset: str
    vit_size: int  # side of the square Qwen-ViT image copy
    geometry_size: int  # side of the square DINO frame in joint samples
    images_per_sample: int
    text_tokens: int  # text tokens per joint sample (prompt + answer)
    cases: tuple[GeometryCase | JointCase, ...]


def _geometry_cases(sizes: tuple[tuple[int, int, int], ...]) -> tuple[GeometryCase, ...]:
    cases = []
    for height, width, views in sizes:
        size = f"{height}" if height == width else f"{height}x{width}"
        for checkpointing in (False, True):
            cases.append(GeometryCase(f"geo-{size}-{views}v{'-ckpt' if checkpointing else ''}", height, width, views,
                                      checkpointing))
    return tuple(cases)


def _joint_cases(tokens: int) -> tuple[JointCase, ...]:
    return tuple(JointCase(f"joint-{tokens}{'-ckpt' if ckpt else ''}", tokens, ckpt) for ckpt in (False, True))


SUITES: dict[str, Suite] = {
    "full": Suite("g2vlm-2b", GEOMETRY_TOKEN_BUDGET, "g2vlm-2b", vit_size=756, geometry_size=518, images_per_sample=4,
                  text_tokens=96, cases=_geometry_cases(((224, 224, 8), (224, 224, 24), (392, 518, 8)))
                  + _joint_cases(40_960)),
    "cpu": Suite("small", 512, "tiny", vit_size=32, geometry_size=32, images_per_sample=2, text_tokens=24,
                 cases=_geometry_cases(((64, 64, 2), (64, 64, 4))) + _joint_cases(512)),
}


# ------------------------------------------------------------------------------------------- command line
def add_train(benchmarks: argparse._SubParsersAction) -> None:
    parser = benchmarks.add_parser("train", help="training-step speed: step time, tokens/s, images/s, MFU, memory",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=sorted(SUITES), help="case set (default: full on CUDA, cpu on a CPU)")
    parser.add_argument("--case", action="append", default=[], metavar="ID",
                        help="run only this case (repeatable); ids: " + ", ".join(
                            f"{name}: {' '.join(c.id for c in suite.cases)}" for name, suite in SUITES.items()))
    add_common_arguments(parser, warmup=3, steps=10)
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the trunk layers' geometry path and the head blocks "
                             "(G2VLM.compile_blocks; the joint cases' packed path stays eager)")
    parser.set_defaults(run=run_train)


def add_common_arguments(parser: argparse.ArgumentParser, warmup: int, steps: int) -> None:
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"untimed steps first (default {warmup})")
    parser.add_argument("--steps", type=int, default=steps, help=f"timed steps; the median is reported (default {steps})")
    parser.add_argument("--fp32-matmul-precision", choices=("highest", "high"), default="high",
                        help="torch.set_float32_matmul_precision for the fp32 heads and losses on CUDA "
                             "(high: TF32 tensor cores, the default; highest: true fp32)")
    parser.add_argument("--out", metavar="FILE.json", help="write the results and the environment as JSON")


@reports_value_errors
def run_train(args: argparse.Namespace) -> int:
    from g2vlm.benchmarks import report

    device = resolve_device(args.device, args.fp32_matmul_precision)
    check_counts(args.warmup, args.steps)
    suite = SUITES[args.suite or ("full" if device.type == "cuda" else "cpu")]
    cases = select_cases(suite, args.case)
    print(f"[bench] train: {len(cases)} cases on {report.describe_device(device)}", file=sys.stderr)
    settings = device_settings(device)
    records = run_suite(suite, cases, device, args.warmup, args.steps, args.compile, settings["peak_bf16_flops"])
    result = {"device": report.describe_device(device), **settings, "compile": args.compile,
              "warmup_steps": args.warmup, "timed_steps": args.steps, "cases": records}
    print(format_train_table(result))
    if args.out:
        path = report.write_json(args.out, "train", result, report.environment(device))
        print(f"[bench] results: {path}", file=sys.stderr)
    return 0


def resolve_device(name: str | None, fp32_matmul_precision: str):
    import torch

    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: CUDA is not available here")
        torch.set_float32_matmul_precision(fp32_matmul_precision)
    elif device.type != "cpu":
        raise ValueError(f"--device {name}: only cuda and cpu are supported")
    return device


def check_counts(warmup: int, steps: int) -> None:
    if warmup < 0 or steps < 1:
        raise ValueError(f"--warmup must be >= 0 and --steps >= 1 (got {warmup} and {steps})")


def select_cases(suite: Suite, ids: list[str]) -> list[GeometryCase | JointCase]:
    if not ids:
        return list(suite.cases)
    known = {case.id: case for case in suite.cases}
    unknown = [case_id for case_id in ids if case_id not in known]
    if unknown:
        raise ValueError(f"--case {unknown[0]}: not a case of this suite; choose from {', '.join(known)}")
    return [known[case_id] for case_id in ids]


H100_SXM_DENSE_BF16 = 989.4e12  # lightning's "h100 sxm" entry; the H200 has the same tensor cores


def peak_bf16_flops(device) -> tuple[int | None, str]:
    """(dense bf16 FLOP/s of the device, where the figure comes from); None on a CPU or an unknown GPU.

    lightning's `get_available_flops`, except for the H200: lightning has no entry for the plain name
    "NVIDIA H200", and its "h200 sxm1" entry (2,000 TFLOP/s) is the with-sparsity figure; the H200 has the
    H100 SXM's compute, whose dense bf16 peak is used."""
    import torch
    from lightning.fabric.utilities.throughput import get_available_flops

    if device.type != "cuda":
        return None, "none on a CPU"
    if "h200" in torch.cuda.get_device_name(device).lower():
        return int(H100_SXM_DENSE_BF16), "H200: dense bf16 of the H100 SXM (lightning lists the sparse figure)"
    return get_available_flops(device, torch.bfloat16), "lightning get_available_flops(device, bfloat16)"


def device_settings(device) -> dict:
    """Peak bf16 FLOP/s of the device (None on a CPU or an unknown GPU) and the numeric settings of the step."""
    import torch

    cuda = device.type == "cuda"
    peak, source = peak_bf16_flops(device)
    return {"peak_bf16_flops": peak, "peak_bf16_flops_source": source,
            "precision": "bf16 autocast (heads, geometry, losses fp32)" if cuda else "fp32",
            "fp32_matmul_precision": torch.get_float32_matmul_precision() if cuda else None,
            "optimizer": f"AdamW ({'fused' if cuda else 'foreach'})"}


# ------------------------------------------------------------------------------------------- measurement
class StepClock:
    """Seconds of the intervals between `start()` and `stop()`: CUDA events on CUDA (read after one
    synchronisation, in `seconds()`), the wall clock on a CPU."""

    def __init__(self, device) -> None:
        self.device = device
        self._events: list = []
        self._seconds: list[float] = []
        self._start: float | None = None

    def start(self) -> None:
        import torch

        if self.device.type == "cuda":
            self._events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
            self._events[-1][0].record()
        else:
            self._start = time.perf_counter()

    def stop(self) -> None:
        if self.device.type == "cuda":
            self._events[-1][1].record()
        else:
            self._seconds.append(time.perf_counter() - self._start)

    def seconds(self) -> list[float]:
        import torch

        if self.device.type != "cuda":
            return list(self._seconds)
        torch.cuda.synchronize(self.device)
        return [start.elapsed_time(end) / 1e3 for start, end in self._events]


class StepTimer:
    """Seconds per call of `fn` after `warmup` untimed calls (`StepClock`); on CUDA the peak-memory counter is reset
    before the timed calls."""

    def __init__(self, device) -> None:
        self.device = device

    def measure(self, fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
        for _ in range(warmup):
            fn()
        reset_peak_memory(self.device)
        clock = StepClock(self.device)
        for _ in range(repeats):
            clock.start()
            fn()
            clock.stop()
        return clock.seconds()


def reset_peak_memory(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device) -> tuple[float, str]:
    """(GiB, what it is): CUDA max allocated since the last reset, or the process's peak RSS on a CPU."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda max_memory_allocated during the timed steps"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process peak RSS so far (whole run)"


def free_memory(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.OutOfMemoryError)


def train_steps(module, batch, device, warmup: int, steps: int) -> list[float]:
    """Seconds of each of `steps` training steps after `warmup` untimed ones: a Lightning `Trainer` fits `module`
    on `batch` repeated — its own `training_step`, `configure_optimizers`, gradient-norm logging and clipping (norm
    1.0), bf16 mixed precision on CUDA — timed from `on_train_batch_start` to `on_train_batch_end`. No logger, no
    checkpoints, no validation."""
    import lightning as L

    class TimedSteps(L.Callback):
        def __init__(self) -> None:
            self.clock = StepClock(device)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == warmup:
                reset_peak_memory(device)
            if batch_idx >= warmup:
                self.clock.start()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx >= warmup:
                self.clock.stop()

    timer = TimedSteps()
    cuda = device.type == "cuda"
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)  # no "GPU available ..." banner per case
    try:
        with tempfile.TemporaryDirectory() as folder:
            trainer = L.Trainer(accelerator=device.type, devices=[device.index or 0] if cuda else 1,
                                precision="bf16-mixed" if cuda else "32-true", max_steps=warmup + steps,
                                gradient_clip_val=1.0, gradient_clip_algorithm="norm", limit_val_batches=0,
                                num_sanity_val_steps=0, log_every_n_steps=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                                default_root_dir=folder)
            trainer.fit(module, train_dataloaders=RepeatedBatch(batch, warmup + steps))
    finally:
        lightning_log.setLevel(level)
    return timer.clock.seconds()


class RepeatedBatch:
    """One batch `times` times: the training data of a timed run (no loading in the step)."""

    def __init__(self, batch, times: int) -> None:
        self.batch, self.times = batch, times

    def __iter__(self):
        return iter([self.batch] * self.times)

    def __len__(self) -> int:
        return self.times


def measure_with_halving(module, make_batch, batch_size: int, device, warmup: int, steps: int, describe,
                         record: dict) -> tuple[list[float] | None, object]:
    """(seconds per step, the batch) of the largest batch size from `batch_size` down by halves to 1 that fits in
    memory; the sizes that did not fit go to record["out_of_memory_at"]. (None, None) when not even 1 fits."""
    while True:
        describe(batch_size)
        try:
            batch = make_batch(batch_size)
            return train_steps(module, batch, device, warmup, steps), batch
        except Exception as error:  # noqa: BLE001 - only out-of-memory is handled, everything else re-raised
            if not is_out_of_memory(error):
                raise
            batch = None
            module.zero_grad(set_to_none=True)
            free_memory(device)
            record["out_of_memory_at"].append(batch_size)
            if batch_size == 1:
                return None, None
            batch_size //= 2


def run_suite(suite: Suite, cases, device, warmup: int, steps: int, compile_blocks: bool,
              peak_flops: int | None) -> list[dict]:
    """Run the cases (geometry cases share one GeometryPretraining module; joint cases one SpatialReasoning)."""
    records = []
    geometry = [case for case in cases if isinstance(case, GeometryCase)]
    joint = [case for case in cases if isinstance(case, JointCase)]
    if geometry:
        module = geometry_module(suite.geometry_preset, device, compile_blocks)
        for case in geometry:
            records.append(measure_geometry_case(module, suite, case, device, warmup, steps, peak_flops))
        del module
        free_memory(device)
    if joint:
        with tempfile.TemporaryDirectory() as folder:
            module = joint_module(suite.joint_preset, device, compile_blocks, folder)
            for case in joint:
                records.append(measure_joint_case(module, suite, case, device, warmup, steps, peak_flops))
        del module
        free_memory(device)
    return records


def _timing_record(seconds: list[float], device, flops: int, tokens: int, images: int, peak_flops: int | None) -> dict:
    step_s = statistics.median(seconds)
    memory_gib, memory_kind = peak_memory(device)
    achieved = flops / step_s
    return {"status": "ok", "step_s": step_s, "step_s_all": seconds, "tokens_per_s": tokens / step_s,
            "images_per_s": images / step_s, "flops_per_step": flops, "achieved_tflops": achieved / 1e12,
            "mfu": achieved / peak_flops if peak_flops else None, "peak_memory_gib": memory_gib,
            "peak_memory_kind": memory_kind}


# ------------------------------------------------------------------------------------- geometry pretraining
def geometry_module(preset: str, device, compile_blocks: bool):
    """GeometryPretraining of `preset` with its defaults (official stage-1 freezing, loss and optimisation), built
    on `device`."""
    import torch

    from g2vlm.lit.geometry_pretraining import GeometryPretraining

    module = GeometryPretraining(preset=preset, compile=compile_blocks)
    with torch.device(device):
        module.configure_model()
    return module


def geometry_batch(batch_size: int, views: int, height: int, width: int, device, seed: int = 0):
    """A MultiViewBatch on `device`: random float images and a plausible ground truth (depth 1-5 m in float32
    metres, centred intrinsics, cameras on a line), of a dataset with the normal loss on."""
    import torch

    from g2vlm.datamodules.multiview.batch import MultiViewBatch

    generator = torch.Generator(device="cpu").manual_seed(seed)
    shape = (batch_size, views)
    K = torch.zeros(*shape, 3, 3)
    K[..., 0, 0] = K[..., 1, 1] = 0.8 * width
    K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = (width - 1) / 2, (height - 1) / 2, 1.0
    camera_to_world = torch.eye(4).repeat(*shape, 1, 1)
    camera_to_world[..., 0, 3] = torch.linspace(0, 0.5, views)
    batch = MultiViewBatch(
        images=torch.rand(*shape, 3, height, width, generator=generator),
        depth=1 + 4 * torch.rand(*shape, height, width, generator=generator),
        depth_scale=torch.ones(batch_size), K=K, camera_to_world=camera_to_world,
        has_depth=torch.ones(batch_size, dtype=torch.bool), dataset_names=["scannet"] * batch_size,
        keys=[f"bench-{index}" for index in range(batch_size)], frame_ids=[list(range(views))] * batch_size)
    return batch.to(device)


def geometry_batch_size(budget: int, views: int, height: int, width: int, patch: int) -> int:
    """Clips per step: ⌊budget / trunk tokens per clip⌋, at least 1."""
    return max(1, budget // (views * (height // patch) * (width // patch)))


def measure_geometry_case(module, suite: Suite, case: GeometryCase, device, warmup: int, steps: int,
                          peak_flops: int | None) -> dict:
    patch = module.model.config.dino.patch_size
    module.model.set_gradient_checkpointing(case.checkpointing)
    record = {"id": case.id, "kind": "geometry", "preset": suite.geometry_preset, "height": case.height,
              "width": case.width, "views": case.views, "checkpointing": case.checkpointing, "out_of_memory_at": []}

    def describe(batch_size: int) -> None:
        tokens = batch_size * case.views * (case.height // patch) * (case.width // patch)
        record.update(batch_size=batch_size, tokens_per_step=tokens, images_per_step=batch_size * case.views)
        print(f"[bench] {case.id}: batch {batch_size} × {case.views} views, {tokens} tokens", file=sys.stderr)

    def make_batch(batch_size: int):
        batch = geometry_batch(batch_size, case.views, case.height, case.width, device)
        module.measure_flops_per_batch(tuple(batch.images.shape))  # counted (and cached) before the timed steps
        return batch

    seconds, batch = measure_with_halving(
        module, make_batch, geometry_batch_size(suite.geometry_token_budget, case.views, case.height, case.width, patch),
        device, warmup, steps, describe, record)
    if seconds is None:
        record["status"] = "out of memory"
        return record
    flops = module.measure_flops_per_batch(tuple(batch.images.shape))
    record.update(_timing_record(seconds, device, flops, record["tokens_per_step"], record["images_per_step"],
                                 peak_flops))
    return record


# ------------------------------------------------------------------------------------------ joint training
def joint_module(preset: str, device, compile_blocks: bool, folder: str):
    """SpatialReasoning of `preset`, variant ce_ce with the official joint freezing (JOINT_FREEZE), flex attention
    on CUDA, built on `device`; its tokenizer a character one written to `folder` (joint samples hold random ids)."""
    import torch

    from g2vlm.datamodules.qa.tokenizer import build_character_tokenizer
    from g2vlm.lit.spatial_reasoning import SpatialReasoning

    build_character_tokenizer(folder)
    backend = "flex" if device.type == "cuda" else "sdpa"
    module = SpatialReasoning(folder, preset=preset, model_overrides={"attention_backend": backend}, variant="ce_ce")
    if not module.model_config.vit:
        raise ValueError(f"joint training needs a preset with a vision tower, not {preset!r}")
    with torch.device(device):
        module.configure_model()
    if compile_blocks:
        module.model.compile_blocks()
    return module


def joint_samples(config, suite: Suite, tokens: int, seed: int = 0) -> list:
    """QA samples whose packed length is exactly `tokens`: each has `images_per_sample` images (a Qwen-ViT copy and
    a DINO frame each, as the official joint data) and `text_tokens` of text (a prompt, then a supervised answer);
    the last sample takes the images that still fit and text for the remainder."""
    import torch

    from g2vlm.datamodules.qa.batch import GeometryPart, ImagePart, QASample, TextPart

    generator = torch.Generator().manual_seed(seed)
    vit_grid = suite.vit_size // (config.vit.patch_size * config.vit.spatial_merge_size)
    dino_grid = suite.geometry_size // config.dino.patch_size
    per_image = vit_grid**2 + dino_grid**2
    samples, left = [], tokens
    while left > 0:
        images = min(suite.images_per_sample, max(0, (left - suite.text_tokens) // per_image))
        text = left - images * per_image  # the last sample takes the remainder as text ...
        if text - suite.text_tokens >= per_image + suite.text_tokens:  # ... unless another sample with an image fits
            text = suite.text_tokens
        answer = max(1, min(16, text // 4))
        ids = torch.randint(0, config.vocab_size, (text,), generator=generator)
        parts = [TextPart(ids[: text - answer])] if text > answer else []
        parts += [ImagePart(torch.rand(3, suite.vit_size, suite.vit_size, generator=generator)) for _ in range(images)]
        if images:
            parts.append(GeometryPart(torch.rand(images, 3, suite.geometry_size, suite.geometry_size,
                                                 generator=generator)))
        parts.append(TextPart(ids[text - answer:], supervised=True))
        samples.append(QASample(key=f"bench-{len(samples)}", task="bench", answer_type="free_form", parts=parts,
                                prompt_parts=len(parts) - 1, answer="", num_tokens=images * per_image + text))
        left -= images * per_image + text
    return samples


def measure_joint_case(module, suite: Suite, case: JointCase, device, warmup: int, steps: int,
                       peak_flops: int | None) -> dict:
    from lightning.fabric.utilities.apply_func import move_data_to_device

    from g2vlm.datamodules.qa.batch import QABatch
    from g2vlm.lit.spatial_reasoning import to_segments
    from g2vlm.model.packing import pack

    config = module.model_config
    samples = joint_samples(config, suite, case.tokens)
    packed = pack([to_segments(sample.parts) for sample in samples], config)
    images = sum(len(frames) for frames in packed.geometry_frames) + \
        (0 if packed.vit_grid_thw is None else packed.vit_grid_thw.shape[0])
    record = {"id": case.id, "kind": "joint", "preset": suite.joint_preset, "checkpointing": case.checkpointing,
              "samples": len(samples), "tokens_per_step": packed.num_tokens, "images_per_step": images,
              "answer_tokens": int((packed.text_labels != -100).sum()), "attention_backend": config.attention_backend,
              "trainable": "semantic + geometric experts, embeddings, projector (frozen: " + ", ".join(JOINT_FREEZE)
              + ")", "out_of_memory_at": []}
    print(f"[bench] {case.id}: {len(samples)} samples, {packed.num_tokens} tokens", file=sys.stderr)
    module.model.set_gradient_checkpointing(case.checkpointing)
    try:
        seconds = train_steps(module, move_data_to_device(QABatch(samples), device), device, warmup, steps)
    except Exception as error:  # noqa: BLE001 - only out-of-memory is handled
        if not is_out_of_memory(error):
            raise
        module.zero_grad(set_to_none=True)
        free_memory(device)
        record.update(status="out of memory")
        return record
    flops = joint_flops(config, [to_segments(sample.parts) for sample in samples])
    record.update(_timing_record(seconds, device, flops, packed.num_tokens, images, peak_flops))
    return record


class _VisionTowerStandIn:
    """Stands in for the frozen vision tower during FLOP counting on the meta device (transformers' tower reads
    its grid sizes as Python numbers, which meta tensors do not have); its FLOPs are added by `vision_tower_flops`."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.num_tokens = 0

    def __call__(self, patches, grid_thw):
        return patches.new_zeros(self.num_tokens, self.width)


def joint_flops(config, samples: list[list]) -> int:
    """Forward + backward FLOPs of one joint step, counted per packed sample on a meta-device copy (attention is
    counted dense within a sample and not at all across samples), plus the frozen ViT's forward."""
    import torch
    from lightning.fabric.utilities.throughput import measure_flops

    from g2vlm.model.g2vlm import G2VLM
    from g2vlm.model.packing import pack

    counting_config = config.replace(attention_backend="sdpa")
    with torch.device("meta"):
        model = G2VLM(counting_config)
    model.freeze(*JOINT_FREEZE)
    tower = model.vision_tower
    stand_in = _VisionTowerStandIn(config.width)
    object.__setattr__(model, "vision_tower", stand_in)  # plain attribute: not a submodule of the copy
    total = 0
    for sample in samples:
        batch = pack([sample], counting_config)
        stand_in.num_tokens = batch.vit_index.numel()
        total += measure_flops(model, lambda batch=batch: model(batch), loss_fn=lambda out: out.logits.float().sum())
        if batch.vit_grid_thw is not None:
            total += vision_tower_flops(tower, batch.vit_grid_thw)
    return total


def vision_tower_flops(tower, grid_thw) -> int:
    """Forward FLOPs of the Qwen2-VL vision tower (frozen: no backward) for images of grid (t, h, w) patches:
    2·patches·(weights of the patch embedding and of every block's linear layers) + 4·patches²·width per block
    (attention within an image) + 2·merged tokens·(weights of the merger's linear layers)."""
    from torch import nn

    hf = tower.model
    block_weights = sum(m.weight.numel() for m in hf.blocks.modules() if isinstance(m, nn.Linear))
    merger_weights = sum(m.weight.numel() for m in hf.merger.modules() if isinstance(m, nn.Linear))
    embed_weights = hf.patch_embed.proj.weight.numel()
    width, depth, merge = tower.config.width, tower.config.depth, tower.config.spatial_merge_size
    total = 0
    for t, h, w in grid_thw.tolist():
        patches = t * h * w
        total += 2 * patches * (embed_weights + block_weights) + 4 * depth * patches * patches * width
        total += 2 * (patches // merge**2) * merger_weights
    return total


# ------------------------------------------------------------------------------------------------- report
def format_train_table(result: dict) -> str:
    from g2vlm.benchmarks import report

    columns = [("batch_size", "clips", "d"), ("tokens_per_step", "tokens", "d"), ("step_s", "step s", ".3f"),
               ("tokens_per_s", "tokens/s", ",.0f"), ("images_per_s", "images/s", ".1f"),
               ("achieved_tflops", "TFLOP/s", ".3g"), ("mfu_percent", "MFU %", ".1f"),
               ("peak_memory_gib", "peak GiB", ".2f")]
    rows = []
    for record in result["cases"]:
        values = {key: record.get(key) for key, _, _ in columns}
        values["mfu_percent"] = 100 * record["mfu"] if record.get("mfu") is not None else None
        if record["kind"] == "joint":
            values["batch_size"] = record["samples"]
        label = record["id"] + ("" if record["status"] == "ok" else f" ({record['status']})")
        rows.append((label, values))
    peak = result["peak_bf16_flops"]
    title = (f"training step on {result['device']}, {result['precision']}, {result['optimizer']}, compile "
             f"{'on' if result['compile'] else 'off'}; median of {result['timed_steps']} steps after "
             f"{result['warmup_steps']}; MFU vs bf16 peak " + (f"{peak / 1e12:.0f} TFLOP/s" if peak else "n/a")
             + " (clips column: samples for joint)")
    return report.format_table(title, columns, rows)
