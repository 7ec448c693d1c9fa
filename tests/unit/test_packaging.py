"""The distribution layout: every package is declared, and the rooms import as g2vlm.<room>."""

from __future__ import annotations

import configparser
import subprocess
import sys

from tests.conftest import REPO_ROOT

ROOMS = {"g2vlm": REPO_ROOT / "src" / "g2vlm", "g2vlm.datamodules": REPO_ROOT / "datamodules",
         "g2vlm.callbacks": REPO_ROOT / "callbacks", "g2vlm.benchmarks": REPO_ROOT / "benchmarks"}


def declared_packages() -> set[str]:
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    return {line.strip() for line in config["options"]["packages"].splitlines() if line.strip()}


def packages_on_disk() -> set[str]:
    found = set()
    for name, root in ROOMS.items():
        for init in root.rglob("__init__.py"):
            relative = init.parent.relative_to(root).parts
            if "__pycache__" not in relative:
                found.add(".".join((name, *relative)))
    return found


def test_every_package_on_disk_is_declared_in_setup_cfg():
    assert packages_on_disk() - declared_packages() == set()
    assert declared_packages() - packages_on_disk() == set()


def test_rooms_import_from_outside_the_repo(tmp_path):
    code = "import g2vlm.datamodules, g2vlm.callbacks, g2vlm.benchmarks; print(g2vlm.datamodules.__file__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(REPO_ROOT / "datamodules" / "__init__.py")
