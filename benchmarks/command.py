"""The error path every `g2vlm bench` command shares."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable


def reports_value_errors(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """`run(args)` of a `g2vlm bench BENCHMARK` command, where a ValueError (bad arguments, layouts, checkpoints)
    is one clear line, `g2vlm bench BENCHMARK: error: ...` on stderr, and exit status 2, no traceback."""

    @functools.wraps(run)
    def command(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except ValueError as error:
            print(f"g2vlm bench {args.benchmark}: error: {error}", file=sys.stderr)
            return 2

    return command
