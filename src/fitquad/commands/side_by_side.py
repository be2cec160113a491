"""Runs side by side: a few runs on the same data in one LightningModule and one Trainer (`fitquad compare`'s grid).

Each run keeps the arithmetic it has alone in QuadraticRegression: its own PolynomialModel (torch.nn.Linear over
its features), its own torch loss, its own param group of one torch.optim.SGD. The loss minimised is the sum of
the runs' losses, so autograd hands each run the gradient it gets alone (the same kernels on the same numbers),
and SGD updates each parameter by itself: every run's path is bit for bit the one it takes alone, as the SGD
article's grid needs. That is why this is a loop over the runs and not fitquad.commands.many_runs' batched matrix
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

from fitquad.core.losses import make_loss
from fitquad.core.model import PolynomialModel
from fitquad.core.module import diverging, initialize
from fitquad.theory.conditioning import SGD_OPTIONS


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
        self.first_losses = torch.full((len(runs),), math.nan)  # each run's first loss, the divergence yardstick
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
            if self.diverged[run] is None:  # as fitquad.callbacks.parameter_path records one run
                self.paths[run].append(torch.cat([model.linear.bias.detach(), model.linear.weight.detach().view(-1)]))

    def training_step(self, batch: tuple[Any, Any], batch_idx: int) -> None:
        xs, ys = batch  # one optimizer step's batch (1-D), or several stacked (fitquad.core.data.InMemoryBatches)
        if xs.dim() == 1:
            xs, ys = xs.unsqueeze(0), ys.unsqueeze(0)
        optimizer = self.optimizers()
        steps = len(xs)
        if self.trainer.max_steps > 0:  # never overshoot max_steps inside a fused batch
            steps = min(steps, self.trainer.max_steps - self.global_step)
        full_batch = isinstance(xs, torch.Tensor) and xs.stride(0) == 0
        features = [model.features(xs[0]) for model in self.models] if full_batch else None
        for step in range(steps):
            x, y = xs[step], ys[step]
            optimizer.zero_grad()
            live = [run for run in range(len(self.models)) if self.diverged[run] is None]
            losses = []
            for run in live:
                model = self.models[run]
                inputs = features[run] if full_batch else model.features(x)
                losses.append(self.loss_fns[run](model.forward_features(inputs), y))
            total = None
            for loss, bad in zip(losses, self.judge(live, losses), strict=True):
                if not bad:  # a run's loss enters the sum alone, in run order: the gradient it gets alone
                    total = loss if total is None else total + loss
            if total is None:  # every run has diverged
                self.trainer.should_stop = True
                return
            self.manual_backward(total)
            optimizer.step()
            self.record()

    def judge(self, live: list[int], losses: list[torch.Tensor]) -> list[bool]:
        """Which of these runs' losses mark them diverged, by the rule QuadraticRegression.stop_if_diverged applies
        to one run (one host sync for all runs); a diverged run's path ends at its last good parameters."""
        values = torch.stack([loss.detach() for loss in losses])
        known = self.first_losses[live]
        self.first_losses[live] = first = torch.where(known.isnan(), values, known)
        bad = diverging(values, first).tolist()
        for run, loss, first_loss, is_bad in zip(live, values.tolist(), first.tolist(), bad, strict=True):
            if is_bad:
                self.diverged[run] = (self.global_step + 1, loss, first_loss)
                if len(self.paths[run]) > 1:  # the parameters that gave this loss: drop them
                    self.paths[run].pop()
        return bad

    def path(self, run: int) -> torch.Tensor:
        """(rows, degree + 1) [bias, weight_1, …] of the run: its start and every step it took."""
        return torch.stack(self.paths[run])
