"""FitDiagnosis: the closed-form reference and the conditioning at fit start, `reference/relative_gap` while training,
and at the end the verdict of fitquad.theory.verdicts in plain words and in numbers, with the figures.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping

from fitquad.callbacks.record import StepLosses, logged_steps
from fitquad.callbacks.summary import run_folder, say
from fitquad.checks.limits import check_first_step
from fitquad.core.losses import loss_shape, make_loss
from fitquad.core.module import TrainingDiverged
from fitquad.theory.conditioning import OptimizerSettings, conditioning, predicted_steps_to_gap
from fitquad.theory.passes import evaluate, float64_copy
from fitquad.theory.precision import float32_update_error
from fitquad.theory.reference import (
    estimated_noise_std,
    loss_resolution,
    optimum,
    relative_gap,
    training_noise_floor,
    validation_noise_floor,
)
from fitquad.theory.verdicts import CONVERGED_GAP, Diagnosis, FitFacts, diagnose


class FitDiagnosis(L.Callback):
    """Always on (the CLI adds it): what the fit can reach, how it got there, and why (the diagnosis).

    The reference and conditioning at fit start, the relative gap during training, the diagnosis and figures at
    the end. Its findings go into summary.json: RunSummary asks for them (`summary_entries`).

    Args:
        figures: Draw the fit and its residuals (PNG in the run folder and TensorBoard's IMAGES tab);
            false skips matplotlib altogether.
    """

    def __init__(self, figures: bool = True) -> None:
        self.figures = figures
        self.found: dict = {}  # the reference, the conditioning and the diagnosis, for summary.json

    def summary_entries(self) -> dict:
        """What this fit's diagnosis found, for summary.json (RunSummary asks)."""
        return self.found

    # ---- fit start: reference and conditioning ------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        optimizer = trainer.optimizers[0]
        self.settings = OptimizerSettings.of(optimizer)
        self.sgd = isinstance(optimizer, torch.optim.SGD)
        model = pl_module.model
        # Under DDP every process holds all the training points: every process computes the same numbers.
        train = (datamodule.train_x, datamodule.train_y)
        start = pl_module.hparams.init_coefficients
        check_first_step(model, *train, self.settings.lr, self.settings.weight_decay, trainer.precision, start)
        self.reference = optimum(model, *train, pl_module.loss_fn, self.settings.weight_decay)
        self.conditioning = conditioning(model, datamodule.train_x, pl_module.loss_fn, self.settings)
        # An exact fit (noise-free data, or as many points as parameters) has an optimum of float64 rounding, ~0:
        # its gap is measured against what the run's own precision can resolve (reference.relative_gap), scaled
        # so that "within CONVERGED_GAP" means "down to the rounding floor".
        data = (model, *train, self.reference.parameters)
        l1 = loss_shape(pl_module.loss_fn).absolute
        exact_fit = self.reference.train_loss <= loss_resolution(*data, torch.float64, l1)
        self.resolution = loss_resolution(*data, pl_module.dtype, l1) / CONVERGED_GAP if exact_fit else 0.0
        steps = self.steps_to_go(model.model_parameters())
        n_parameters = len(self.reference.parameters)
        # Your own data's σ is unknown: estimated from the least-squares optimum's residuals instead (the
        # reference itself, when it is that optimum: MSE without weight decay).
        self.noise_std, self.noise_estimated = datamodule.true_noise_std, datamodule.true_noise_std is None
        if self.noise_estimated:
            least_squares = self.reference
            if not loss_shape(pl_module.loss_fn).quadratic or self.settings.weight_decay:
                least_squares = optimum(model, *train, make_loss("mse"))
            self.noise_std = estimated_noise_std(least_squares.train_mse, datamodule.train_size, n_parameters)
        floors = dict.fromkeys(("train_noise_floor", "val_noise_floor"))
        if self.noise_std is not None:
            floors["train_noise_floor"] = training_noise_floor(self.noise_std, datamodule.train_size, n_parameters)
            floors["val_noise_floor"] = validation_noise_floor(self.noise_std)
        reference = {
            "train_loss_optimum": self.reference.train_loss,
            "train_mse_optimum": self.reference.train_mse,
            "coefficients": dict(zip(pl_module.coefficient_names, self.reference.coefficients.tolist(), strict=True)),
            "noise_std": self.noise_std,
            "noise_std_estimated": self.noise_estimated,
            **floors,
        }
        self.found = {
            "reference": reference,
            "conditioning": {**self.conditioning.as_dict(), "predicted_steps_to_1pct": steps},
        }
        lines = self._start_lines(pl_module, steps, floors)
        for line in lines:
            say(trainer, f"fitquad: {line}")
        for logger in trainer.loggers:
            logger.log_metrics({"reference/train_loss_optimum": self.reference.train_loss}, step=trainer.global_step)
        _log_text(trainer, "conditioning", "\n\n".join(lines))

    def steps_to_go(self, parameters: torch.Tensor) -> float | None:
        """Full-batch steps from `parameters` to within CONVERGED_GAP of the optimum (conditioning's prediction)."""
        reference = self.reference
        return predicted_steps_to_gap(self.conditioning, parameters, reference.parameters, reference.train_loss,
                                      self.settings, resolution=self.resolution)  # fmt: skip

    def _start_lines(self, pl_module: L.LightningModule, steps: float | None, floors: dict) -> list[str]:
        c, s = self.conditioning, self.settings
        eigenvalues = ", ".join(f"{v:.3g}" for v in c.eigenvalues.tolist())
        rule = (
            "2/λmax"
            if s.momentum == 0
            else ("2(1+β)/((1+2β)λmax), Nesterov" if s.nesterov else "2(1+β)/((1−d)λmax), momentum")
        )
        where = "below" if s.lr < c.largest_stable_lr else "ABOVE"
        sgd_only = "" if self.sgd else " (rules for SGD; this optimizer is not SGD)"
        pairs = zip(pl_module.coefficient_names, self.reference.coefficients.tolist(), strict=True)
        coefficients = ", ".join(f"{k}={v:.6g}" for k, v in pairs)
        return [
            self._start_in_plain_words(steps, floors),
            f"conditioning ({pl_module.model.feature_scaling} features; {c.curvature}): Hessian eigenvalues "
            f"{eigenvalues}; κ = {c.condition_number:.3g}; largest stable lr {c.largest_stable_lr:.3g} ({rule}; "
            f"full-batch GD {c.largest_stable_lr_gd:.3g}), lr {s.lr:.3g} is {where} it; predicted full-batch steps "
            f"to within {CONVERGED_GAP:.0%} of the optimum: {'at least ' if c.steps_are_a_bound and steps else ''}"
            f"{_steps(steps, s.lr < c.largest_stable_lr)}{sgd_only}",
            f"reference: training-loss optimum {self.reference.train_loss:.6g} at {coefficients} "
            f"(float64, closed form); {self._floors_line(floors)}",
        ]

    def _floors_line(self, floors: dict) -> str:
        if self.noise_std is None:
            return "noise floors unknown (your own data, with no more points than parameters to estimate σ from)"
        sigma2 = "σ̂²" if self.noise_estimated else "σ²"
        line = (
            f"noise floors: training MSE {sigma2}(n−p)/n = {floors['train_noise_floor']:.4g}, "
            f"validation MSE {sigma2} = {floors['val_noise_floor']:.4g}"
        )
        if self.noise_estimated:
            line += " (σ̂² estimated from the optimum's residuals, n − p degrees of freedom: the true σ is unknown)"
        return line

    def _start_in_plain_words(self, steps: float | None, floors: dict) -> str:
        """The start lines' gist for a beginner: the best possible loss, the noise it cannot go below, and whether
        this learning rate is safe and how soon it should arrive."""
        c, s = self.conditioning, self.settings
        loss = self.reference.train_loss
        best = f"before training: the best this model can reach on its training points is a loss of {loss:.4g}"
        floor = floors["train_noise_floor"]
        estimated = " by its estimate" if self.noise_estimated else ""
        noise = f" (noise alone leaves a training MSE of about {floor:.3g}{estimated})" if floor else ""
        if not self.sgd or not math.isfinite(c.largest_stable_lr):
            return f"{best}{noise}."
        if s.lr >= c.largest_stable_lr:
            pace = f"lr {s.lr:.3g} is too large: above {c.largest_stable_lr:.3g} every step overshoots further"
        elif steps is None or steps == math.inf:
            pace = f"lr {s.lr:.3g} is safe (below {c.largest_stable_lr:.3g})"
        else:
            at_least, why = ("at least ", f" ({c.why_a_bound})") if c.steps_are_a_bound else ("", "")
            pace = (
                f"lr {s.lr:.3g} is safe (below {c.largest_stable_lr:.3g}) and should get within 1% of it in "
                f"{at_least}about {steps:.3g} full-batch step{'' if steps == 1 else 's'}{why}"
            )
        return f"{best}{noise}; {pace}."

    # ---- during training: the relative gap at every logged step ---------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.steps = StepLosses()
        self.steps.start(trainer)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        losses = self.steps.taken(trainer, outputs)
        if not trainer.loggers or losses is None:
            return
        steps, logged = logged_steps(trainer, len(losses))
        if not logged.any():
            return
        # One host sync per training_step (not per optimizer step), and only when something is logged.
        for step, loss in zip(steps[logged].tolist(), losses[logged.to(losses.device)].tolist(), strict=True):
            gap = relative_gap(loss, self.reference.train_loss, self.resolution)
            for logger in trainer.loggers:
                logger.log_metrics({"reference/relative_gap": gap}, step=step)

    # ---- fit end: the diagnosis -----------------------------------------------------------------
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in trainer.loggers:  # the optimum again at the last step: a line under train/loss, not a point
            logger.log_metrics({"reference/train_loss_optimum": self.reference.train_loss}, step=trainer.global_step)
        datamodule = trainer.datamodule
        batch_size = datamodule.hparams.batch_size
        model64 = float64_copy(pl_module.model)  # the trained parameters, evaluated without rounding
        train_x = datamodule.train_x
        # In float64, a chunk at a time (no float64 copy of millions of points).
        train_loss, train_mse = evaluate(model64, train_x, datamodule.train_y, pl_module.loss_fn)
        val_mse = None
        if len(datamodule.val_x):
            _, val_mse = evaluate(model64, datamodule.val_x, datamodule.val_y, pl_module.loss_fn)
        steps_to_go = self.steps_to_go(model64.model_parameters())
        short = relative_gap(train_loss, self.reference.train_loss, self.resolution) > CONVERGED_GAP
        probe = None
        if pl_module.dtype == torch.float32 and self.sgd and short:
            probe = float32_update_error(pl_module, datamodule.train_x, datamodule.train_y, self.settings)
        facts = FitFacts(
            steps_taken=trainer.global_step,
            train_loss=train_loss,
            optimum_loss=self.reference.train_loss,
            condition_number=self.conditioning.condition_number,
            steps_to_go=steps_to_go,
            lr=self.settings.lr,
            largest_stable_lr=self.conditioning.largest_stable_lr,
            float32_update_error=probe,
            train_mse=train_mse,
            val_mse=val_mse,
            noise_std=self.noise_std,
            noise_estimated=self.noise_estimated,
            n_train=datamodule.train_size,
            n_val=len(datamodule.val_x),
            n_parameters=len(self.reference.parameters),
            mini_batch=batch_size is not None
            and batch_size < len(train_x) // trainer.world_size,  # of a process's part
            stopped_early=any(isinstance(c, EarlyStopping) and c.stopped_epoch > 0 for c in trainer.callbacks),
            optimizer=type(trainer.optimizers[0]).__name__,
            loss_resolution=self.resolution,
            steps_are_a_bound=self.conditioning.steps_are_a_bound,
        )
        self._report(trainer, pl_module, diagnose(facts))
        if self.figures:
            self._draw(trainer, pl_module, model64)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, TrainingDiverged):
            return
        # The module knows the loss blew up; how far the lr was from stable is the theory's to say: the conditioning
        # found at fit start (a scheduler changes the lr, not the largest stable one).
        exception.largest_stable_lr = self.conditioning.largest_stable_lr
        numbers = {"step": exception.step, "loss": exception.loss, "first_loss": exception.first_loss}
        numbers.update(lr=exception.lr, largest_stable_lr=exception.largest_stable_lr)
        self._report(trainer, pl_module, Diagnosis("diverged", f"diverged: {exception}", numbers))

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule, diagnosis: Diagnosis) -> None:
        self.found["diagnosis"] = {
            "verdict": diagnosis.verdict,
            "in_plain_words": diagnosis.in_plain_words,
            "message": diagnosis.message,
            **diagnosis.numbers,
        }
        say(trainer, f"fitquad: diagnosis: {diagnosis.in_plain_words}")
        say(trainer, f"fitquad: details: {diagnosis.message}")
        _log_text(trainer, "diagnosis", f"{diagnosis.in_plain_words}\n\n{diagnosis.message}")

    def _draw(self, trainer: L.Trainer, pl_module: L.LightningModule, model64: torch.nn.Module) -> None:
        from fitquad.callbacks import figures  # matplotlib only when a fit ends, never for `fitquad --help`

        if not trainer.is_global_zero:  # one process draws (each holds all the points)
            return
        datamodule = trainer.datamodule
        train_x, train_y = datamodule.training_sample(figures.SCATTER_POINTS)
        picture = figures.FitPicture(
            train_x=train_x,
            train_y=train_y,
            train_size=datamodule.train_size,
            val_x=datamodule.val_x,
            val_y=datamodule.val_y,
            true_coefficients=datamodule.true_coefficients,
            fitted_coefficients=model64.coefficients(),
            optimum_coefficients=self.reference.coefficients,
            noise_std=self.noise_std,
            noise_estimated=self.noise_estimated,
            optimizer=type(trainer.optimizers[0]).__name__,
            **axis_labels(datamodule.hparams),
        )
        drawn = figures.fit_figures(picture)
        folder = run_folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        for name, figure in drawn.items():
            image = figures.save_png(figure, folder / f"{name}.png")
            for logger in trainer.loggers:  # TensorBoard's IMAGES tab: the same pixels, not drawn again
                if hasattr(logger.experiment, "add_image"):
                    logger.experiment.add_image(f"diagnosis/{name}", image, trainer.global_step, dataformats="HWC")


def axis_labels(data: dict) -> dict[str, str]:
    """The figures' axis labels: your own data's column names where its file names them (data.x_column x)."""
    labels = {}
    for axis in ("x", "y"):
        column = data.get(f"{axis}_column")
        if data.get("file") is not None and isinstance(column, str):
            labels[f"{axis}_label"] = column
    return labels


def _steps(steps: float | None, stable: bool) -> str:
    if steps is None:
        return "n/a (no curvature)"
    if steps == math.inf:  # some direction does not contract: too steep for the lr, or (almost) flat
        return "never (lr above the largest stable)" if not stable else "never (a direction with ~no curvature)"
    return f"{steps:.3g}"


def _log_text(trainer: L.Trainer, tag: str, text: str) -> None:
    for logger in trainer.loggers:
        if hasattr(logger.experiment, "add_text"):  # TensorBoard's TEXT tab
            logger.experiment.add_text(tag, text, global_step=trainer.global_step)
