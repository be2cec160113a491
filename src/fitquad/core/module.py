"""The LightningModule: a polynomial model, one of torch's regression losses, and torch.optim.SGD.

The textbook loop: `training_step` returns the loss of one batch and Lightning does the rest (backward, clipping with
`trainer.gradient_clip_val`, the optimizer step, schedulers, `accumulate_grad_batches`, precision plugins and
strategies), as Lightning documents. Validation and test share one step (`_evaluate`), whose loss and torchmetrics
MSE, MAE and R² go through `self.log` for EarlyStopping and ModelCheckpoint to monitor; `train/mse` beside them is the
MSE on the training points at the same moment, so the two curves that tell under- from overfitting are comparable.

What fitquad shows around it lives in callbacks (fitquad.callbacks), fed through Lightning's public outputs: nothing
here is written for them. The one guard the module keeps is its own: a loss that is non-finite or explodes stops the
fit (TrainingDiverged) before that step's update, so no checkpoint of the diverged parameters is written.

    fitquad fit --config configs/lesson3.yaml
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from .losses import LossName, make_loss
from .model import FeatureScaling, PolynomialModel, coefficient_names

# train/mse at each validation is measured on at most this many training points: on millions of points a uniform
# sample (an unbiased estimate at a fraction of an epoch's cost); below that, exact.
TRAIN_MSE_POINTS = 100_000
# A loss this many times the fit's first one is diverging: a stable fit never climbs that far above where it
# started (plain GD on a quadratic only goes down); an unstable one grows geometrically, so this stops it within a
# few steps of the start of the blow-up.
DIVERGENCE_LOSS_FACTOR = 1e4


def diverging(losses: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """The divergence rule, element-wise (one run's steps, or many runs' losses): a loss is bad when it is
    non-finite or DIVERGENCE_LOSS_FACTOR times a positive first loss."""
    return ~torch.isfinite(losses) | ((losses > DIVERGENCE_LOSS_FACTOR * first) & (first > 0))


class TrainingDiverged(RuntimeError):
    """Raised by the training step when the loss is non-finite or exploding; the CLI prints it as one line.

    `largest_stable_lr` is filled in by whoever knows it (fitquad's diagnosis, from the Hessian), not by the module."""

    def __init__(
        self, step: int, loss: float, first_loss: float, lr: float, largest_stable_lr: float | None = None
    ) -> None:
        super().__init__(step, loss, first_loss, lr)
        self.step, self.loss, self.first_loss, self.lr = step, loss, first_loss, lr
        self.largest_stable_lr = largest_stable_lr

    def __str__(self) -> str:
        stable = self.largest_stable_lr
        if stable is None or not math.isfinite(stable):  # unknown, L1, or a degenerate problem
            limit, advice = "", "lower model.lr or clip with trainer.gradient_clip_val"
        else:
            limit = f"the largest stable lr is {stable:.3g}; "
            advice = (
                f"lower model.lr below {stable:.3g}, use model.feature_scaling standardize "
                "(or whiten), or clip with trainer.gradient_clip_val"
            )
        return (
            f"training diverged at step {self.step}: loss {self.loss:.4g} (first step {self.first_loss:.4g}) "
            f"with lr {self.lr:.3g}; {limit}{advice}"
        )


def initialize(
    model: PolynomialModel, train_x: torch.Tensor, init_coefficients: list[float] | None, init_seed: int
) -> None:
    """Fit the model's feature scaling to the training inputs and set its starting parameters: the polynomial
    init_coefficients (original units), or N(0, 1) parameters in the model's own units drawn with init_seed."""
    model.fit_feature_scaling(train_x)
    if init_coefficients is not None:
        model.set_coefficients(init_coefficients)
        return
    theta = torch.randn(model.degree + 1, generator=torch.Generator().manual_seed(init_seed))
    with torch.no_grad():
        model.linear.bias.copy_(theta[:1])
        model.linear.weight.copy_(theta[1:].view(1, -1))


# What QuadraticRegression logs through self.log during a fit: what EarlyStopping and ModelCheckpoint can monitor.
LOGGED_METRICS = ("train/loss", "train/mse", "val/loss", "val/mse", "val/mae", "val/r2")


def evaluation_metrics(prefix: str) -> MetricCollection:
    """MSE, MAE and R² from torchmetrics: MSE is what the noise floor σ² is measured in."""
    return MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()}, prefix=prefix)


