"""Every YAML under experiments/ parses with `--print_config` (litgpt's config-hub test).

Overlays are parsed together with the base blocks (loaded by default) and, when they name no model,
with a minimal fixture model so the check exercises the overlay itself.
"""

from __future__ import annotations

import pytest
import yaml

from g2vlm.cli import main
from tests.conftest import REPO_ROOT

EXPERIMENT_FILES = sorted((REPO_ROOT / "experiments").rglob("*.yaml"))
FIXTURE = str(REPO_ROOT / "tests" / "conf" / "regression.yaml")


@pytest.mark.parametrize("path", EXPERIMENT_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT / "experiments")))
def test_experiment_yaml_prints_config(path, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    content = yaml.safe_load(path.read_text()) or {}
    configs = [str(path)] if "model" in content else [FIXTURE, str(path)]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *[arg for config in configs for arg in ("--config", config)], "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert "trainer" in printed and "model" in printed
