"""The LightningModule: a polynomial model, one of torch's regression losses, and torch.optim.SGD.

Run it through the CLI (see README.md):

    fitquad fit --config configs/lesson3.yaml

Every optimizer step goes through Lightning's public manual-optimization API: `optimizer.zero_grad()`,
`self.manual_backward(loss)`, `optimizer.step()` on the LightningOptimizer. So precision plugins (a
gradient scaler unscales before the step), strategies (DDP syncs each backward), every per-step hook
(`on_before_backward`, `on_after_backward`, `on_before_optimizer_step`, torch's optimizer step hooks),
`trainer.global_step` and `max_steps` see each step as Lightning documents them.

Optimization is manual for one reason: a training_step may take several optimizer steps
(`data.fused_steps`, default 1), which amortises Lightning's fixed cost per training_step (its loops,
batch-level callbacks, progress bar) over cheap steps. Batch-level hooks (`on_train_batch_end`,
`ModelCheckpoint(every_n_train_steps)`, LearningRateMonitor) then run once per training_step, that is
once every `fused_steps` optimizer steps; with the default 1 it is the textbook loop.
Gradient clipping is a callback (fitquad.callbacks.clipping.GradientClipping), as Lightning's
`on_before_optimizer_step` hook allows in either optimization mode.

Logging, every `trainer.log_every_n_steps` optimizer steps, through the logger's public `log_metrics`
with the optimizer step as x-axis: train/loss (before the step's update), train/lr, train/grad_norm
(the gradient the update used) and the coefficients. Validation loss and torchmetrics MSE, MAE and R²
go through `self.log`, for EarlyStopping and ModelCheckpoint to monitor.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Literal

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from fitquad.checks.validation import check_enough_points, check_model_options
from fitquad.core.model import FeatureScaling, PolynomialModel, coefficient_names
from fitquad.theory.conditioning import OptimizerSettings, conditioning
from fitquad.theory.shards import WHOLE, Shards
from fitquad.theory.verdicts import TrainingDiverged, diverging

# train/mse at each validation is measured on at most this many training points (see full_training_mse).
TRAIN_MSE_POINTS = 100_000

LossName = Literal["mse", "l1", "huber", "smooth_l1"]


def make_loss(name: LossName, huber_delta: float = 1.0, smooth_l1_beta: float = 1.0) -> nn.Module:
    """torch's own loss modules, by name; mean reduction, as in the SGD article."""
    if name == "mse":
        return nn.MSELoss()
    if name == "l1":
        return nn.L1Loss()
    if name == "huber":
        return nn.HuberLoss(delta=huber_delta)
    if name == "smooth_l1":
        return nn.SmoothL1Loss(beta=smooth_l1_beta)
    raise ValueError(f"model.loss must be one of mse, l1, huber, smooth_l1; got {name!r}")


