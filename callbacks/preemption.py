"""`PreemptionCheckpoint`: on SIGTERM / SIGUSR1, every rank saves at the same step, then the job stops
(and, inside a SLURM job, requeues itself).

Why not Lightning's own handling: on SIGTERM Lightning exits without saving, and its SLURM auto-requeue
saves from inside the signal handler, in the middle of a step (Lightning-AI/pytorch-lightning#21406).
Here the signal handler only sets a flag. Every `check_every_n_steps` optimizer steps (at the end of the
batch that completes a global step divisible by it: the same steps on every rank, so the collective stays
matched) the flags are summed across ranks, so all ranks agree on the step; all ranks then save
`last-preempted.ckpt` into the ModelCheckpoint folder (a name that `--ckpt_path last` considers, newest file
wins), rank 0 runs `scontrol requeue $SLURM_JOB_ID` when inside a SLURM job, and the trainer stops. The
relaunched job resumes with `--ckpt_path last` (the sbatch templates pass it).

The check is a cross-rank reduction read on the host (`.item()`), which waits for the GPU to finish the step;
checking every 10 steps instead of every step keeps that stall off 9 steps in 10. The price: a save starts up
to `check_every_n_steps` steps after the signal.

SLURM: submit with `--signal=USR1@<seconds>` (no `B:` prefix, which would signal only the batch shell)
and `--requeue`; the lead time must cover `check_every_n_steps` steps plus the save.

A run stuck in data loading never reaches a step at which it could save: when the signal arrives while the loop
waits for a training batch and no batch arrives within `data_stall_seconds`, the run stops without a save (a
KeyboardInterrupt in the main thread, which Lightning turns into a shutdown with exit status 1), saying why. An
ignored SIGINT (a background job of a shell without job control) is given Python's handler while training runs.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path

import lightning as L
import torch

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last-preempted.ckpt"


class PreemptionCheckpoint(L.Callback):
    """Args:
        signals: signal names that request a save-and-stop.
        requeue: run `scontrol requeue $SLURM_JOB_ID` (rank 0) after the save when SLURM_JOB_ID is set.
        check_every_n_steps: the ranks agree on a request at global steps divisible by this (default 10).
        data_stall_seconds: a signal that arrives while the loop waits for a training batch stops the run without a
            save if no batch arrives within this many seconds (default 60).
    """

    def __init__(self, signals: list[str] | None = None, requeue: bool = True, check_every_n_steps: int = 10,
                 data_stall_seconds: float = 60.0) -> None:
        if check_every_n_steps < 1:
            raise ValueError(f"PreemptionCheckpoint: check_every_n_steps must be >= 1, got {check_every_n_steps}")
        self.data_stall_seconds = data_stall_seconds
        self._waiting_for_batch = False  # between a batch's end (or the start of training) and the next batch
        self._batches_started = 0
        self._stall_timer: threading.Timer | None = None
        self.signal_names = list(signals if signals is not None else ["SIGTERM", "SIGUSR1"])
        self.signals = [signal.Signals[name] for name in self.signal_names]
        self.requeue = requeue
        self.check_every_n_steps = check_every_n_steps
        self.requested = False
        self.saved_path: Path | None = None
        self._previous_handlers: dict[signal.Signals, object] = {}
        self._checked_step = -1

    def _request(self, signum: int, frame) -> None:
        self.requested = True  # only a flag: saving happens at the next checked step, on every rank
        if self._waiting_for_batch and self._stall_timer is None:
            self._stall_timer = threading.Timer(self.data_stall_seconds, self._stop_if_stalled,
                                                (self._batches_started, signal.Signals(signum).name))
            self._stall_timer.daemon = True
            self._stall_timer.start()

    def _stop_if_stalled(self, batches_started: int, signal_name: str) -> None:
        """Timer thread: still no new training batch since the signal -> interrupt the main thread."""
        self._stall_timer = None
        if self._waiting_for_batch and self._batches_started == batches_started:
            log.error("%s received, but no training batch came in the %.0f s since (the data loader is stuck): "
                      "stopping without a save", signal_name, self.data_stall_seconds)
            signal.raise_signal(signal.SIGINT)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._checked_step = trainer.global_step  # after a restore: the first check is at the next multiple
        # Lightning registers its own handlers just before training starts; ours replace them for these signals.
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signals:
            self._previous_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._request)
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            # A job started in the background by a shell without job control inherits an ignored SIGINT, which
            # would make the stall stop (`_stop_if_stalled` raises SIGINT) a no-op: the run would hang.
            self._previous_handlers[signal.SIGINT] = signal.SIG_IGN
            signal.signal(signal.SIGINT, signal.default_int_handler)
        self._waiting_for_batch = True

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        self._batches_started += 1
        self._waiting_for_batch = False

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._waiting_for_batch = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._waiting_for_batch = trainer.state.fn == "fit"  # validation inside fit: training batches come next

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self._waiting_for_batch = True  # the loop fetches the next batch after this hook
        # With gradient accumulation, global_step stays put for several batches: only the batch that completed
        # the step checks, so a save never lands inside an accumulation window.
        step = trainer.global_step
        if step == self._checked_step or step % self.check_every_n_steps != 0:
            return
        self._checked_step = step
        local = torch.tensor([1.0 if self.requested else 0.0], device=pl_module.device)
        if trainer.strategy.reduce(local, reduce_op="sum").item() == 0:
            return
        dirpath = Path(trainer.checkpoint_callback.dirpath if trainer.checkpoint_callback else trainer.default_root_dir)
        self.saved_path = dirpath / CHECKPOINT_NAME
        log.warning("preemption requested: saving %s at global step %d", self.saved_path, trainer.global_step)
        trainer.save_checkpoint(self.saved_path)
        trainer.strategy.barrier("preemption-saved")
        job_id = os.environ.get("SLURM_JOB_ID")
        if self.requeue and job_id and trainer.is_global_zero:
            result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
            if result.returncode != 0:
                log.error("scontrol requeue %s failed (%d): %s", job_id, result.returncode, result.stderr.strip())
            else:
                log.warning("requeued SLURM job %s", job_id)
        trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._waiting_for_batch = False
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()
