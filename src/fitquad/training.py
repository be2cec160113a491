"""The LightningModule: a polynomial model, one of torch's regression losses, and torch.optim.SGD.

Run it through the CLI (see README.md):

    fitquad fit --config configs/lesson3.yaml

Optimization is manual (`automatic_optimization = False`) for one reason, speed: each training_step
receives `steps` consecutive batches (see `fitquad.data.InMemoryBatches`) and takes one optimizer step
on each in a plain loop, the same five lines as a hand-written PyTorch loop: zero_grad, forward, loss,
backward, clip, step. That amortises Lightning's fixed cost per training_step over many steps, and
the numbers are identical to a plain loop (tests/test_training.py checks this step for step).
Because Lightning refuses Trainer(gradient_clip_val=...) under manual optimization, clipping is done
here, with the Trainer's own options moved onto this module by the CLI (see cli.py).

Logging: train loss, learning rate, gradient norm and the coefficients go straight to the logger every
`trainer.log_every_n_steps` optimizer steps, with the optimizer step as x-axis; validation loss and
torchmetrics MSE, MAE and R² go through `self.log` once per validation, for EarlyStopping and
ModelCheckpoint to monitor.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Iterator
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.plugins.precision import DoublePrecision, Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from fitquad.conditioning import OptimizerSettings, conditioning
from fitquad.diagnosis import DIVERGENCE_LOSS_FACTOR, TrainingDiverged
from fitquad.model import FeatureScaling, PolynomialModel, coefficient_names
from fitquad.scalars import log_scalars
from fitquad.validation import check_model_options

# train/mse at each validation is measured on at most this many training points (see full_training_mse).
TRAIN_MSE_POINTS = 100_000

LossName = Literal["mse", "l1", "huber", "smooth_l1"]
GradientClipAlgorithm = Literal["norm", "value"]


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


def evaluation_metrics(prefix: str) -> MetricCollection:
    """MSE, MAE and R² from torchmetrics: MSE is what the noise floor σ² is measured in."""
    return MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()}, prefix=prefix)


class QuadraticRegression(L.LightningModule):
    def __init__(
        self,
        # The model: a polynomial of this degree (2: a·x² + b·x + c; 1: the article's Linear(1, 1)).
        degree: int = 2,
        # "standardize" fits on (x − mean)/std, which makes gradient descent fast on raw t = 0..19.
        feature_scaling: FeatureScaling = "none",
        # Starting polynomial in original units, constant term first (the article's line: [-3.0, 6.0]).
        # None: N(0, 1) random parameters in the model's own units, drawn with init_seed.
        init_coefficients: list[float] | None = None,
        init_seed: int = 0,
        # The loss, one of torch's: MSELoss, L1Loss, HuberLoss(delta), SmoothL1Loss(beta).
        loss: LossName = "mse",
        huber_delta: float = 1.0,
        smooth_l1_beta: float = 1.0,
        # torch.optim.SGD, every option in plain sight. (`--optimizer X` on the command line replaces it.)
        lr: float = 0.1,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        # Gradient clipping before each step, as Trainer(gradient_clip_val, gradient_clip_algorithm)
        # would do it; the CLI moves the Trainer's values here. None: no clipping.
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: GradientClipAlgorithm = "norm",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_model_options(self.hparams)
        self.automatic_optimization = False
        self.model = PolynomialModel(degree, feature_scaling)
        self.loss_fn = make_loss(loss, huber_delta, smooth_l1_beta)
        self.val_metrics = evaluation_metrics("val/")
        self.test_metrics = evaluation_metrics("test/")
        self.coefficient_names = coefficient_names(degree)
        self.train_losses = torch.empty(0)  # the loss of every optimizer step of this fit, in order
        self.steps_recorded = 0
        self.summary_extras: dict = {}  # what callbacks found (reference, conditioning, diagnosis), for summary.json
        # Off unless a callback asks (fitquad.landscape.LossLandscape): then parameter_path[k] holds
        # [bias, weight_1, …] after k optimizer steps (row 0: the start), in the model's own units.
        self.record_parameter_path = False
        self.parameter_path = torch.empty(0)
        self.parameters_recorded = 0

    # ---- set-up -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Before Lightning restores a checkpoint (which then overwrites both), so a resumed fit keeps
        # the scaling and parameters it was trained with.
        if stage == "fit":
            self.initialize_parameters(self.trainer.datamodule.train_x)

    def initialize_parameters(self, train_x: torch.Tensor) -> None:
        """Fit the feature scaling to the training inputs and set the starting parameters."""
        self.model.fit_feature_scaling(train_x)
        if self.hparams.init_coefficients is not None:
            self.model.set_coefficients(self.hparams.init_coefficients)
            return
        generator = torch.Generator().manual_seed(self.hparams.init_seed)
        theta = torch.randn(self.hparams.degree + 1, generator=generator)
        with torch.no_grad():
            self.model.linear.bias.copy_(theta[:1])
            self.model.linear.weight.copy_(theta[1:].view(1, -1))

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
        # On the module's device and in its dtype: no device-to-host copy per step, no float32 rounding of
        # a float64 (precision 64-true) run's losses.
        self.train_losses = torch.empty(1024, dtype=self.dtype, device=self.device)
        self.steps_recorded = 0
        # The inner loop's per-step calls, chosen once. Each does exactly what Lightning's and torch's
        # wrappers do, minus per-step dispatch that measured ~0.3 ms of a ~0.4 ms step (benchmarks/):
        # - backward: Lightning's manual_backward only adds hook calls when there is one process and no
        #   gradient scaler; otherwise (DDP, mixed precision) it is needed and used.
        # - optimizer step: the optimizer's own step function without torch's profiling/hook wrapper,
        #   under no_grad as that wrapper would set it. Per-step optimizer hooks therefore do not run.
        plain_backward = isinstance(self.trainer.strategy, SingleDeviceStrategy) and type(
            self.trainer.precision_plugin
        ) in (Precision, DoublePrecision)
        self._backward = torch.Tensor.backward if plain_backward else self.manual_backward
        self._raw_optimizer_step = inspect.unwrap(type(self.optimizers().optimizer).step)
        # - zero_grad: setting .grad to None is what optimizer.zero_grad() does by default, without its
        #   profiler and dynamo wrappers (7 µs a step, measured).
        self._optimized_parameters = [p for group in self.optimizers().optimizer.param_groups for p in group["params"]]
        if self.record_parameter_path:
            weight = self.model.linear.weight
            self.parameter_path = torch.empty(1024, self.hparams.degree + 1, dtype=weight.dtype, device=weight.device)
            self.parameters_recorded = 0
            with torch.no_grad():
                torch.cat(self._parameter_views(), out=self._parameter_path_rows(1)[0])  # the starting point
            self.parameters_recorded = 1

    def _parameter_views(self) -> tuple[torch.Tensor, torch.Tensor]:
        # [bias, weights] as views of the live parameters: the optimizer updates them in place.
        return self.model.linear.bias.detach(), self.model.linear.weight.detach().view(-1)

    def _parameter_path_rows(self, steps: int) -> torch.Tensor:
        # The next `steps` rows of a preallocated buffer that doubles when full, as for the losses.
        end = self.parameters_recorded + steps
        while end > len(self.parameter_path):
            self.parameter_path = torch.cat([self.parameter_path, torch.empty_like(self.parameter_path)])
        return self.parameter_path[self.parameters_recorded : end]

    def _record_losses(self, losses: list[torch.Tensor]) -> None:
        # A preallocated buffer that doubles when full: one copy per training_step, no host sync.
        end = self.steps_recorded + len(losses)
        while end > len(self.train_losses):
            self.train_losses = torch.cat([self.train_losses, torch.empty_like(self.train_losses)])
        if losses:
            torch.stack(losses, out=self.train_losses[self.steps_recorded : end])
        self.steps_recorded = end

    def _count_optimizer_steps(self, steps: int) -> None:
        # The raw optimizer step bypasses Lightning's wrapper, so advance the counter behind
        # trainer.global_step ourselves: max_steps, checkpoints and resume then count true steps.
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        for tracker in (progress.total, progress.current):
            tracker.ready += steps
            tracker.completed += steps

    def _per_step(self, xs: torch.Tensor | tuple[torch.Tensor, ...], ys) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(features, targets) of each step's batch."""
        if isinstance(xs, torch.Tensor) and xs.stride(0) == 0:
            # Full batch: every step sees the same points, so one feature matrix serves them all.
            return itertools.repeat((self.model.features(xs[0]), ys[0]), len(xs))
        # Mini-batches: each batch's features just before its step, while its data is in cache.
        return ((self.model.features(x), y) for x, y in zip(xs, ys, strict=True))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        xs, ys = batch  # `steps` batches, one optimizer step each: a (steps, batch_size) tensor or a tuple
        first_step = self.global_step
        steps = len(xs)
        if self.trainer.max_steps > 0:  # never overshoot max_steps inside a fused batch
            steps = min(steps, self.trainer.max_steps - first_step)
        # Everything the loop needs, looked up once: Lightning's properties cost microseconds each.
        optimizer = self.optimizers().optimizer  # the torch optimizer itself, without Lightning's wrapper
        log_every = self.trainer.log_every_n_steps if self.logger is not None else 0
        clip_val, clip_algorithm = self.hparams.gradient_clip_val, self.hparams.gradient_clip_algorithm
        model, loss_fn, backward, optimizer_step = self.model, self.loss_fn, self._backward, self._raw_optimizer_step
        parameters = self._optimized_parameters
        losses = []
        record_path = self.record_parameter_path
        if record_path:  # one copy per step into its own row: no allocation, no host sync
            path_rows, path_views = self._parameter_path_rows(steps), self._parameter_views()
        step_numbers = range(first_step + 1, first_step + steps + 1)  # may stop short of the batch: max_steps
        for step, (features, target) in zip(step_numbers, self._per_step(xs, ys), strict=False):
            # The textbook step, the same calls as a plain PyTorch loop.
            for parameter in parameters:  # optimizer.zero_grad()
                parameter.grad = None
            loss = loss_fn(model.forward_features(features), target)
            backward(loss)
            logging_now = log_every and step % log_every == 0
            if logging_now:  # read before clipping and the update: what this step saw
                grad_norm, lr = self._gradient_norm(), optimizer.param_groups[0]["lr"]
            if clip_val is not None:
                self.clip_gradients(optimizer, clip_val, clip_algorithm)
            with torch.no_grad():
                optimizer_step(optimizer)
                if record_path:
                    torch.cat(path_views, out=path_rows[step - first_step - 1])
            losses.append(loss.detach())
            if logging_now:
                self._log_training_step(step, loss, grad_norm, lr)
        self._count_optimizer_steps(steps)
        first_recorded = self.steps_recorded
        self._record_losses(losses)
        if record_path:
            self.parameters_recorded += steps
        self._stop_if_diverged(first_recorded, optimizer.param_groups[0]["lr"])
        self.log("train/loss", losses[-1], prog_bar=True, logger=False)
        return losses[-1]

    def _stop_if_diverged(self, first_recorded: int, lr: float) -> None:
        # The divergence guard: once per training_step (one host sync for all its fused steps, not one per
        # step), a non-finite loss or one DIVERGENCE_LOSS_FACTOR times the first step's stops the fit by an
        # exception: no validation and no checkpoint of the diverged parameters, so the last good one stays.
        losses = self.train_losses[first_recorded : self.steps_recorded]
        first = self.train_losses[0]
        bad = ~torch.isfinite(losses) | ((losses > DIVERGENCE_LOSS_FACTOR * first) & (first > 0))
        if not bad.any():
            return
        index = first_recorded + int(bad.nonzero()[0])
        settings = OptimizerSettings.of(self.optimizers().optimizer)
        stable = conditioning(self.model, self.trainer.datamodule.train_x, self.loss_fn, settings).largest_stable_lr
        step = self.global_step - (self.steps_recorded - index) + 1
        raise TrainingDiverged(step, self.train_losses[index].item(), first.item(), lr, stable)

    def _gradient_norm(self) -> torch.Tensor:
        return torch.nn.utils.get_total_norm([p.grad for p in self.parameters() if p.grad is not None])

    def _log_training_step(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor, lr: float) -> None:
        # The loss is that of the parameters before this step's update (as a plain loop prints it);
        # the coefficients are those after it. Under DDP each process has its shard's loss: the mean
        # over processes is the loss on all the data (a no-op in one process).
        loss = self.trainer.strategy.reduce(loss.detach(), reduce_op="mean")
        metrics = {"train/loss": loss.item(), "train/lr": lr, "train/grad_norm": grad_norm.item()}
        metrics.update({f"params/{name}": value for name, value in self.coefficients().items()})
        log_scalars(self.logger, metrics, step)

    def on_train_end(self) -> None:
        # Under DDP, the recorded losses become the mean over processes, as in _log_training_step.
        losses = self.train_losses[: self.steps_recorded].to(self.device)  # NCCL reduces device tensors only
        self.train_losses[: self.steps_recorded] = self.trainer.strategy.reduce(losses, reduce_op="mean").cpu()

    def on_train_epoch_end(self) -> None:
        # Manual optimization steps schedulers itself; once per epoch, Lightning's default interval.
        scheduler = self.lr_schedulers()
        if scheduler is None:
            return
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            monitor = self.trainer.lr_scheduler_configs[0].monitor or "val/loss"
            scheduler.step(self.trainer.callback_metrics[monitor])
        else:
            scheduler.step()

    # ---- evaluation: one shared step for validation and test ----------------------------------
    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        x, y = batch[0].flatten(), batch[1].flatten()
        prediction = self.model(x)
        loss = self.loss_fn(prediction, y)
        metrics = self.val_metrics if split == "val" else self.test_metrics
        metrics.update(prediction, y)
        self.log(f"{split}/loss", loss, prog_bar=split == "val")
        self.log_dict(metrics)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        # MSE on the whole training set beside the validation MSE: the two curves that tell
        # under- from overfitting, measured on the same parameters at the same moment.
        self.log("train/mse", self.full_training_mse())
        # A metric named "step" is Lightning's x-axis for the others: the optimizer step, as for train/loss.
        # (Otherwise Lightning would use its count of training_step calls, which fused steps make smaller.)
        self.log("step", float(self.global_step))

    @torch.no_grad()
    def full_training_mse(self) -> torch.Tensor:
        # At most the first TRAIN_MSE_POINTS training points: they are i.i.d. draws, so on millions of
        # points this is an unbiased estimate at a fraction of an epoch's cost; below that, exact.
        datamodule = self.trainer.datamodule
        x = datamodule.train_x[:TRAIN_MSE_POINTS].to(self.device, self.dtype)
        y = datamodule.train_y[:TRAIN_MSE_POINTS].to(self.device, self.dtype)
        return nn.functional.mse_loss(self.model(x), y)

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        x = batch[0].flatten()
        return {"x": x, "prediction": self.model(x)}
