"""Checks that an output path can be written, made before a command spends minutes computing what goes there."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def check_writable_folder(path: str | Path, option: str = "--out", given: str | Path | None = None) -> Path:
    """Check that folder `path` exists and takes new files, or that its nearest existing ancestor is a folder that
    does (nothing is left behind); ValueError naming `option`, the path given (default `path`) and the reason."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{option} {given or path}: cannot write there ({existing} is not a folder)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ValueError(f"{option} {given or path}: cannot write there ({error.strerror or error})") from None
    return path


def check_writable_file(path: str | Path, option: str = "--out") -> Path:
    """Check that file `path` can be written (its folder created if needed; an existing file is left as it is);
    ValueError naming `option` and the reason otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a folder, not a file")
    check_writable_folder(path.parent, option, given=path)
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{option} {path}: the file exists and cannot be written")
    return path