class QuadraticRegression(L.LightningModule):
    """A polynomial fitted by torch.optim.SGD (every option in plain sight) under one of torch's losses.

    Args:
        degree: Degree of the polynomial: 2 is a·x² + b·x + c; 1 is the SGD article's Linear(1, 1).
        feature_scaling: "none" fits on raw x; "standardize" on (x − mean)/std, which makes gradient
            descent fast on raw t = 0..19; "whiten" on centred orthonormal powers (Hessian 2·I).
        init_coefficients: Starting polynomial in original units, constant term first (the article's
            line: [-3.0, 6.0]); null draws N(0, 1) parameters in the model's own units with init_seed.
        init_seed: Seed of the random starting parameters when init_coefficients is null.
        loss: One of torch's losses: mse (MSELoss), l1 (L1Loss), huber (HuberLoss), smooth_l1 (SmoothL1Loss).
        huber_delta: HuberLoss's delta: quadratic below it, linear above.
        smooth_l1_beta: SmoothL1Loss's beta: quadratic below it, linear above.
        lr: SGD learning rate (`--optimizer X` on the command line replaces SGD altogether).
        momentum: SGD momentum β (0: plain gradient descent).
        dampening: SGD dampening d: each gradient enters the momentum buffer scaled by 1 − d.
        nesterov: SGD with Nesterov momentum (needs momentum > 0 and dampening 0).
        weight_decay: SGD weight decay λ: minimises loss + λ/2·|θ|² instead of the loss.
    """

    def __init__(
        self,
        degree: int = 2,
        feature_scaling: FeatureScaling = "none",
        init_coefficients: list[float] | None = None,
        init_seed: int = 0,
        loss: LossName = "mse",
        huber_delta: float = 1.0,
        smooth_l1_beta: float = 1.0,
        lr: float = 0.1,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = PolynomialModel(degree, feature_scaling)
        self.loss_fn = make_loss(loss, huber_delta, smooth_l1_beta)
        self.val_metrics = evaluation_metrics("val/")
        self.test_metrics = evaluation_metrics("test/")
        self.coefficient_names = coefficient_names(degree)
        self.first_loss: torch.Tensor | None = None  # the divergence guard's yardstick: this fit's first loss

    def setup(self, stage: str) -> None:
        # Before Lightning restores a checkpoint (which then overwrites both), so a resumed fit keeps the scaling
        # and parameters it was trained with.
        if stage == "fit":
            hp = self.hparams
            initialize(self.model, self.trainer.datamodule.train_x, hp.init_coefficients, hp.init_seed)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.SGD(
            self.parameters(),
            lr=hp.lr,
            momentum=hp.momentum,
            dampening=hp.dampening,
            nesterov=hp.nesterov,
            weight_decay=hp.weight_decay,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def coefficients(self) -> dict[str, float]:
        """The fitted polynomial in original units, by name (a, b, c for the quadratic)."""
        return dict(zip(self.coefficient_names, self.model.coefficients().tolist(), strict=True))

    # ---- training -----------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        self.first_loss = None  # a resumed fit measures from its own first step

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss_fn(self(x), y)
        self.stop_if_diverged(loss.detach(), self.global_step + 1)
        # To the progress bar and the monitors; fitquad's TrainingRecord callback logs every logged step's loss.
        self.log("train/loss", loss, prog_bar=True, logger=False)
        return loss

    def stop_if_diverged(self, losses: torch.Tensor, first_step: int) -> None:
        """Stop the fit when any of `losses` (of steps first_step, first_step + 1, …) is diverging: one host sync."""
        losses = losses.flatten()
        if self.first_loss is None:
            self.first_loss = losses[0]
        bad = diverging(losses, self.first_loss)
        if bad.any():
            index = int(bad.nonzero()[0])
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            raise TrainingDiverged(first_step + index, losses[index].item(), self.first_loss.item(), lr)

    # ---- evaluation: one shared step for validation and test ----------------------------------------------------
    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        x, y = batch
        prediction = self(x)
        loss = self.loss_fn(prediction, y)
        metrics = self.val_metrics if split == "val" else self.test_metrics
        metrics.update(prediction, y)
        # sync_dist: under DDP every process evaluates the whole split, so the mean over processes is the same number;
        # Lightning asks for it on epoch-level metrics (and warns without it).
        self.log(f"{split}/loss", loss, prog_bar=split == "val", sync_dist=True)
        self.log_dict(metrics)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, "test")

    @torch.no_grad()
    def on_validation_epoch_end(self) -> None:
        # MSE on the training points beside the validation MSE, on the same parameters at the same moment (the same
        # in every process: each holds all the points).
        x, y = self.trainer.datamodule.training_sample(TRAIN_MSE_POINTS)
        train_mse = nn.functional.mse_loss(self(x.to(self.device, self.dtype)), y.to(self.device, self.dtype))
        self.log("train/mse", train_mse, sync_dist=True)

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        x, _ = batch
        return {"x": x, "prediction": self(x)}
