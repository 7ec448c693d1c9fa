"""Every YAML under experiments/ parses with `--print_config` (litgpt's config-hub test).

The base blocks are loaded by default. An overlay is parsed on top of the experiment it is written for
(`OVERLAY_BASES`); any other file that names no model is parsed on top of a minimal fixture experiment.
"""

from __future__ import annotations

import pytest
import yaml

from g2vlm.cli import main
from tests.conftest import REPO_ROOT

EXPERIMENT_FILES = sorted((REPO_ROOT / "experiments").rglob("*.yaml"))
FIXTURE = str(REPO_ROOT / "tests" / "conf" / "regression.yaml")
OVERLAY_BASES = {  # overlay -> the files it is composed after
    "geometry/pretrain_518.yaml": ["geometry/pretrain_224.yaml"],
    "reasoning/demo_grounding.yaml": ["reasoning/demo.yaml"],
    "trainer/fsdp.yaml": ["geometry/pretrain_224.yaml"],
    "trainer/fsdp_multinode.yaml": ["geometry/pretrain_224.yaml", "trainer/fsdp.yaml"],
}


@pytest.mark.parametrize("path", EXPERIMENT_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT / "experiments")))
def test_experiment_yaml_prints_config(path, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    content = yaml.safe_load(path.read_text()) or {}
    name = str(path.relative_to(REPO_ROOT / "experiments"))
    if name in OVERLAY_BASES:
        configs = [str(REPO_ROOT / "experiments" / base) for base in OVERLAY_BASES[name]] + [str(path)]
    elif "class_path" in content.get("model", {}):
        configs = [str(path)]
    else:
        configs = [FIXTURE, str(path)]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *[arg for config in configs for arg in ("--config", config)], "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert "trainer" in printed and "model" in printed
