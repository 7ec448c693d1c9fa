"""The `g2vlm` command: the suite's tools (`g2vlm --help` lists them).

Each tool lives in its own module and exposes `add_to(subparsers)`, which adds its parser and sets
`run=<callable(args) -> int>` as a default. Tool modules import heavy libraries inside `run`, so
`g2vlm --help` stays fast. To add a tool, write the module and list it in `TOOL_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

TOOL_MODULES: tuple[str, ...] = (
    "g2vlm.doctor",
    "g2vlm.demo",
    "g2vlm.consolidate",
    "g2vlm.ask",
    "g2vlm.datamodules.convert.cli",
    "g2vlm.model.import_weights",
    "g2vlm.benchmarks.cli",
    "g2vlm.reconstruct",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="g2vlm",
        description="Tools of the g2vlm suite. Training itself is `lightning fit --config ...`.",
    )
    subparsers = parser.add_subparsers(dest="tool", metavar="TOOL", required=True)
    for module_name in TOOL_MODULES:
        importlib.import_module(module_name).add_to(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.run(args))
