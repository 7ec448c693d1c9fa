"""The `g2vlm` command: the suite's tools (`g2vlm --help` lists them).

`TOOLS` is the registry: each tool's name, the module that implements it and its one-line help. A tool's module
is imported only when that tool runs (or when its arguments are asked for), so `g2vlm --help` imports none of
them and tool modules may import what they need at top level. A tool module exposes `add_to(subparsers)`, which
adds the tool's parser (with the registry's help line) and sets `run=<callable(args) -> int>` as a default. To add
a tool, write the module and add a row to `TOOLS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Tool:
    name: str
    module: str
    help: str


TOOLS: tuple[Tool, ...] = (
    Tool("doctor", "g2vlm.doctor", "check the environment: versions, imports, console scripts"),
    Tool("demo", "g2vlm.demo", "synthetic scenes -> train the small model on CPU -> depth/pose table"),
    Tool("consolidate", "g2vlm.consolidate", "sharded checkpoint folder -> one portable checkpoint file"),
    Tool("ask", "g2vlm.ask", "answer a question about images with a SpatialReasoning checkpoint"),
    Tool("shard", "g2vlm.datamodules.convert.cli", "build clip shards (WebDataset tars) from a dataset"),
    Tool("import-weights", "g2vlm.model.import_weights",
         "import the released G²VLM checkpoint, or build a starting checkpoint from Qwen2-VL and DINOv2"),
    Tool("bench", "g2vlm.benchmarks.cli", "depth / pose / point-map benchmarks with the published protocols"),
    Tool("reconstruct", "g2vlm.reconstruct", "depth PNGs, a coloured PLY and cameras from images"),
)


def build_parser(tools: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The `g2vlm` parser with the full arguments of `tools` (names; None: every tool), whose modules it imports;
    the other tools are listed by name and help only."""
    wanted = {tool.name for tool in TOOLS} if tools is None else set(tools)
    parser = argparse.ArgumentParser(
        prog="g2vlm",
        description="Tools of the g2vlm suite. Training itself is `lightning fit --config ...`.",
    )
    subparsers = parser.add_subparsers(dest="tool", metavar="TOOL", required=True)
    for tool in TOOLS:
        if tool.name in wanted:
            importlib.import_module(tool.module).add_to(subparsers)
        else:
            subparsers.add_parser(tool.name, help=tool.help)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[:1]).parse_args(argv)  # the tool is the first argument (the top level has only -h)
    sys.exit(args.run(args))
