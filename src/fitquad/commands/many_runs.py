"""Many runs as one model: independent polynomial fits trained side by side by one LightningModule in one Trainer,
run r exactly what QuadraticRegression would train alone on its points (full batch). `fitquad sweep` trains its values
and draws this way; how the runs are kept apart (padding, per-run SGD, clipping, divergence): docs/how-it-works.md.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import nn

from fitquad.core.losses import make_loss
from fitquad.core.model import PolynomialModel
from fitquad.core.module import diverging, initialize
from fitquad.theory.conditioning import SGD_OPTIONS


@dataclass
class Split:
    """One split of every run's points, padded with zeros to the longest: (runs, longest) tensors."""

    x: torch.Tensor
    y: torch.Tensor
    count: torch.Tensor  # (runs,) points per run

    @classmethod
    def stack(cls, points: list[tuple[torch.Tensor, torch.Tensor]]) -> Split:
        longest = max(len(x) for x, _ in points)
        x, y = torch.zeros(len(points), longest), torch.zeros(len(points), longest)
        for run, (run_x, run_y) in enumerate(points):
            x[run, : len(run_x)], y[run, : len(run_y)] = run_x, run_y
        return cls(x, y, torch.tensor([len(run_x) for run_x, _ in points]))

    def points(self, run: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Run `run`'s own points, unpadded."""
        n = int(self.count[run])
        return self.x[run, :n], self.y[run, :n]


@dataclass
class OnDevice:
    """One split of every run as the module computes with it: (runs, points, P) design rows, (runs, points) targets
    and 1 where a row is a point (0: padding), (runs,) points per run."""

    design: torch.Tensor
    y: torch.Tensor
    count: torch.Tensor
    real: torch.Tensor


class ManyRunsData(L.LightningDataModule):
    """The runs' training and validation points, stacked run by run (run r = group r // draws, draw r % draws).

    Args:
        train: Each run's training points (x, y).
        val: Each run's validation points (x, y), in the same order.
        steps_per_epoch: Optimizer steps between validations.
        fused_steps: Optimizer steps taken inside one training_step (as data.fused_steps).
    """

    def __init__(
        self,
        train: list[tuple[torch.Tensor, torch.Tensor]],
        val: list[tuple[torch.Tensor, torch.Tensor]],
        steps_per_epoch: int,
        fused_steps: int,
    ) -> None:
        super().__init__()
        self.train, self.val = Split.stack(train), Split.stack(val)
        self.steps_per_epoch, self.fused_steps = steps_per_epoch, fused_steps

    def train_dataloader(self) -> list[int]:
        # Full batch: the module holds every run's design matrix, so a batch is only how many optimizer
        # steps its training_step takes.
        whole, rest = divmod(self.steps_per_epoch, self.fused_steps)
        return [self.fused_steps] * whole + ([rest] if rest else [])

    def val_dataloader(self) -> list[int]:
        return [0] if int(self.val.count.max()) > 0 else []


def loss_of(options: dict[str, Any]) -> tuple:
    """What decides a group's loss function."""
    return options["loss"], options["huber_delta"], options["smooth_l1_beta"]


class ManyRuns(L.LightningModule):
    """Groups of runs, each group one model and SGD setting trained on `draws` data draws.

    Args:
        groups: QuadraticRegression's arguments for each group (degree, feature_scaling, init_coefficients,
            init_seed, loss, huber_delta, smooth_l1_beta, lr, momentum, dampening, nesterov, weight_decay).
        draws: Runs per group: the data module holds groups × draws runs, group by group.
    """

    def __init__(self, groups: list[dict[str, Any]], draws: int) -> None:
        super().__init__()
        self.automatic_optimization = False  # several optimizer steps per training_step, as in QuadraticRegression
        self.groups, self.draws = groups, draws
        self.runs = len(groups) * draws
        self.width = max(options["degree"] for options in groups) + 1
        self.thetas = nn.ParameterList()
        # Each run's PolynomialModel (float64): its feature scaling, fitted on its own points, and the feature map
        # its design rows come from. A plain list, not submodules: Lightning's precision leaves them in float64.
        self.run_models: list[PolynomialModel] = []
        # Consecutive groups with the same loss share one per-point loss module (the loss table's, reduction
        # "none"): (first run, end run, loss).
        self.loss_segments: list[tuple[int, int, nn.Module]] = []
        for group, options in enumerate(groups):
            start, key = group * draws, loss_of(options)
            if self.loss_segments and loss_of(groups[group - 1]) == key:
                self.loss_segments[-1] = (self.loss_segments[-1][0], start + draws, self.loss_segments[-1][2])
            else:
                self.loss_segments.append((start, start + draws, make_loss(*key, reduction="none")))

    # ---- set-up -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # As QuadraticRegression.setup: each run's scaling and starting parameters from its own training points,
        # before Lightning converts the parameters to the run's precision.
        if stage != "fit" or self.run_models:
            return
        train = self.trainer.datamodule.train
        rows = torch.zeros(self.runs, self.width)
        for run in range(self.runs):
            options = self.groups[run // self.draws]
            model = PolynomialModel(options["degree"], options["feature_scaling"])  # float32, as the module's
            initialize(model, train.points(run)[0], options["init_coefficients"], options["init_seed"])
            parameters = model.model_parameters()
            rows[run, : len(parameters)] = parameters
            self.run_models.append(model.double())
        self.thetas.extend(nn.Parameter(group_rows.clone()) for group_rows in rows.split(self.draws))

    def on_device(self, split: Split) -> OnDevice:
        """A split's design rows [1, features] of every run, (runs, points, P) in the module's dtype and zero where
        padded (each run's own PolynomialModel.features, as QuadraticRegression computes them), with its targets."""
        design = torch.zeros(self.runs, split.x.shape[1], self.width, dtype=self.dtype, device=self.device)
        for run, model in enumerate(self.run_models):
            x = split.points(run)[0].to(self.device, self.dtype)
            design[run, : len(x), 0] = 1.0
            design[run, : len(x), 1 : model.degree + 1] = model.to(self.device).features(x)
        real = (design[..., 0] != 0).to(self.dtype)  # which rows are points, not padding (a point's constant is 1)
        return OnDevice(design, split.y.to(self.device, self.dtype), split.count.to(self.device, self.dtype), real)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = zip(self.thetas, self.groups, strict=True)
        return torch.optim.SGD([{"params": [theta], **{k: o[k] for k in SGD_OPTIONS}} for theta, o in groups])

    def on_fit_start(self) -> None:
        # After Lightning has converted the parameters to the run's precision (64-true: float64), before any step.
        data = self.trainer.datamodule
        self.train_points, self.val_points = self.on_device(data.train), self.on_device(data.val)
        self.padded = bool((data.train.count != data.train.x.shape[1]).any())
        self.first_loss = torch.full((self.runs,), torch.nan, dtype=self.dtype, device=self.device)
        self.frozen = torch.zeros(self.runs, dtype=torch.bool, device=self.device)
        self.diverged_step = torch.zeros(self.runs, dtype=torch.long, device=self.device)
        self.diverged_loss = torch.zeros(self.runs, dtype=self.dtype, device=self.device)
        self.last_good = self.parameters_now()

    def parameters_now(self) -> torch.Tensor:
        """(runs, P): every run's parameters, a copy."""
        return torch.cat([theta.detach() for theta in self.thetas])

    # ---- training -----------------------------------------------------------------------------
    def predictions(self, design: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return torch.bmm(design, theta.unsqueeze(-1)).squeeze(-1)

    def run_losses(self, theta: torch.Tensor) -> torch.Tensor:
        """(runs,) each run's mean loss over its own training points."""
        train = self.train_points
        prediction = self.predictions(train.design, theta)
        pointwise = torch.cat([loss(prediction[a:b], train.y[a:b]) for a, b, loss in self.loss_segments])
        if self.padded:  # runs with fewer points than the longest: their padding is no data
            pointwise = pointwise * train.real
        return pointwise.sum(-1) / train.count

    def training_step(self, steps: int, batch_idx: int) -> None:
        optimizer = self.optimizers()
        if self.trainer.max_steps > 0:  # never overshoot max_steps inside a fused batch
            steps = min(steps, self.trainer.max_steps - self.global_step)
        log_every = self.trainer.log_every_n_steps if self.loggers else 0
        for _ in range(steps):
            optimizer.zero_grad()
            theta = torch.cat(list(self.thetas))
            losses = self.run_losses(theta)
            self.manual_backward(losses.sum())
            self.watch_for_divergence(losses.detach(), theta.detach())
            optimizer.step()
            self.restore_frozen()
            if log_every and self.global_step % log_every == 0:
                self.log_group_means({"train/loss": losses.detach()})

    def watch_for_divergence(self, losses: torch.Tensor, theta: torch.Tensor) -> None:
        # On the device, without a host sync per step. A run's first loss is its yardstick, as in
        # QuadraticRegression.stop_if_diverged; a bad loss freezes the run at the parameters of its last good one.
        self.first_loss = torch.where(self.first_loss.isnan(), losses, self.first_loss)
        bad = diverging(losses, self.first_loss)
        newly = bad & ~self.frozen
        self.diverged_step = torch.where(newly, self.global_step + 1, self.diverged_step)
        self.diverged_loss = torch.where(newly, losses, self.diverged_loss)
        self.frozen |= bad
        self.last_good = torch.where(self.frozen.unsqueeze(-1), self.last_good, theta)

    @torch.no_grad()
    def restore_frozen(self) -> None:
        kept = torch.where(self.frozen.unsqueeze(-1), self.last_good, self.parameters_now())
        for group, theta in enumerate(self.thetas):
            theta.copy_(kept[group * self.draws : (group + 1) * self.draws])

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:  # fmt: skip
        # Each run's gradient by itself, as torch.nn.utils.clip_grad_norm_ / clip_grad_value_ clip one model's.
        if gradient_clip_val is None:
            return
        for theta in self.thetas:
            if gradient_clip_algorithm == "value":
                theta.grad.clamp_(-gradient_clip_val, gradient_clip_val)
            else:
                norms = theta.grad.norm(dim=1, keepdim=True)
                theta.grad.mul_((gradient_clip_val / (norms + 1e-6)).clamp(max=1.0))

    # ---- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def mse(self, split: str) -> torch.Tensor:
        """(runs,) each run's MSE on its own points of the split, in the module's dtype."""
        points = self.train_points if split == "train" else self.val_points
        errors = self.predictions(points.design, self.parameters_now()) - points.y
        return (errors**2 * points.real).sum(-1) / points.count

    def validation_step(self, batch: int, batch_idx: int) -> None:
        self.log_group_means({"train/mse": self.mse("train"), "val/mse": self.mse("val")})

    def log_group_means(self, values: dict[str, torch.Tensor]) -> None:
        """Each group's mean over its runs still training, to the group's own logger (one TensorBoard run per
        group, not one per draw)."""
        live = (~self.frozen).to(self.dtype).view(len(self.groups), self.draws)
        means = {name: ((v.view_as(live) * live).nansum(-1) / live.sum(-1)).tolist() for name, v in values.items()}
        for group, logger in enumerate(self.loggers):
            logger.log_metrics({name: mean[group] for name, mean in means.items()}, step=self.global_step)

    def trained_model(self, run: int) -> PolynomialModel:
        """Run `run` as a float64 PolynomialModel: its scaling and its trained parameters."""
        group, draw = divmod(run, self.draws)
        model = copy.deepcopy(self.run_models[run]).cpu()
        theta = self.thetas[group][draw].detach().double().cpu()  # this run's row only
        with torch.no_grad():
            model.linear.bias.copy_(theta[:1])
            model.linear.weight.copy_(theta[1 : model.degree + 1].view(1, -1))
        return model
