"""Runs side by side: a few runs on the same data in one LightningModule and one Trainer (`fitquad compare`'s grid).

Each run keeps the arithmetic it has alone in QuadraticRegression: its own PolynomialModel (torch.nn.Linear over
its features), its own torch loss, its own param group of one torch.optim.SGD. The loss minimised is the sum of
the runs' losses, so autograd hands each run the gradient it gets alone (the same kernels on the same numbers),
and SGD updates each parameter by itself: every run's path is bit for bit the one it takes alone, as the SGD
article's grid needs. That is why this is a loop over the runs and not fitquad.many_runs' batched matrix
products, whose other order of additions moves the last bits. It suits a grid of tens of runs; thousands of
draws belong to many_runs.

Per run, as `fitquad fit` does for one: a loss that turns non-finite or climbs DIVERGENCE_LOSS_FACTOR times
above its first marks the run diverged. Its path ends at its last good parameters and it takes no further
steps (with no gradient, SGD leaves it alone); the other runs train on.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn

from fitquad.conditioning import SGD_OPTIONS
from fitquad.model import PolynomialModel
from fitquad.training import initialize, make_loss
from fitquad.verdicts import DIVERGENCE_LOSS_FACTOR


class SideBySide(L.LightningModule):
    """Runs trained side by side on the datamodule's training points, each recording its parameter path.

    Args:
        runs: QuadraticRegression's arguments for each run (degree, feature_scaling, init_coefficients,
            init_seed, loss, huber_delta, smooth_l1_beta, lr, momentum, dampening, nesterov, weight_decay).
        train_x: The training inputs, which each run's feature scaling is fitted to (as QuadraticRegression fits
            it to its datamodule's): the batches come from a training dataloader, with no validation.
    """

    def __init__(self, runs: list[dict[str, Any]], train_x: torch.Tensor) -> None:
        super().__init__()
        self.train_x = train_x
        self.automatic_optimization = False  # several optimizer steps per training_step, as in QuadraticRegression
        self.runs = runs
        self.models = nn.ModuleList(PolynomialModel(o["degree"], o["feature_scaling"]) for o in runs)
        self.loss_fns = [make_loss(o["loss"], o["huber_delta"], o["smooth_l1_beta"]) for o in runs]
        self.paths: list[list[torch.Tensor]] = [[] for _ in runs]  # [bias, weight_1, …] at the start and each step
        self.first_losses: list[float | None] = [None] * len(runs)
        self.diverged: list[tuple[int, float, float] | None] = [None] * len(runs)  # (step, loss, first loss)

    def setup(self, stage: str) -> None:
        if stage == "fit":  # as QuadraticRegression.setup: scaling and starting parameters from the training points
            for model, options in zip(self.models, self.runs, strict=True):
                initialize(model, self.train_x, options["init_coefficients"], options["init_seed"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = zip(self.models, self.runs, strict=True)
        return torch.optim.SGD([{"params": list(m.parameters()), **{k: o[k] for k in SGD_OPTIONS}} for m, o in groups])

    def on_train_start(self) -> None:
        self.record()

    def record(self) -> None:
        for run, model in enumerate(self.models):
            if self.diverged[run] is None:  # as fitquad.parameter_path records one run
                self.paths[run].append(torch.cat([model.linear.bias.detach(), model.linear.weight.detach().view(-1)]))

    def training_step(self, batch: tuple[Any, Any], batch_idx: int) -> None:
        xs, ys = batch  # `fused_steps` batches, one optimizer step each (fitquad.batches.InMemoryBatches)
        optimizer = self.optimizers()
        steps = len(xs)
        if self.trainer.max_steps > 0:  # never overshoot max_steps inside a fused batch
            steps = min(steps, self.trainer.max_steps - self.global_step)
        full_batch = isinstance(xs, torch.Tensor) and xs.stride(0) == 0
        features = [model.features(xs[0]) for model in self.models] if full_batch else None
        for step in range(steps):
            x, y = xs[step], ys[step]
            optimizer.zero_grad()
            total = None
            for run, (model, loss_fn) in enumerate(zip(self.models, self.loss_fns, strict=True)):
                if self.diverged[run] is not None:
                    continue
                loss = loss_fn(model.forward_features(features[run] if full_batch else model.features(x)), y)
                if self.is_diverging(run, loss.item()):
                    continue
                total = loss if total is None else total + loss
            if total is None:  # every run has diverged
                self.trainer.should_stop = True
                return
            self.manual_backward(total)
            optimizer.step()
            self.record()

    def is_diverging(self, run: int, loss: float) -> bool:
        """Whether this loss marks the run diverged, as QuadraticRegression.stop_if_diverged judges one run."""
        first = self.first_losses[run] = loss if self.first_losses[run] is None else self.first_losses[run]
        if math.isfinite(loss) and not (first > 0 and loss > DIVERGENCE_LOSS_FACTOR * first):
            return False
        self.diverged[run] = (self.global_step + 1, loss, first)
        if len(self.paths[run]) > 1:  # the parameters that gave this loss: the path ends at the last good ones
            self.paths[run].pop()
        return True

    def path(self, run: int) -> torch.Tensor:
        """(rows, degree + 1) [bias, weight_1, …] of the run: its start and every step it took."""
        return torch.stack(self.paths[run])
