"""`g2vlm ask`: answer a question about one or more images with a SpatialReasoning checkpoint.

    g2vlm ask --ckpt runs/reasoning-demo/checkpoints/last.ckpt --images a.jpg b.jpg \\
        --question "Which object is closer to the camera? A. the red box B. the blue sphere"

The images go through the checkpoint's chat template (both copies: geometric expert and ViT, at the sizes its
QADataModule used), the answer is generated with the KV cache (greedy by default; --temperature/--top-k/--seed
sample) until `<|im_end|>`, and printed alone on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_to(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ask", help="answer a question about images with a SpatialReasoning checkpoint",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="SpatialReasoning checkpoint (read as tensors only, "
                                                       "torch.load weights_only=True: runs no code from it)")
    parser.add_argument("--images", nargs="+", required=True, help="image files (JPEG, PNG, ...), in order")
    parser.add_argument("--question", required=True, help="the question")
    parser.add_argument("--tokenizer", help="tokenizer folder (default: the one the checkpoint records)")
    parser.add_argument("--max-new-tokens", type=int, default=100, help="answer length limit (default 100)")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--no-reconstruct", action="store_true",
                        help="do not feed the images to the geometric expert (plain VQA template)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        print(ask(args))
    except (ValueError, FileNotFoundError) as error:
        print(f"g2vlm ask: error: {error}", file=sys.stderr)
        return 2
    return 0


def ask(args: argparse.Namespace) -> str:
    import torch

    from g2vlm.datamodules.qa.schema import QA_SUFFIX, QARecord, QASampleRecord
    from g2vlm.datamodules.shards.schema import SampleError, frame_member
    from g2vlm.inference import load_reasoning_checkpoint, template_for
    from g2vlm.lit.spatial_reasoning import to_segments
    from g2vlm.model.generation import generate

    members = {}
    for index, image in enumerate(args.images):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such image")
        members[frame_member(index, "jpg")] = path.read_bytes()
    record = QARecord("ask", "ask", "ask", "free_form", [(args.question, "")], len(args.images),
                      reconstruct=not args.no_reconstruct)
    members[QA_SUFFIX] = json.dumps(record.to_json()).encode()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    module, checkpoint = load_reasoning_checkpoint(args.ckpt, device, args.tokenizer)
    try:
        sample = template_for(module, checkpoint).build(QASampleRecord("ask", "", record, None, members))
    except SampleError as error:
        raise ValueError(str(error)) from None
    generator = torch.Generator().manual_seed(args.seed)
    tokens = generate(module.model, to_segments(sample.prompt), module.chat_tokens.im_end, args.max_new_tokens,
                      args.temperature, args.top_k, generator)
    return module.tokenizer.decode(tokens, skip_special_tokens=True).strip()
