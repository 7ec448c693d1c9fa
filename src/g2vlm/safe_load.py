"""Reading checkpoints without running code from them: every entry point that takes a checkpoint loads it here.

A PyTorch checkpoint is a pickle, and unpickling can call any Python function the file names, so a checkpoint
from a stranger can run code on this machine. Our checkpoints hold only tensors and plain containers (dict,
list, str, numbers), so:

- a checkpoint file is read with `torch.load(weights_only=True)` (`load_checkpoint_file`): an unpickler that
  builds tensors and plain containers and refuses every other class the file names. A refused file raises
  `UnsafeCheckpointError` naming the file and what it asked for; a file that is not a checkpoint at all (text,
  truncated, another format) raises `CheckpointError`;
- a sharded checkpoint folder (torch.distributed.checkpoint, as FSDP training writes it) is checked by
  `check_sharded_folder` before anything else reads it: its `.metadata` (a plain pickle by design) through an
  unpickler that accepts only the classes DCP metadata is made of (`DCP_METADATA_CLASSES`), its non-tensor
  entries and Lightning's `meta.pt` with `weights_only=True`. DCP reads the tensor shards with
  `weights_only=True` itself. After this check the folder's pickles hold only allowed classes, so loading it
  with DCP's own reader runs no code from it.

Both errors are `ValueError`s, so the command-line tools print them as one line and exit with status 2.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any

METADATA_FILE = ".metadata"  # torch.distributed.checkpoint's index of the shards (a pickle)
LIGHTNING_META_FILE = "meta.pt"  # Lightning's sharded checkpoints: everything but module and optimizer tensors

# (module, name) of every class a torch.distributed.checkpoint `.metadata` pickle is made of (torch 2.4 - 2.15);
# torch dtypes (`torch.float32`, ...) are accepted besides.
DCP_METADATA_CLASSES = frozenset({
    ("torch.distributed.checkpoint.metadata", "Metadata"),
    ("torch.distributed.checkpoint.metadata", "StorageMeta"),
    ("torch.distributed.checkpoint.metadata", "MetadataIndex"),
    ("torch.distributed.checkpoint.metadata", "TensorStorageMetadata"),
    ("torch.distributed.checkpoint.metadata", "BytesStorageMetadata"),
    ("torch.distributed.checkpoint.metadata", "ChunkStorageMetadata"),
    ("torch.distributed.checkpoint.metadata", "TensorProperties"),
    ("torch.distributed.checkpoint.metadata", "_MEM_FORMAT_ENCODING"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib._local", "PosixPath"),
    ("collections", "OrderedDict"),
})

_GLOBAL_IN_MESSAGE = re.compile(r"unsupported (?:global: )?GLOBAL (\S+)", flags=re.IGNORECASE)  # both of torch's texts
_UNPICKLER_DETAIL = re.compile(r"WeightsUnpickler error: ([^\n]+)")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or of the wrong kind (the message names the file)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickle asks for a class or function the safe readers do not load."""


WEIGHTS_ONLY = "the tensors and plain containers a checkpoint needs (torch.load weights_only=True)"
DCP_METADATA = "the classes torch.distributed.checkpoint metadata is made of"


def refusal(path: str | Path, asked_for: str, allowed: str = WEIGHTS_ONLY) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(f"{path}: refused to load: its pickle asks for `{asked_for}`, which is not among "
                                 f"{allowed}; loading it could run code from the file (README: 'Trust and safety')")


