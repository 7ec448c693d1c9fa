"""The suite's `lightning` command: LightningCLI in subclass mode.

    lightning fit --config experiments/base/trainer.yaml --config experiments/geometry/tiny.yaml
    python -m g2vlm fit ...          # the same thing, independent of which `lightning` is on PATH

Models and datamodules are chosen by full `class_path` in YAML. Several `--config` files compose (the
last value wins, mappings merge key by key, lists are replaced). `${...}` interpolations resolve on the
merged config, so an overlay may refer to keys set in an earlier file.

The base blocks in `experiments/base/` (trainer defaults, logging, checkpointing) are loaded first for
every subcommand, so an experiment file holds only what is its own; `--help` shows them as the default
config files.
"""

from __future__ import annotations

from pathlib import Path

from jsonargparse import set_parsing_settings
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI


class G2VLMCLI(LightningCLI):
    """LightningCLI with the suite's defaults (see module docstring).

    `checkpoint:` is a section of its own (a ModelCheckpoint that is always present), so composing
    configs whose `trainer.callbacks` lists replace each other can never drop checkpointing.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")


SUBCOMMANDS = ("fit", "validate", "test", "predict")
BASE_CONFIG_DIR = Path(__file__).resolve().parents[2] / "experiments" / "base"
BASE_CONFIGS = ("trainer.yaml", "logging.yaml", "checkpoint.yaml")


def base_config_files() -> list[str]:
    """The base blocks of a source checkout (editable install); none for an installed wheel."""
    return [str(BASE_CONFIG_DIR / name) for name in BASE_CONFIGS if (BASE_CONFIG_DIR / name).is_file()]


def main(args: list[str] | None = None) -> None:
    """Entry point of `lightning` and `python -m g2vlm`; `args` lets tests call it in-process."""
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    G2VLMCLI(
        model_class=None,
        datamodule_class=None,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        parser_kwargs={
            "parser_mode": "omegaconf+",
            **{subcommand: {"default_config_files": base_config_files()} for subcommand in SUBCOMMANDS},
        },
        args=args,
    )
