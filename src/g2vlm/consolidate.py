"""`g2vlm consolidate CKPT_DIR [--out FILE]`: a sharded (FSDP, torch.distributed.checkpoint) checkpoint
folder -> one portable file.

The file is an ordinary Lightning checkpoint (`state_dict`, `optimizer_states`, loops, callbacks, ...) that
loads on the CPU, with `LightningModule.load_from_checkpoint`, as `init_weights` of a new stage, or as
`--ckpt_path` of a run with a different world size. The whole model is held in CPU memory while converting.
`last.ckpt` may be a link to a folder; it is followed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_to(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("consolidate", help="sharded checkpoint folder -> one portable checkpoint file",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="sharded checkpoint folder (e.g. runs/<exp>/checkpoints/last.ckpt)")
    parser.add_argument("--out", help="output file (default: <folder name>.consolidated.ckpt beside it)")
    parser.set_defaults(run=run)


def consolidate(folder: Path, out: Path) -> Path:
    import torch
    from lightning.fabric.utilities.load import _load_distributed_checkpoint
    from lightning.pytorch.utilities.consolidate_checkpoint import _format_checkpoint

    checkpoint = _format_checkpoint(_load_distributed_checkpoint(folder))
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, out)
    return out


def run(args: argparse.Namespace) -> int:
    given = Path(args.checkpoint)
    folder = given.resolve()
    if not folder.exists():
        print(f"g2vlm consolidate: {given} does not exist", file=sys.stderr)
        return 2
    if not folder.is_dir():
        print(f"g2vlm consolidate: {given} is a single file already (nothing to consolidate)", file=sys.stderr)
        return 2
    if not (folder / ".metadata").is_file():
        print(f"g2vlm consolidate: {given} has no .metadata: not a torch.distributed.checkpoint folder", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else folder.with_name(folder.name.removesuffix(".ckpt") + ".consolidated.ckpt")
    consolidate(folder, out)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) from {given}")
    return 0