def torch_load_safely(source, path: str | Path, mmap: bool) -> Any:
    """torch.load(weights_only=True) with its failures turned into CheckpointError / UnsafeCheckpointError."""
    import torch

    try:
        return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        asked_for = _GLOBAL_IN_MESSAGE.search(str(error))
        if asked_for:
            raise refusal(path, asked_for.group(1)) from None
        detail = _UNPICKLER_DETAIL.search(str(error))  # torch's own text advises weights_only=False: leave it out
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: truncated, corrupt or another format "
                              f"({detail.group(1) if detail else 'the pickle does not decode'})") from None
    except Exception as error:  # noqa: BLE001 - a truncated zip, a text file, another format: all "not readable"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: truncated, corrupt or another format "
                              f"({type(error).__name__}: {_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def load_checkpoint_file(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint file -> its dictionary, read with torch.load(weights_only=True) on the CPU (tensors
    memory-mapped when `mmap`). Raises CheckpointError (missing, a folder, unreadable, not a dict) or
    UnsafeCheckpointError (its pickle asks for anything but tensors and plain containers)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder (a sharded checkpoint?), not a checkpoint file; "
                              f"`g2vlm consolidate {path}` turns a sharded checkpoint into one file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        record = torch_load_safely(path, path, mmap)
    except CheckpointError as error:
        if not mmap or "mmap" not in str(error):
            raise
        record = torch_load_safely(path, path, mmap=False)  # an old (pre-zip) file cannot be memory-mapped
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: holds a {type(record).__name__}, not a checkpoint dictionary")
    return record


class _DCPMetadataUnpickler(pickle.Unpickler):
    """An unpickler that builds only the classes of DCP metadata (and torch dtypes)."""

    def __init__(self, file, path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        import torch

        if (module, name) in DCP_METADATA_CLASSES or (
                module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise refusal(self.path, f"{module}.{name}", DCP_METADATA)


def read_dcp_metadata(path: str | Path):
    """A torch.distributed.checkpoint `.metadata` file -> its `Metadata`, through the restricted unpickler.
    Raises UnsafeCheckpointError for any class outside DCP_METADATA_CLASSES, CheckpointError if unreadable."""
    from torch.distributed.checkpoint.metadata import Metadata

    path = Path(path)
    try:
        with open(path, "rb") as file:
            metadata = _DCPMetadataUnpickler(file, path).load()
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - any other failure: not DCP metadata
        raise CheckpointError(f"{path}: not readable as torch.distributed.checkpoint metadata "
                              f"({type(error).__name__}: {_first_line(error)})") from None
    if not isinstance(metadata, Metadata):
        raise CheckpointError(f"{path}: holds a {type(metadata).__name__}, not torch.distributed.checkpoint Metadata")
    return metadata


def check_sharded_folder(folder: str | Path) -> dict[str, Any]:
    """Check every pickle of a sharded (torch.distributed.checkpoint) checkpoint folder without running code from
    it: `.metadata` through the restricted unpickler, each non-tensor entry and `meta.pt` with weights_only=True.
    Returns the `meta.pt` record (hyper-parameters, loops, ...; {} when the folder has none)."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    folder = Path(folder)
    if not (folder / METADATA_FILE).is_file():
        raise CheckpointError(f"{folder}: a folder without {METADATA_FILE}: not a sharded "
                              "(torch.distributed.checkpoint) checkpoint")
    metadata = read_dcp_metadata(folder / METADATA_FILE)
    for index, stored in (metadata.storage_data or {}).items():
        if not isinstance(metadata.state_dict_metadata.get(index.fqn), BytesStorageMetadata):
            continue  # a tensor shard: DCP reads those with weights_only=True
        if getattr(stored, "transform_descriptors", None):
            raise CheckpointError(f"{folder}: entry {index.fqn!r} is stored with transforms "
                                  f"{list(stored.transform_descriptors)}, which this check does not read")
        data_file = folder / stored.relative_path
        try:
            with open(data_file, "rb") as file:
                file.seek(stored.offset)
                data = file.read(stored.length)
        except OSError as error:
            raise CheckpointError(f"{data_file}: cannot read entry {index.fqn!r} ({error})") from None
        torch_load_safely(io.BytesIO(data), f"{data_file} (entry {index.fqn!r})", mmap=False)
    meta_file = folder / LIGHTNING_META_FILE
    return load_checkpoint_file(meta_file) if meta_file.is_file() else {}


def load_checkpoint_record(path: str | Path) -> dict[str, Any]:
    """The checkpoint dictionary of a file (tensors memory-mapped), or of a sharded folder the `meta.pt` record
    after `check_sharded_folder`. Raises CheckpointError / UnsafeCheckpointError."""
    path = Path(path)
    return check_sharded_folder(path) if path.is_dir() else load_checkpoint_file(path, mmap=True)