def initialize(
    model: PolynomialModel,
    train_x: torch.Tensor,
    init_coefficients: list[float] | None,
    init_seed: int,
    shards: Shards = WHOLE,
) -> None:
    """Fit the model's feature scaling to the training inputs (all the shards') and set its starting parameters:
    the polynomial init_coefficients (original units), or N(0, 1) parameters in the model's own units drawn with
    init_seed."""
    model.fit_feature_scaling(train_x, shards)
    if init_coefficients is not None:
        model.set_coefficients(init_coefficients)
        return
    theta = torch.randn(model.degree + 1, generator=torch.Generator().manual_seed(init_seed))
    with torch.no_grad():
        model.linear.bias.copy_(theta[:1])
        model.linear.weight.copy_(theta[1:].view(1, -1))


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
        check_model_options(self.hparams)
        self.automatic_optimization = False  # so that one training_step can take several steps (see above)
        self.model = PolynomialModel(degree, feature_scaling)
        self.loss_fn = make_loss(loss, huber_delta, smooth_l1_beta)
        self.val_metrics = evaluation_metrics("val/")
        self.test_metrics = evaluation_metrics("test/")
        self.coefficient_names = coefficient_names(degree)
        self.train_losses = torch.empty(0)  # the loss of every optimizer step of this fit, in order
        self.steps_recorded = 0
        self.first_step = 0
        self.summary_extras: dict = {}  # what callbacks found (reference, conditioning, diagnosis), for summary.json
        self.logging_now = False  # whether the optimizer step in progress is logged
        self.fusing = False  # whether training_steps take several optimizer steps (fitquad.core.data's fused_steps)
        self.grad_norm: torch.Tensor | None = None  # of the step being logged, read in on_before_optimizer_step

    # ---- set-up -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Before Lightning restores a checkpoint (which then overwrites both), so a resumed fit keeps
        # the scaling and parameters it was trained with.
        if stage == "fit":
            data = self.trainer.datamodule
            check_enough_points(data.train_size, self.hparams.degree)  # points read from a file are counted only now
            self.initialize_parameters(data.train_x, data.shards)

    def initialize_parameters(self, train_x: torch.Tensor, shards: Shards = WHOLE) -> None:
        """Fit the feature scaling to the training inputs (under DDP, all the processes' shards) and set the
        starting parameters."""
        initialize(self.model, train_x, self.hparams.init_coefficients, self.hparams.init_seed, shards)

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

    # ---- training -----------------------------------------------------------------------------
    def on_train_start(self) -> None:
        # On the module's device and in its dtype: no device-to-host copy per step, no float32 rounding
        # of a float64 (precision 64-true) run's losses.
        self.train_losses = torch.empty(1024, dtype=self.dtype, device=self.device)
        self.steps_recorded = 0
        self.first_step = self.global_step  # a resumed fit starts at its checkpoint's step

    def training_step(self, batch: tuple[Any, Any], batch_idx: int) -> torch.Tensor:
        xs, ys = batch  # `fused_steps` batches, one optimizer step each (see fitquad.core.batches.InMemoryBatches)
        optimizer = self.optimizers()
        steps = len(xs)
        self.fusing = self.fusing or steps > 1
        if self.trainer.max_steps > 0:  # never overshoot max_steps inside a fused batch
            steps = min(steps, self.trainer.max_steps - self.global_step)
        # Looked up once per training_step, not per optimizer step: Lightning's properties cost microseconds.
        log_every = self.trainer.log_every_n_steps if self.logger is not None else 0
        step_schedulers = any(config.interval == "step" for config in self.trainer.lr_scheduler_configs)
        losses = []
        for step, (features, target) in enumerate(
            itertools.islice(self._per_step(xs, ys), steps), self.global_step + 1
        ):
            self.logging_now = log_every > 0 and step % log_every == 0
            optimizer.zero_grad()
            loss = self.loss_fn(self.model.forward_features(features), target)
            self.manual_backward(loss)
            lr = optimizer.param_groups[0]["lr"]  # the lr this step uses, before a scheduler changes it
            optimizer.step()
            if step_schedulers:
                self.step_lr_schedulers("step")
            losses.append(loss.detach())
            if self.logging_now:
                self.log_training_step(loss, lr, step)
        first_recorded = self.steps_recorded
        self.record_losses(losses)
        self.stop_if_diverged(first_recorded)
        self.log("train/loss", losses[-1], prog_bar=True, logger=False)
        self.log_optimizer_step(logger=False)
        return losses[-1]

    def _per_step(self, xs: Any, ys: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(features, targets) of each step's batch."""
        if isinstance(xs, torch.Tensor) and xs.stride(0) == 0:
            # Full batch: every step sees the same points, so one feature matrix serves them all.
            return itertools.repeat((self.model.features(xs[0]), ys[0]), len(xs))
        # Mini-batches: each batch's features just before its step, while its data is in cache.
        return ((self.model.features(x), y) for x, y in zip(xs, ys, strict=True))

    def log_optimizer_step(self, logger: bool, sync_dist: bool = False) -> None:
        # Lightning's step for self.log'd metrics, and the {step} in checkpoint names, is the count of
        # training_steps, which is global_step only without fusion. With fused steps, a metric named
        # "step" is what Lightning then uses instead (for the logger's x-axis and checkpoint names).
        if self.fusing:
            self.log("step", float(self.global_step), logger=logger, sync_dist=sync_dist)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning's hook for inspecting gradients: after a gradient scaler has unscaled them and after
        # any clipping callback, so this is the gradient the update uses.
        if self.logging_now:
            self.grad_norm = nn.utils.get_total_norm([p.grad for p in self.parameters() if p.grad is not None])

    def log_training_step(self, loss: torch.Tensor, lr: float, step: int) -> None:
        # The loss is that of the parameters before this step's update (as a plain loop prints it); the
        # coefficients are those after it. Under DDP each process has its shard's loss: the mean over
        # processes is the loss on all the data (a no-op in one process).
        loss = self.trainer.strategy.reduce(loss.detach(), reduce_op="mean")
        metrics = {"train/loss": loss.item(), "train/lr": lr}
        if self.grad_norm is not None:  # None when the scaler skipped the step (non-finite gradients)
            metrics["train/grad_norm"] = self.grad_norm.item()
        self.grad_norm = None
        metrics.update({f"params/{name}": value for name, value in self.coefficients().items()})
        self.logger.log_metrics(metrics, step=step)

    def step_lr_schedulers(self, interval: Literal["step", "epoch"]) -> None:
        """Step the configured schedulers as Lightning does under automatic optimization (it leaves
        them to the module under manual): by interval and frequency, ReduceLROnPlateau on its monitor."""
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

    def record_losses(self, losses: list[torch.Tensor]) -> None:
        # A preallocated buffer that doubles when full: one copy per training_step, no host sync.
        end = self.steps_recorded + len(losses)
        while end > len(self.train_losses):
            self.train_losses = torch.cat([self.train_losses, torch.empty_like(self.train_losses)])
        torch.stack(losses, out=self.train_losses[self.steps_recorded : end])
        self.steps_recorded = end

    def stop_if_diverged(self, first_recorded: int) -> None:
        # The divergence guard: once per training_step (one host sync for all its fused steps, not one per
        # step), a non-finite loss or one DIVERGENCE_LOSS_FACTOR times the first step's stops the fit by an
        # exception: no validation and no checkpoint of the diverged parameters, so the last good one stays.
        losses = self.train_losses[first_recorded : self.steps_recorded]
        first = self.train_losses[0]
        bad = diverging(losses, first)
        if not bad.any():
            return
        index = first_recorded + int(bad.nonzero()[0])
        settings = OptimizerSettings.of(self.optimizers().optimizer)
        # On this process's points alone: under DDP a process may find its shard diverging on its own, and a
        # collective here would wait for processes that never call it. A shard of every k-th point has nearly the
        # whole data's curvature.
        stable = conditioning(self.model, self.trainer.datamodule.train_x, self.loss_fn, settings).largest_stable_lr
        step = self.global_step - (self.steps_recorded - index) + 1
        raise TrainingDiverged(step, self.train_losses[index].item(), first.item(), settings.lr, stable)

    def on_train_end(self) -> None:
        # Under DDP, the recorded losses become the mean over processes, as in log_training_step.
        losses = self.train_losses[: self.steps_recorded].to(self.device)  # NCCL reduces device tensors only
        self.train_losses[: self.steps_recorded] = self.trainer.strategy.reduce(losses, reduce_op="mean").cpu()

    # ---- evaluation: one shared step for validation and test ----------------------------------
    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        x, y = batch[0].flatten(), batch[1].flatten()
        prediction = self.model(x)
        loss = self.loss_fn(prediction, y)
        metrics = self.val_metrics if split == "val" else self.test_metrics
        metrics.update(prediction, y)
        # sync_dist: under DDP every process evaluates the whole split, so the mean over processes is the same
        # number; Lightning asks for it on epoch-level metrics (and warns without it).
        self.log(f"{split}/loss", loss, prog_bar=split == "val", sync_dist=True)
        self.log_dict(metrics)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        # MSE on the whole training set beside the validation MSE: the two curves that tell
        # under- from overfitting, measured on the same parameters at the same moment.
        self.log("train/mse", self.full_training_mse(), sync_dist=True)  # the same in every process, as above
        self.log_optimizer_step(logger=self.logger is not None, sync_dist=True)

    @torch.no_grad()
    def full_training_mse(self) -> torch.Tensor:
        # On millions of points, a uniform sample of TRAIN_MSE_POINTS (an unbiased estimate at a fraction of an
        # epoch's cost, over the whole range of x); below that, exact.
        x, y = self.trainer.datamodule.training_sample(TRAIN_MSE_POINTS)
        x, y = x.to(self.device, self.dtype), y.to(self.device, self.dtype)
        return nn.functional.mse_loss(self.model(x), y)

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        x = batch[0].flatten()
        return {"x": x, "prediction": self.model(x)}
