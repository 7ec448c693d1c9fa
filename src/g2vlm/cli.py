"""The suite's `lightning` command: LightningCLI in subclass mode.

    lightning fit --config experiments/base/trainer.yaml --config experiments/geometry/tiny.yaml
    python -m g2vlm fit ...          # the same thing, independent of which `lightning` is on PATH

Models and datamodules are chosen by full `class_path` in YAML. Several `--config` files compose (the
last value wins, mappings merge key by key, lists are replaced). `${...}` interpolations resolve on the
merged config, so an overlay may refer to keys set in an earlier file.
"""

from __future__ import annotations

from jsonargparse import set_parsing_settings
from lightning.pytorch.cli import LightningCLI


class G2VLMCLI(LightningCLI):
    """LightningCLI with the suite's defaults (see module docstring)."""


def main(args: list[str] | None = None) -> None:
    """Entry point of `lightning` and `python -m g2vlm`; `args` lets tests call it in-process."""
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    G2VLMCLI(
        model_class=None,
        datamodule_class=None,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        parser_kwargs={"parser_mode": "omegaconf+"},
        args=args,
    )
