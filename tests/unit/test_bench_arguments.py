"""`g2vlm bench` argument handling: --root forms, the nested sub-commands, clear errors."""

from __future__ import annotations

import pytest

from g2vlm.benchmarks.cli import parse_roots
from g2vlm.tools import build_parser


def test_roots_by_name_or_bare_for_one_dataset(tmp_path):
    assert parse_roots(["sintel=/d/sintel", "nyu-v2=/d/nyu"], ["sintel", "nyu-v2", "synthetic"]) == \
        {"sintel": "/d/sintel", "nyu-v2": "/d/nyu", "synthetic": None}
    odd = tmp_path / "a=b"  # an existing folder whose name holds '=' is a bare root
    odd.mkdir()
    assert parse_roots([str(odd)], ["kitti"]) == {"kitti": str(odd)}
    with pytest.raises(ValueError, match="'bonn' is not one of the datasets given"):
        parse_roots(["bonn=/d/bonn"], ["sintel"])
    with pytest.raises(ValueError, match="with several datasets write NAME=DIR"):
        parse_roots(["/d/x"], ["sintel", "nyu"])


def test_nested_subcommands_and_one_line_errors(tmp_path, capsys):
    parser = build_parser()
    args = parser.parse_args(["bench", "depth", "--dataset", "nyu", "--predictions", str(tmp_path), "--mode", "mono"])
    assert (args.benchmark, args.mode, args.predictions) == ("depth", "mono", str(tmp_path))
    assert parser.parse_args(["bench", "pointmap", "--dataset", "7scenes,eth3d"]).benchmark == "pointmap"
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "depth", "--ckpt", "a", "--predictions", "b"])  # one source only
    assert args.run(args) == 2
    assert "nyu needs --root" in capsys.readouterr().err
    args = parser.parse_args(["bench", "pose", "--dataset", "co3dv2", "--root", str(tmp_path), "--predictions", str(tmp_path)])
    assert args.run(args) == 2
    assert "no <category>_test.jgz" in capsys.readouterr().err
