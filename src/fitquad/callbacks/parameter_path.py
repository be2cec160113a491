"""The path of the parameters through training: one row per optimizer step, recorded by a callback.

Recorded with torch's public optimizer hook (`Optimizer.register_step_post_hook`), so every step
is seen whatever the number of steps fused into one training_step, and a step that a gradient
scaler skips (non-finite gradients under 16-mixed) adds no row: the path holds the updates made.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class ParameterPath(L.Callback):
    """Records [bias, weight_1, …] (the model's own units) at the start and after every optimizer step.

    `path()` returns them as a (steps + 1, degree + 1) tensor; `pl_module.model.coefficients_of(path)`
    turns it into original-unit coefficients.
    """

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []
        self._hook: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        linear = pl_module.model.linear
        self.rows = [self._parameters(linear)]  # the starting point
        self._hook = trainer.optimizers[0].register_step_post_hook(
            lambda optimizer, args, kwargs: self.rows.append(self._parameters(linear))
        )

    @staticmethod
    def _parameters(linear: torch.nn.Linear) -> torch.Tensor:
        return torch.cat([linear.bias.detach(), linear.weight.detach().view(-1)])

    def path(self) -> torch.Tensor:
        return torch.stack(self.rows) if self.rows else torch.empty(0)

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove_hook()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._remove_hook()
