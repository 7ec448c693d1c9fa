"""What `lightning fit|validate|test|predict --ckpt_path ...` does with the checkpoint: one rule for every form.

**The configuration builds the model; a checkpoint only restores state.** The YAML files and the command line
decide the LightningModule and its hyper-parameters, whether `--ckpt_path` names a file, a sharded folder, or
`last` / `best` / `hpc` (LightningCLI's own default instead rebuilds the model from a checkpoint file's saved
hyper-parameters, model class included, and silently drops what the command line said; it does not do so for
`last`). Before the trainer loads any checkpoint:

- it is read without running code from it (`g2vlm.safe_load`); a hostile, text or truncated file stops the run
  with one line naming the file;
- a checkpoint of another LightningModule (e.g. SpatialReasoning given to a GeometryPretraining config) is
  refused with a message naming both;
- `fit` continues the saved run, its optimizer state and learning-rate schedule included, so the module's
  hyper-parameters must agree with the checkpoint's: a difference (e.g. `--model.init_args.optimization.
  learning_rate 0.5`, which the restored schedule would silently override) is refused with a message listing it
  (grouped arguments field by field) and saying how to start a new stage from the checkpoint's weights instead. Only the settings in `MAY_DIFFER_ON_RESUME` (speed
  switches, where starting weights were read from, generation length) may differ; they and every difference under
  validate / test / predict are listed in a warning, and the configuration's values are used.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from g2vlm.safe_load import CheckpointError, load_checkpoint_record

# Hyper-parameters that change neither the model nor the optimisation a resumed run continues.
MAY_DIFFER_ON_RESUME = frozenset({
    "compile", "gradient_checkpointing",  # speed switches
    "init_weights", "geometry_checkpoint", "qwen2vl", "tokenizer",  # where starting weights were read (superseded)
    "max_new_tokens", "generate_in_validation",  # validation-time generation
})


def class_path(module: Any) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (YAML gives lists where Python code gives tuples)."""
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _differences(name: str, saved: Any, current: Any) -> list[tuple[str, Any, Any]]:
    """(dotted name, saved, current) of every difference; grouped arguments (dicts such as `optimization`)
    field by field."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [difference for key in sorted(set(saved) | set(current), key=str)
                for difference in _differences(f"{name}.{key}", saved.get(key), current.get(key))]
    return [] if _plain(saved) == _plain(current) else [(name, saved, current)]


def check_resume_checkpoint(path: str | Path, module: Any, fitting: bool) -> None:
    """Refuse a checkpoint that is unsafe, unreadable, not a Lightning checkpoint, of another LightningModule than
    `module`, or (when `fitting`) whose hyper-parameters differ from `module`'s outside MAY_DIFFER_ON_RESUME; warn
    about the differences that remain. Raises CheckpointError."""
    path = Path(path)
    record = load_checkpoint_record(path)
    if not path.is_dir() and "state_dict" not in record:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict'; keys {sorted(record)[:8]})")
    saved = record.get("hyper_parameters")
    if not isinstance(saved, dict):
        return
    expected = class_path(module)
    saved_class = saved.get("_class_path")
    if saved_class is None:  # saved outside LightningCLI: tell modules apart by their argument names
        parameters = dict(inspect.signature(type(module).__init__).parameters)
        parameters.pop("self", None)
        unknown = sorted(key for key in saved if not key.startswith("_") and key not in parameters)
        required = sorted(name for name, parameter in parameters.items() if name not in saved
                          and parameter.default is inspect.Parameter.empty
                          and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY))
        if unknown or required:
            reasons = ([f"hyper-parameters {unknown[:5]} are not arguments of it"] if unknown else []) + \
                      ([f"its required arguments {required[:5]} are missing"] if required else [])
            raise CheckpointError(f"{path}: a checkpoint of another LightningModule than the configured {expected} "
                                  f"({'; '.join(reasons)})")
    elif saved_class != expected:
        raise CheckpointError(
            f"{path}: a checkpoint of {saved_class}, but the configuration builds {expected}. Resume it with a "
            f"configuration of {saved_class.rsplit('.', 1)[-1]}, or start a new stage from its weights "
            f"(init_weights / geometry_checkpoint) instead of --ckpt_path")
    current = dict(getattr(module, "hparams", {}))
    differences = [(name, old, new) for key in sorted(current) if key in saved and not key.startswith("_")
                   for name, old, new in _differences(key, saved[key], current[key])]
    changed = [name.split(".")[0] for name, _, _ in differences]
    listing = "; ".join(f"{name}: {old!r} in the checkpoint, {new!r} in the configuration"
                        for name, old, new in differences)
    if fitting and any(key not in MAY_DIFFER_ON_RESUME for key in changed):
        raise CheckpointError(
            f"{path}: the configuration disagrees with the checkpoint ({listing}). --ckpt_path continues the saved "
            "run, its optimizer state and learning-rate schedule included, so these must match: set them as the "
            "checkpoint has them, or start a new stage from its weights with --model.init_args.init_weights "
            f"{path} (no --ckpt_path)")
    if changed:
        rank_zero_warn(f"{path}: the configuration's values are used where they differ from the checkpoint's "
                       f"({listing})")


def guard_checkpoint_loading(trainer: Any, module: Any, fitting: bool) -> None:
    """Make every checkpoint the trainer loads (`--ckpt_path` FILE, FOLDER, last, best, hpc) pass
    `check_resume_checkpoint` first: the strategy's `load_checkpoint` is where they all arrive."""
    strategy = trainer.strategy
    load = strategy.load_checkpoint

    def checked_load(checkpoint_path, *args, **kwargs):
        check_resume_checkpoint(checkpoint_path, module, fitting)
        return load(checkpoint_path, *args, **kwargs)

    strategy.load_checkpoint = checked_load
