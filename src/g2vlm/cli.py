"""The suite's `lightning` command: LightningCLI in subclass mode.

    lightning fit --config experiments/base/trainer.yaml --config experiments/geometry/tiny.yaml
    python -m g2vlm fit ...          # the same thing, independent of which `lightning` is on PATH

Models and datamodules are chosen by full `class_path` in YAML. Several `--config` files compose (the
last value wins, mappings merge key by key, lists are replaced). `${...}` interpolations resolve on the
merged config, so an overlay may refer to keys set in an earlier file.

The base blocks in `experiments/base/` (trainer defaults, logging, checkpointing) are loaded first for
every subcommand, so an experiment file holds only what is its own; `--help` shows them as the default
config files.

`--ckpt_path` (a file, a sharded folder, `last`, `best`): the configuration builds the model and the checkpoint
only restores state, whatever the form; the checkpoint is read without running code from it, one of another
LightningModule is refused, and so is a `fit` resume whose model hyper-parameters disagree with the checkpoint's
(g2vlm.resume_guard). A refused or unreadable checkpoint ends the command with one line and exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jsonargparse import set_parsing_settings
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from g2vlm.datamodules.shards.schema import DataError
from g2vlm.resume_guard import guard_checkpoint_loading
from g2vlm.safe_load import CheckpointError


class G2VLMCLI(LightningCLI):
    """LightningCLI with the suite's defaults (see module docstring).

    `checkpoint:` is a section of its own (a ModelCheckpoint that is always present), so composing
    configs whose `trainer.callbacks` lists replace each other can never drop checkpointing.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")

    def _parse_ckpt_path(self) -> None:
        """LightningCLI would rebuild the model from a checkpoint file's hyper-parameters here; the suite's rule is
        that the configuration builds the model (g2vlm.resume_guard), so nothing is read from the checkpoint."""

    def before_fit(self) -> None:
        guard_checkpoint_loading(self.trainer, self.model, fitting=True)

    def before_validate(self) -> None:
        guard_checkpoint_loading(self.trainer, self.model, fitting=False)

    before_test = before_predict = before_validate


SUBCOMMANDS = ("fit", "validate", "test", "predict")
CKPT_PATH_NOTE = (
    "--ckpt_path FILE|FOLDER|last|best: the configuration builds the model, the checkpoint restores its state. The "
    "checkpoint is read without running code from it (a file with torch.load weights_only=True, a sharded folder's "
    ".metadata with an unpickler limited to DCP's metadata classes); one of another LightningModule, or a fit resume "
    "whose model hyper-parameters disagree with the checkpoint's, is refused with one line (exit status 2). "
    "README: 'Trust and safety'."
)
BASE_CONFIG_DIR = Path(__file__).resolve().parents[2] / "experiments" / "base"
BASE_CONFIGS = ("trainer.yaml", "logging.yaml", "checkpoint.yaml")


def base_config_files() -> list[str]:
    """The base blocks of a source checkout (editable install); none for an installed wheel."""
    return [str(BASE_CONFIG_DIR / name) for name in BASE_CONFIGS if (BASE_CONFIG_DIR / name).is_file()]


def main(args: list[str] | None = None) -> None:
    """Entry point of `lightning` and `python -m g2vlm`; `args` lets tests call it in-process."""
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    try:
        _run_cli(args)
    except (CheckpointError, DataError) as error:  # a refused checkpoint, unusable data: one line, no traceback
        print(f"lightning: error: {last_line(error)}", file=sys.stderr)
        sys.exit(2)


def last_line(error: BaseException) -> str:
    """The error's own message; for one re-raised from a DataLoader worker (whose message holds the worker's
    traceback), its last line without the exception's name."""
    line = str(error).strip().splitlines()[-1]
    name = f"{type(error).__module__}.{type(error).__qualname__}: "
    return line.removeprefix(name)


def _run_cli(args: list[str] | None) -> None:
    G2VLMCLI(
        model_class=None,
        datamodule_class=None,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        parser_kwargs={
            "parser_mode": "omegaconf+",
            **{subcommand: {"default_config_files": base_config_files(), "description": CKPT_PATH_NOTE}
               for subcommand in SUBCOMMANDS},
        },
        args=args,
    )
