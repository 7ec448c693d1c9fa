"""`g2vlm import-weights`: build a starting checkpoint from local pretrained weights (no downloads).

    g2vlm import-weights --preset g2vlm-2b --qwen2vl /data/Qwen2-VL-2B-Instruct \
        --dinov2 /data/dinov2-with-registers-large --out checkpoints/start.safetensors

The semantic expert, embeddings, LM head and vision tower come from a local Hugging Face Qwen2-VL
folder; the geometric encoder from a Hugging Face `Dinov2WithRegisters` folder or a timm / original
DINOv2 checkpoint. The geometric expert, projector and heads keep their fresh initialisation (the
paper initialises the geometric expert randomly). The output is one safetensors file with the model
config in its metadata (`g2vlm.model.weights.load_model` reads it back strictly).
"""

from __future__ import annotations

import argparse


def add_to(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-weights",
        help="build a starting checkpoint from local Qwen2-VL and DINOv2 weights",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", default="g2vlm-2b", help="model preset (tiny | small | g2vlm-2b)")
    parser.add_argument("--qwen2vl", help="local Hugging Face Qwen2-VL folder (config.json + safetensors)")
    parser.add_argument("--dinov2", help="Hugging Face Dinov2WithRegisters folder, or a timm/DINOv2 checkpoint file")
    parser.add_argument("--semantic-qk-norm", choices=("on", "off"), default="on",
                        help="QK-norm in the semantic expert (official G²VLM: on; stock Qwen2-VL behaviour: off)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the freshly initialised parts")
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from g2vlm.model.config import model_config
    from g2vlm.model.g2vlm import G2VLM
    from g2vlm.model.weights import load_dino, load_qwen2vl, save_model

    if not args.qwen2vl and not args.dinov2:
        print("g2vlm import-weights: give --qwen2vl and/or --dinov2")
        return 2
    torch.manual_seed(args.seed)
    model = G2VLM(model_config(args.preset, semantic_qk_norm=args.semantic_qk_norm == "on"))
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
