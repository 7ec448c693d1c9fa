"""`g2vlm import-weights`: build a starting checkpoint from local pretrained weights (no downloads).

The released G²VLM (an official checkpoint folder, e.g. InternRobotics/G2VLM-2B-MoT downloaded by hand):

    g2vlm import-weights --official /data/G2VLM-2B-MoT --out checkpoints/g2vlm-2b-official.safetensors

reads model.safetensors (or the shards of model.safetensors.index.json, or one .safetensors file) tensor by
tensor, maps every official key strictly (model/official_weights.py), takes the architecture from the folder's
text_config.json / vit_config.json / dino_config.json (else from --preset, default g2vlm-2b), and records the
official input format (model/official_format.py) with the prompt and delimiter ids of the folder's tokenizer (or
--tokenizer). The result is accepted by `g2vlm reconstruct`, `g2vlm bench ...`, `g2vlm ask` and as
`init_weights` of both LightningModules.

Starting points for our own training:

    g2vlm import-weights --preset g2vlm-2b --qwen2vl /data/Qwen2-VL-2B-Instruct \\
        --dinov2 /data/dinov2-with-registers-large --out checkpoints/start.safetensors

The semantic expert, embeddings, LM head and vision tower come from a local Hugging Face Qwen2-VL
folder; the geometric encoder from a Hugging Face `Dinov2WithRegisters` folder or a timm / original
DINOv2 checkpoint. The geometric expert, projector and heads keep their fresh initialisation (the
paper initialises the geometric expert randomly); the input format is the clean one.

The output is one safetensors file with the model config in its metadata (`g2vlm.model.weights.load_model`
reads it back strictly).
"""

from __future__ import annotations

import argparse

OFFICIAL_PROMPT = "Reconstruct the 3D scene."  # the official recon_for_eval prompt, after <|im_start|>


def add_to(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-weights",
        help="import the released G²VLM checkpoint, or build a starting checkpoint from Qwen2-VL and DINOv2",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--official", metavar="DIR_OR_FILE",
                        help="an official G²VLM checkpoint: its folder (model.safetensors[.index.json], config files, "
                             "tokenizer) or one .safetensors file")
    parser.add_argument("--tokenizer", metavar="DIR",
                        help="with --official: the Qwen2 tokenizer folder (default: the --official folder)")
    parser.add_argument("--preset", default=None,
                        help="model preset (tiny | small | g2vlm-2b; default g2vlm-2b); with --official only when the "
                             "checkpoint has no text_config.json / vit_config.json / dino_config.json beside it")
    parser.add_argument("--qwen2vl", help="local Hugging Face Qwen2-VL folder (config.json + safetensors)")
    parser.add_argument("--dinov2", help="Hugging Face Dinov2WithRegisters folder, or a timm/DINOv2 checkpoint file")
    parser.add_argument("--semantic-qk-norm", choices=("on", "off"), default="on",
                        help="QK-norm in the semantic expert (official G²VLM: on; stock Qwen2-VL behaviour: off)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the freshly initialised parts")
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.set_defaults(run=run)


def official_input_from_tokenizer(folder):
    """The official input format's token ids from a local Qwen2 tokenizer folder: `<|im_start|>` and the
    prompt's tokens (no special tokens added: Qwen2's tokenizer adds none), `<|vision_start|>`, `<|vision_end|>`."""
    from g2vlm.datamodules.qa.tokenizer import ChatTokens, load_tokenizer
    from g2vlm.model.config import OfficialInputConfig

    tokenizer = load_tokenizer(folder)
    chat = ChatTokens.of(tokenizer, str(folder))
    prompt = list(tokenizer(OFFICIAL_PROMPT, add_special_tokens=False)["input_ids"])
    return OfficialInputConfig(prompt_ids=(chat.im_start, *prompt), vision_start_id=chat.vision_start,
                               vision_end_id=chat.vision_end)


def run(args: argparse.Namespace) -> int:
    if args.official:
        if args.qwen2vl or args.dinov2:
            print("g2vlm import-weights: --official imports a whole model; do not combine it with --qwen2vl/--dinov2")
            return 2
        return _run_official(args)
    if not args.qwen2vl and not args.dinov2:
        print("g2vlm import-weights: give --official, or --qwen2vl and/or --dinov2")
        return 2
    return _run_parts(args)


def _run_official(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from g2vlm.model.official_weights import import_official
    from g2vlm.model.weights import WeightLoadingError

    source = Path(args.official)
    tokenizer = Path(args.tokenizer) if args.tokenizer else (source if source.is_dir() else source.parent)
    try:
        official_input = official_input_from_tokenizer(tokenizer)
    except (ValueError, OSError) as error:
        print(f"g2vlm import-weights: error: the official input format needs the Qwen2 tokenizer ({error}); give "
              f"--tokenizer DIR", file=sys.stderr)
        return 2
    try:
        summary = import_official(source, args.out, official_input, args.preset, tokenizer)
    except (WeightLoadingError, ValueError, FileNotFoundError, KeyError) as error:
        print(f"g2vlm import-weights: error: {error}", file=sys.stderr)
        return 2
    print(f"official G²VLM: {summary.source_keys} checkpoint tensors -> {summary.tensors} tensors of ours; "
          f"architecture from {summary.config_source}")
    for key, pattern in sorted(summary.dropped.items()):
        print(f"  dropped (allow-list {pattern!r}): {key}")
    heads = summary.config.geometry_heads
    print(f"confidence head: {'on (the checkpoint has conf_decoder/conf_head)' if heads.confidence else 'off'}")
    print(f"input format: official (prompt ids {list(official_input.prompt_ids)}, <|vision_start|> "
          f"{official_input.vision_start_id}, <|vision_end|> {official_input.vision_end_id}, DINO windows "
          f"{official_input.dino_windows})")
    print(f"wrote {args.out}")
    return 0


def _run_parts(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from g2vlm.model.config import model_config
    from g2vlm.model.g2vlm import G2VLM
    from g2vlm.model.weights import load_dino, load_qwen2vl, save_model

    torch.manual_seed(args.seed)
    model = G2VLM(model_config(args.preset or "g2vlm-2b", semantic_qk_norm=args.semantic_qk_norm == "on"))
    if args.qwen2vl:
        allowed = load_qwen2vl(model, args.qwen2vl)
        print(f"Qwen2-VL: loaded from {args.qwen2vl}; kept at initialisation (allow-list): {len(allowed)} key(s)")
        if allowed:
            print("note: the semantic QK-norm weights start at 1, which is not the identity; the semantic expert will "
                  "not reproduce stock Qwen2-VL until trained (--semantic-qk-norm off keeps stock behaviour)")
    if args.dinov2:
        load_dino(model, args.dinov2)
        print(f"DINOv2: loaded from {args.dinov2}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, out)
    print(model.summary())
    print(f"wrote {out}")
    return 0
