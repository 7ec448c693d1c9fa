"""`g2vlm consolidate CKPT_DIR [--out FILE] [--overwrite]`: a sharded checkpoint folder, as FSDP2 training writes it
(torch.distributed.checkpoint shards plus Lightning's `meta.pt`), -> one portable Lightning checkpoint file.

The file holds `state_dict` (whole tensors), `optimizer_states` (AdamW moments keyed by parameter name, as
torch.distributed.checkpoint writes them) and everything else the run saved (loops, callbacks, LR schedulers,
hyper-parameters). It loads on the CPU in one process, with `LightningModule.load_from_checkpoint` or as
`init_weights` of a new stage. To resume sharded training at another world size, pass the folder itself to
`--ckpt_path`: it reshards on load. The whole model is held in CPU memory while converting. A link (e.g.
`last.ckpt`) is followed. An existing output file is kept unless `--overwrite` is given.

Reading a checkpoint runs none of its code: the folder's `.metadata` (a pickle) is read with an unpickler that
accepts only the classes torch.distributed.checkpoint metadata is made of; the non-tensor entries (optimizer
hyper-parameters) and `meta.pt` are read with `torch.load(weights_only=True)`. Anything else is refused, naming
the file and what it asked for.
"""

from __future__ import annotations

import argparse
import io
import sys
import warnings
from pathlib import Path
from typing import Any

from g2vlm.safe_load import (
    LIGHTNING_META_FILE,
    METADATA_FILE,
    CheckpointError,
    load_checkpoint_file,
    read_dcp_metadata,
    torch_load_safely,
)


def _restricted_reader(folder: Path):
    """A FileSystemReader whose metadata comes through `g2vlm.safe_load.read_dcp_metadata` (tensor shards are read by DCP with
    `torch.load(weights_only=True)` already)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class RestrictedReader(FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            metadata = read_dcp_metadata(folder / METADATA_FILE)
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return RestrictedReader(folder)


def _weights_only_planner(folder: Path):
    """DCP's load planner with the non-tensor entries read by `torch.load(weights_only=True)`; a refused entry is
    kept in `refused` (DCP wraps what a planner raises)."""
    from torch.distributed.checkpoint import DefaultLoadPlanner

    class WeightsOnlyLoadPlanner(DefaultLoadPlanner):
        refused: CheckpointError | None = None

        def load_bytes(self, read_item, value: io.BytesIO) -> None:
            key = read_item.dest_index.fqn
            try:  # into the flat dict given to load
                self.original_state_dict[key] = torch_load_safely(value, f"{folder} (entry {key!r})", mmap=False)
            except CheckpointError as error:
                self.refused = error
                raise

    return WeightsOnlyLoadPlanner(flatten_state_dict=False, flatten_sharded_tensors=False)


def _set_nested(root: dict, path: tuple, value: Any) -> None:
    """root[path[0]][path[1]]... = value, creating dicts (str keys) and lists (int keys) on the way."""
    container: Any = root
    for key, next_key in zip(path[:-1], path[1:]):
        empty = [] if isinstance(next_key, int) else {}
        if isinstance(container, list):
            container.extend([None] * (key + 1 - len(container)))
            if container[key] is None:
                container[key] = empty
            container = container[key]
        else:
            container = container.setdefault(key, empty)
    if isinstance(container, list):
        container.extend([None] * (path[-1] + 1 - len(container)))
    container[path[-1]] = value


def load_sharded(folder: Path) -> dict[str, Any]:
    """A DCP folder -> its state as saved ({"state_dict": {...}, "optimizer_0": {...}, ...}), whole tensors on the
    CPU, read through the restricted readers."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = read_dcp_metadata(folder / METADATA_FILE)
    flat: dict[str, Any] = {}
    for key, entry in metadata.state_dict_metadata.items():
        if isinstance(entry, TensorStorageMetadata):
            flat[key] = torch.empty(entry.size, dtype=entry.properties.dtype)
        else:
            flat[key] = None  # a non-tensor entry: the planner puts the stored object here
    planner = _weights_only_planner(folder)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(flat, storage_reader=_restricted_reader(folder), planner=planner, no_dist=True)
    except CheckpointException:
        if planner.refused is not None:
            raise planner.refused from None
        raise
    paths = metadata.planner_data or {}
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        _set_nested(nested, tuple(paths.get(key, (key,))), value)
    return nested


def consolidate(folder: Path, out: Path) -> Path:
    """Write the Lightning checkpoint of sharded `folder` to `out` (written beside it, then renamed into place)."""
    import torch

    state = load_sharded(folder)
    checkpoint = load_checkpoint_file(folder / LIGHTNING_META_FILE)
    if "state_dict" not in state:
        raise ValueError(f"{folder}: the shards hold no `state_dict` entry (keys {sorted(state)}); "
                         "not a checkpoint of Lightning training")
    checkpoint["state_dict"] = state.pop("state_dict")
    optimizers = sorted((key for key in state if key.startswith("optimizer_")), key=lambda k: int(k.split("_")[1]))
    checkpoint["optimizer_states"] = [state.pop(key) for key in optimizers]
    checkpoint.update(state)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    torch.save(checkpoint, partial)
    partial.replace(out)
    return out


def add_to(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("consolidate", help="sharded checkpoint folder -> one portable checkpoint file",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="sharded checkpoint folder (e.g. runs/<exp>/checkpoints/last.ckpt)")
    parser.add_argument("--out", help="output file (default: <folder name>.consolidated.ckpt beside the folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    given = Path(args.checkpoint)
    folder = given.resolve()
    if not folder.exists():
        print(f"g2vlm consolidate: {given} does not exist", file=sys.stderr)
        return 2
    if not folder.is_dir():
        print(f"g2vlm consolidate: {given} is a single file already (nothing to consolidate)", file=sys.stderr)
        return 2
    for name, what in ((METADATA_FILE, "torch.distributed.checkpoint"), (LIGHTNING_META_FILE, "Lightning sharded")):
        if not (folder / name).is_file():
            print(f"g2vlm consolidate: {given} has no {name}: not a {what} checkpoint folder", file=sys.stderr)
            return 2
    out = Path(args.out) if args.out else folder.with_name(folder.name.removesuffix(".ckpt") + ".consolidated.ckpt")
    if out.exists() and not args.overwrite:
        print(f"g2vlm consolidate: {out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        consolidate(folder, out)
    except ValueError as error:  # CheckpointError (g2vlm.safe_load) included
        print(f"g2vlm consolidate: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) from {given}")
    return 0
