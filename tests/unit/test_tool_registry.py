"""The `g2vlm` tool registry: `g2vlm --help` lists every tool without importing any tool module (nor torch), and
the registry's help line is the one each tool's own parser shows."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from g2vlm.tools import TOOLS, build_parser

PROBE = """
import json, sys
from g2vlm import tools
try:
    tools.main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps({"tool_modules": sorted(t.module for t in tools.TOOLS if t.module in sys.modules),
                  "heavy": sorted(m for m in ("torch", "lightning", "transformers", "numpy") if m in sys.modules)}))
"""


def imported_by(*argv: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "400"})  # help lines unwrapped
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stdout


def test_help_lists_every_tool_and_imports_no_tool_module():
    imported, output = imported_by("--help")
    assert imported == {"tool_modules": [], "heavy": []}
    for tool in TOOLS:
        assert tool.name in output and tool.help in output


def test_a_tool_imports_its_own_module_only():
    imported, output = imported_by("doctor", "--help")
    assert imported["tool_modules"] == ["g2vlm.doctor"] and "usage: g2vlm doctor" in output


@pytest.mark.parametrize("tool", TOOLS, ids=[tool.name for tool in TOOLS])
def test_the_registry_help_is_the_tools_own(tool):
    parser = build_parser([tool.name])
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    shown = {action.dest: action.help for action in subparsers._choices_actions}
    assert shown[tool.name] == tool.help
    own = subparsers.choices[tool.name]  # the module's own parser: its description and arguments, not a stub
    assert own.description and (own.get_default("run") is not None or any(
        isinstance(action, argparse._SubParsersAction) for action in own._actions))
