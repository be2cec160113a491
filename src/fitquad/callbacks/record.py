"""TrainingRecord: the loss of every optimizer step, and the per-step scalars every logger gets (train/loss, train/lr,
train/grad_norm, params/*), fed only by `training_step`'s outputs and torch's optimizer step post-hook.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn


def batch_losses(outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The losses of the optimizer steps one training_step took, from its outputs (Lightning passes a dict, "loss"
    and whatever else training_step returned), as a 1-D tensor."""
    return outputs.get("step_losses", outputs["loss"]).reshape(-1)


class StepLosses:
    """The losses of the optimizer steps that training_steps took, from their outputs: one per optimizer step. Under
    `trainer.accumulate_grad_batches k` Lightning steps once every k batches, and a step's loss is the sum of its
    batches' outputs (Lightning divides each batch's loss by k); the batches before it took no step."""

    def start(self, trainer: L.Trainer) -> None:
        self.pending: list[torch.Tensor] = []
        self.steps_before = trainer.global_step

    def taken(self, trainer: L.Trainer, outputs: Any) -> torch.Tensor | None:
        """The losses of the steps this training_step completed (None when it completed none)."""
        self.pending.append(batch_losses(outputs))
        if trainer.global_step == self.steps_before:
            return None
        self.steps_before = trainer.global_step
        losses = self.pending[0] if len(self.pending) == 1 else torch.stack(self.pending).sum(dim=0)
        self.pending = []
        return losses


def logged_steps(trainer: L.Trainer, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(steps, mask) of the last `count` optimizer steps: their numbers (1 is the first update) and which are logged."""
    steps = torch.arange(trainer.global_step - count + 1, trainer.global_step + 1)
    return steps, steps % trainer.log_every_n_steps == 0


class TrainingRecord(L.Callback):
    """Records every optimizer step's loss (`loss_history`, numbered from `first_step + 1`) and logs per-step scalars
    to every logger. The CLI always adds it."""

    def __init__(self) -> None:
        self.losses = torch.empty(0)  # after the fit: every step's loss (the mean over processes under DDP), on CPU
        self.first_step = 0
        self._buffer: torch.Tensor | None = None  # during the fit

    @property
    def loss_history(self) -> torch.Tensor:
        """The losses recorded so far, in order, in the module's dtype."""
        return self.losses if self._buffer is None else self._buffer[: self._count]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # On the module's device and in its dtype: no device-to-host copy per step, no float32 rounding of a float64
        # run's losses.
        self._buffer = torch.empty(1024, dtype=pl_module.dtype, device=pl_module.device)
        self._count = 0
        self.first_step = trainer.global_step  # a resumed fit starts at its checkpoint's step
        self._pending: dict[int, dict[str, float]] = {}
        self._logging = bool(trainer.loggers)
        self._steps = StepLosses()
        self._steps.start(trainer)
        self._hook = trainer.optimizers[0].register_step_post_hook(self._after_update(trainer, pl_module))

    def _after_update(self, trainer: L.Trainer, pl_module: L.LightningModule):
        every = trainer.log_every_n_steps

        def after_update(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            step = trainer.global_step + 1  # Lightning counts the update as completed once it has returned
            if not self._logging or step % every:
                return
            norm = nn.utils.get_total_norm([p.grad for p in pl_module.parameters() if p.grad is not None])
            scalars = {"train/lr": optimizer.param_groups[0]["lr"], "train/grad_norm": norm.item()}
            if hasattr(pl_module, "coefficients"):  # fitquad's modules: the polynomial in original units
                scalars.update({f"params/{name}": value for name, value in pl_module.coefficients().items()})
            self._pending[step] = scalars

        return after_update

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        losses = self._steps.taken(trainer, outputs)
        if losses is None:
            return
        end = self._count + len(losses)
        while end > len(self._buffer):  # a buffer that doubles when full: one copy per training_step, no host sync
            self._buffer = torch.cat([self._buffer, torch.empty_like(self._buffer)])
        self._buffer[self._count : end] = losses
        self._count = end
        steps, logged = logged_steps(trainer, len(losses))
        if not self._logging or not logged.any():
            return
        # Under DDP each process has its part's loss: the mean over processes is the loss on all the data.
        values = trainer.strategy.reduce(losses[logged.to(losses.device)], reduce_op="mean").tolist()
        for step, loss in zip(steps[logged].tolist(), values, strict=True):
            scalars = {"train/loss": loss, **self._pending.pop(step, {})}
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=step)
        self._pending.clear()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hook.remove()
        # Under DDP, the recorded losses become the mean over processes, as the logged ones are.
        self.losses, self._buffer = trainer.strategy.reduce(self.loss_history, reduce_op="mean").cpu(), None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self._buffer is not None:  # stopped mid-fit (a diverged fit): what was recorded is still written
            self._hook.remove()
            self.losses, self._buffer = self.loss_history.cpu(), None
