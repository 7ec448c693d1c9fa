"""LossOutlierClipping and PreemptionCheckpoint in real single-process CPU fits of a 5-parameter regression
(the 2-process DDP runs are in tests/integration)."""

from __future__ import annotations

import os
import signal

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from g2vlm.callbacks.loss_outlier_clipping import LossOutlierClipping
from g2vlm.callbacks.preemption import CHECKPOINT_NAME, PreemptionCheckpoint
from tests.fixtures.callbacks import InjectBadLoss


class Regression(L.LightningModule):
    """Linear(4, 1) under MSE and AdamW (momentum and weight decay: a zero gradient would still move it); the
    loss goes through every callback's `guard_training_loss`, as in the suite's LightningModules."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        for callback in self.trainer.callbacks:
            guard = getattr(callback, "guard_training_loss", None)
            if guard is not None:
                loss = guard(self.trainer, self, loss, {"total": loss})
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.05, weight_decay=0.1)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(64, 4, generator=generator)
        return DataLoader(TensorDataset(x, 0.5 * x[:, :1]), batch_size=4)


class RecordSteps(L.Callback):
    """Per global step (the one the batch trained): returned loss, parameters and AdamW state after it."""

    def __init__(self) -> None:
        self.steps: dict[int, dict] = {}
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        optimizer = trainer.optimizers[0]
        state = [optimizer.state.get(p, {}) for p in pl_module.parameters()]
        self.steps[trainer.global_step - 1] = {
            "loss": outputs["loss"].detach().clone(),
            "parameters": [p.detach().clone() for p in pl_module.parameters()],
            "moments": [s["exp_avg"].clone() if "exp_avg" in s else None for s in state],
        }


class SignalAt(L.Callback):
    """Sends SIGUSR1 to this process at the end of the first batch that sees global_step == step."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.sent = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.sent and trainer.global_step == self.step:
            self.sent = True
            os.kill(os.getpid(), signal.SIGUSR1)


def fit(tmp_path, module: L.LightningModule, callbacks: list[L.Callback], max_steps: int, accelerator: str = "cpu",
        **trainer_args) -> L.Trainer:
    trainer = L.Trainer(accelerator=accelerator, devices=1, max_steps=max_steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=callbacks, **trainer_args)
    trainer.fit(module)
    return trainer


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("accelerator", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_outlier_steps_leave_parameters_and_moments_untouched(tmp_path, accelerator):
    """On CUDA the flag reaches the host by a non-blocking copy and an event (callbacks/loss_outlier_clipping.py)."""
    clipping, record = LossOutlierClipping(threshold=10.0), RecordSteps()
    inject = InjectBadLoss(rank=0, spike_step=2, negative_step=3, nan_step=4)  # before the clipping
    trainer = fit(tmp_path, Regression(), [inject, clipping, record], max_steps=6, accelerator=accelerator)
    steps = record.steps
    for step in (2, 3, 4):  # an exact zero; nothing moves, not even AdamW's moments
        assert steps[step]["loss"].item() == 0.0
        assert same(steps[step]["parameters"], steps[1]["parameters"])
        assert same(steps[step]["moments"], steps[1]["moments"])
    for step in (1, 5):
        assert not same(steps[step]["parameters"], steps[step - 1]["parameters"])
    assert clipping.count == 3 and trainer.callback_metrics["train/loss_outlier/count"] == 3.0
    assert trainer.callback_metrics["train/loss_outlier/value"] == -1.0  # the NaN of step 4, logged as -1
    assert clipping.state_dict() == {"count": 3}


def test_kept_steps_train_exactly_as_without_the_guard(tmp_path):
    guarded, plain = RecordSteps(), RecordSteps()
    fit(tmp_path, Regression(), [LossOutlierClipping(threshold=1e6), guarded], max_steps=4)
    fit(tmp_path, Regression(), [plain], max_steps=4)
    for step in range(4):
        assert torch.equal(guarded.steps[step]["loss"], plain.steps[step]["loss"])
        assert same(guarded.steps[step]["parameters"], plain.steps[step]["parameters"])


def test_monitor_must_be_a_loss_term(tmp_path):
    with pytest.raises(KeyError, match="monitor 'camera' is not among the loss terms"):
        fit(tmp_path, Regression(), [LossOutlierClipping(monitor="camera")], max_steps=1)


def test_preemption_is_acted_on_at_the_next_checked_step(tmp_path):
    preemption, record = PreemptionCheckpoint(requeue=False, check_every_n_steps=3), RecordSteps()
    trainer = fit(tmp_path, Regression(), [preemption, SignalAt(1), record], max_steps=10)
    assert trainer.global_step == 3 and max(record.steps) == 2  # signal after step 1; steps 2 and 3 run, 3 checks
    assert preemption.saved_path == tmp_path / CHECKPOINT_NAME
    assert torch.load(preemption.saved_path, map_location="cpu", weights_only=False)["global_step"] == 3
    assert signal.getsignal(signal.SIGUSR1) is not preemption._request  # handlers restored at the end


def test_preemption_saves_on_a_step_boundary_under_gradient_accumulation(tmp_path):
    preemption, record = PreemptionCheckpoint(requeue=False, check_every_n_steps=2), RecordSteps()
    trainer = fit(tmp_path, Regression(), [preemption, SignalAt(0), record], max_steps=10, accumulate_grad_batches=2)
    assert trainer.global_step == 2 and record.batches == 4  # not after batch 1, 2 or 3 (mid-window or unchecked)
    assert torch.load(preemption.saved_path, map_location="cpu", weights_only=False)["global_step"] == 2


def test_preemption_check_interval_must_be_positive():
    with pytest.raises(ValueError, match="check_every_n_steps must be >= 1"):
        PreemptionCheckpoint(check_every_n_steps=0)
