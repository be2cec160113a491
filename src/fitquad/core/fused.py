"""FusedQuadraticRegression: the textbook module, taking `fused_steps` optimizer steps inside one training_step.

Lightning's fixed cost per training_step (its loops, batch-level callbacks, the progress bar) dwarfs an optimizer
step on a few dozen points; taking many cheap steps per training_step amortises it (benchmarks/README.md). The
numbers are the textbook module's: every step is the same zero_grad, backward, step, through Lightning's public
manual-optimization API (`self.manual_backward`, the LightningOptimizer), so precision plugins, strategies, every
per-step hook and `trainer.global_step`/`max_steps` see each step as Lightning documents them.

Opt in from a config:

    model:
      class_path: fitquad.core.fused.FusedQuadraticRegression
      init_args: {fused_steps: 1000, lr: 0.1}

What changes with it: batch-level hooks (`on_train_batch_end`, `ModelCheckpoint(every_n_train_steps)`,
LearningRateMonitor) run once per training_step, every `fused_steps` optimizer steps; Lightning leaves schedulers
and gradient clipping to a manually optimized module (this one steps the schedulers as Lightning would, and
clipping is the callback fitquad.callbacks.clipping.GradientClipping); accumulate_grad_batches must stay 1.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Literal

import torch

from .module import QuadraticRegression


class FusedQuadraticRegression(QuadraticRegression):
    """QuadraticRegression, taking several optimizer steps per training_step (a speed device; the same numbers).

    Args:
        fused_steps: Optimizer steps taken inside one training_step (each on its own batch; the data module serves
            this many per Lightning batch). 1 takes one step per training_step, as the textbook module does.
        **kwargs: QuadraticRegression's options.
    """

    def __init__(self, *args: Any, fused_steps: int = 100, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fused_steps = fused_steps  # read by QuadraticDataModule.train_dataloader
        self.automatic_optimization = False  # so that one training_step can take several steps

    def training_step(self, batch: tuple[Any, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        xs, ys = (batch[0].unsqueeze(0), batch[1].unsqueeze(0)) if self.fused_steps == 1 else batch
        optimizer = self.optimizers()
        steps = len(xs)
        if self.trainer.max_steps > 0:  # never overshoot max_steps inside a fused batch
            steps = min(steps, self.trainer.max_steps - self.global_step)
        first_step = self.global_step + 1
        step_schedulers = any(config.interval == "step" for config in self.trainer.lr_scheduler_configs)
        losses = []
        for features, target in itertools.islice(self._per_step(xs, ys), steps):
            optimizer.zero_grad()
            loss = self.loss_fn(self.model.forward_features(features), target)
            self.manual_backward(loss)
            optimizer.step()
            if step_schedulers:
                self.step_lr_schedulers("step")
            losses.append(loss.detach())
        step_losses = torch.stack(losses)
        self.stop_if_diverged(step_losses, first_step)  # once per training_step: one host sync for all its steps
        self.log("train/loss", losses[-1], prog_bar=True, logger=False)
        # Lightning's step for self.log'd metrics and checkpoint names counts training_steps: a metric named "step"
        # gives it the optimizer step instead.
        self.log("step", float(self.global_step), logger=False)
        return {"loss": losses[-1], "step_losses": step_losses}  # step_losses: what fitquad's TrainingRecord reads

    def _per_step(self, xs: Any, ys: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(features, targets) of each step's batch."""
        if isinstance(xs, torch.Tensor) and xs.stride(0) == 0:
            # The same points at every step (a full batch, expanded without a copy): one feature matrix serves all.
            return itertools.repeat((self.model.features(xs[0]), ys[0]), len(xs))
        # Mini-batches: each batch's features just before its step, while its data is in cache.
        return ((self.model.features(x), y) for x, y in zip(xs, ys, strict=True))

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.log("step", float(self.global_step), sync_dist=True)  # as in training_step: the optimizer step

    def step_lr_schedulers(self, interval: Literal["step", "epoch"]) -> None:
        """Step the configured schedulers as Lightning does under automatic optimization (it leaves them to the
        module under manual): by interval and frequency, ReduceLROnPlateau on its monitor."""
        count = self.global_step if interval == "step" else self.current_epoch + 1
        for config in self.trainer.lr_scheduler_configs:
            if config.interval != interval or count % config.frequency:
                continue
            if config.reduce_on_plateau:
                metric = self.trainer.callback_metrics.get(config.monitor)
                if metric is not None:  # not yet validated: nothing to compare
                    config.scheduler.step(metric)
            else:
                config.scheduler.step()

    def on_train_epoch_end(self) -> None:
        self.step_lr_schedulers("epoch")
