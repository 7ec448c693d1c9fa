"""`LossOutlierClipping`: a training loss above a threshold, below zero or non-finite contributes nothing.

The paper (supplementary B) clips geometry losses above 10 to zero; the official trainer only has it as
commented-out code (reference g2vlm-official.md §2.5). Here it is an explicit, logged guard:

- The decision is identical on every rank: each rank flags its own loss (or the named term) and the flags
  are summed across ranks; if any rank is bad, every rank drops the step.
- A dropped step keeps the graph: the loss becomes an exact zero that still depends on every parameter, so
  all ranks run the same backward (DDP/FSDP collectives stay matched). After backward the gradients are
  removed, so the optimizer leaves every parameter (and its moments) untouched for that step; the LR
  schedule still advances, as in the official code.
- No host sync before backward: the summed flag picks the loss on the device (`torch.where`; a kept loss gets
  exactly the gradients it would get unguarded), and a non-blocking copy brings the flag to the host while the
  backward is queued. The host reads it after backward, because removing the gradients must be decided there:
  zeroed gradients would not do, AdamW still moves a parameter with a zero gradient (decoupled weight decay,
  momentum) and advances its moments.
- `train/loss_outlier/count` (cumulative) and `train/loss_outlier/value` (this rank's offending value) are
  logged.

Interface with the LightningModule: the module's `training_step` passes its loss through
`guard_training_loss(trainer, pl_module, loss, terms)` of every callback that has it.
"""

from __future__ import annotations

import lightning as L
import torch


class LossOutlierClipping(L.Callback):
    """Args:
        threshold: losses above this are outliers (paper: 10).
        monitor: the loss term checked (`total`, or a term name the module logs, e.g. `camera_translation`).
    """

    def __init__(self, threshold: float = 10.0, monitor: str = "total") -> None:
        self.threshold = threshold
        self.monitor = monitor
        self.count = 0
        self._pending: _PendingFlag | None = None

    def guard_training_loss(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor,
                            terms: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.monitor not in terms:
            raise KeyError(f"LossOutlierClipping: monitor {self.monitor!r} is not among the loss terms {sorted(terms)}")
        value = terms[self.monitor].detach().float()
        local_bad = ~torch.isfinite(value) | (value > self.threshold) | (value < 0)
        bad_ranks = trainer.strategy.reduce(local_bad.float().reshape(1), reduce_op="sum")
        dropped = bad_ranks.reshape(()) > 0
        self._pending = _PendingFlag(dropped, value)
        zero = torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0) * 0.0
        return torch.where(dropped, zero, loss)

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is None or not self._pending.read():
            return
        self.count += 1
        pl_module.log("train/loss_outlier/count", float(self.count), reduce_fx="max")
        value = self._pending.value
        pl_module.log("train/loss_outlier/value", torch.nan_to_num(value, nan=-1.0, posinf=1e30, neginf=-1e30))
        # 0 · inf in backward can still leave NaN; drop the gradients so the optimizer skips every parameter
        for parameter in pl_module.parameters():
            parameter.grad = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._pending = None

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, state_dict: dict) -> None:
        self.count = state_dict["count"]


class _PendingFlag:
    """The step's drop decision (a 0-dim bool tensor on the loss's device), copied to the host without waiting:
    on CUDA a non-blocking copy plus an event, so `read()` after backward waits only for the forward and the
    flag's all-reduce, which finished while the backward was being queued."""

    def __init__(self, dropped: torch.Tensor, value: torch.Tensor) -> None:
        self.value = value
        self._ready: torch.cuda.Event | None = None
        if dropped.device.type == "cuda":
            self._host = dropped.to("cpu", non_blocking=True)
            self._ready = torch.cuda.Event()
            self._ready.record()
        else:
            self._host = dropped

    def read(self) -> bool:
        if self._ready is not None:
            self._ready.synchronize()
        return bool(self._host.item())
