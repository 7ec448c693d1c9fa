"""What a benchmark run leaves behind: a table beside the published numbers, and JSON with the environment."""

from __future__ import annotations

import datetime
import json
import math
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("g2vlm", "torch", "lightning", "numpy", "pillow", "timm", "transformers", "opencv-python-headless")


def environment(device: str | torch.device | None) -> dict:
    """Versions, device, UTC date, the command line and the git commit of the source tree (when known)."""
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "versions": versions,
        "device": describe_device(device),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["g2vlm", *sys.argv[1:]]) if Path(sys.argv[0]).name == "g2vlm" else shlex.join(sys.argv),
        "git_commit": _git_commit(),
    }


def describe_device(device: str | torch.device | None) -> str:
    if device is None:
        return "none (saved predictions)"
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], check=False, cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def write_json(path: str | Path, section: str, results: dict, env: dict) -> Path:
    """{section: results, "env": env} to `path` (NaN becomes null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite({section: results, "env": env}), indent=2) + "\n")
    return path


def _finite(value):
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_table(title: str, columns: list[tuple[str, str, str]], rows: list[tuple[str, dict]]) -> str:
    """columns: (metric key, header, format spec); rows: (label, metrics). Missing metrics print as —."""
    label_width = max(len(label) for label, _ in rows) + 2
    widths = [max(len(header), 9) + 2 for _, header, _ in columns]
    lines = [title, f"{'':<{label_width}}" + "".join(f"{header:>{w}}" for (_, header, _), w in zip(columns, widths))]
    for label, metrics in rows:
        cells = []
        for (key, _, spec), width in zip(columns, widths):
            value = metrics.get(key)
            cells.append(f"{'—' if value is None or not math.isfinite(value) else format(value, spec):>{width}}")
        lines.append(f"{label:<{label_width}}" + "".join(cells))
    return "\n".join(lines)


def published_rows(published: dict[str, dict[str, float]] | None, source: str) -> list[tuple[str, dict]]:
    return [(f"{model} ({source})", metrics) for model, metrics in (published or {}).items()]
