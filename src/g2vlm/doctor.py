"""`g2vlm doctor`: check that the environment can run the suite.

Checks that every library the suite needs imports, that torch and torchvision are a matching pair
(timm imports torchvision unconditionally; a CPU-only torch beside a CUDA torchvision fails with
`operator torchvision::nms does not exist`), and that the `lightning` command is the suite's own.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path

REQUIRED_MODULES = (
    "torch", "torchvision", "timm", "kornia", "transformers", "lightning",
    "torchmetrics", "jsonargparse", "webdataset", "tensorboard", "safetensors",
)
OUR_LIGHTNING_ENTRY = "g2vlm.cli:main"


def add_to(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("doctor", help="check the environment: versions, imports, console scripts",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=run)


def check_imports() -> list[str]:
    problems = []
    for name in REQUIRED_MODULES:
        try:
            module = importlib.import_module(name)
            print(f"  {name:<14} {getattr(module, '__version__', '?')}")
        except Exception as error:  # report every failing import, not just the first
            problems.append(f"import {name} failed: {type(error).__name__}: {error}")
    return problems


def check_torchvision_ops() -> list[str]:
    try:
        import torch
        import torchvision  # noqa: F401  (registers the operators)

        _ = torch.ops.torchvision.nms  # raises if torchvision's C++ ops do not match this torch build
    except Exception as error:
        return [f"torch/torchvision mismatch ({error}); reinstall with `make install` (it pins a matching pair)"]
    return []


def check_lightning_script() -> list[str]:
    problems = []
    entries = [e for e in metadata.entry_points(group="console_scripts") if e.name == "lightning"]
    owners = sorted(f"{e.dist.name if e.dist else '?'} -> {e.value}" for e in entries)
    if [e.value for e in entries] != [OUR_LIGHTNING_ENTRY]:
        problems.append(f"expected exactly one `lightning` console script ({OUR_LIGHTNING_ENTRY}), found: {owners} "
                        "(lightning-sdk or litlogger replace it: uninstall them, then `make install`)")
    script = Path(sys.executable).parent / "lightning"
    on_path = shutil.which("lightning")
    if not script.exists():
        problems.append(f"no `lightning` script beside {sys.executable}")
    elif "g2vlm.cli" not in script.read_text(errors="replace"):
        problems.append(f"{script} is not the suite's `lightning` (it does not call g2vlm.cli)")
    print(f"  lightning cmd  {script} (first on PATH: {on_path})")
    return problems


def run(args: argparse.Namespace) -> int:
    print(f"python {platform.python_version()} at {sys.executable}")
    problems = check_imports() + check_torchvision_ops() + check_lightning_script()
    try:
        import torch

        print(f"  cuda           {torch.cuda.is_available()} ({torch.cuda.device_count()} devices)")
    except Exception:
        pass
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    print("doctor: ok" if not problems else f"doctor: {len(problems)} problem(s)")
    return 1 if problems else 0
