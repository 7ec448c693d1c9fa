"""The two arguments every evaluation-dataset reader (`read_depth_dataset`, `read_pose_dataset`,
`read_pointmap_dataset`) takes: the dataset's name and the folder its prepared layout is in."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def known_name(name: str, names: tuple[str, ...], kind: str, aliases: Mapping[str, str] | None = None) -> str:
    """`name` lower-cased, an alias replaced by its dataset, checked against `names` (the `kind` benchmark's
    datasets, e.g. "depth"); ValueError naming the choices otherwise."""
    aliases = aliases or {}
    name = aliases.get(name.lower(), name.lower())
    if name not in names:
        alias_note = f" (aliases {', '.join(aliases)})" if aliases else ""
        raise ValueError(f"canonical_name: unknown {kind} dataset {name!r}; choose from {', '.join(names)}{alias_note}")
    return name


def prepared_root(benchmark: str, name: str, root: str | Path | None) -> Path | None:
    """The prepared folder of dataset `name` (canonical) of `g2vlm bench BENCHMARK`, checked to be a folder; None
    for the synthetic set, which is generated in memory and takes no root. Errors name read_BENCHMARK_dataset."""
    reader = f"read_{benchmark}_dataset"
    if name == "synthetic":
        if root is not None:
            raise ValueError(f"{reader}: the synthetic set is generated in memory and takes no --root")
        return None
    if root is None:
        raise ValueError(f"{reader}: {name} needs --root (its prepared folder; see `g2vlm bench {benchmark} --help`)")
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{reader}: {name} root {root} is not a folder")
    return root
