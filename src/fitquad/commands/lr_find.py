"""`fitquad lr-find`: Lightning's learning-rate range test (Tuner.lr_find) on a fit config, checked against theory.

Its suggestion is printed beside the largest stable learning rate, 2/λmax (fitquad.theory.conditioning), and its plot
saved as lr_find.png in the run folder; how to read them: docs/how-it-works.md.
"""

from __future__ import annotations

import math
import signal
import threading
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.tuner import Tuner
from torch import nn

from fitquad.callbacks.interrupts import Interrupted, sigterm_received
from fitquad.callbacks.summary import run_folder
from fitquad.checks.file_data import FileDataModule
from fitquad.checks.validation import InvalidInput
from fitquad.commands.fit_cli import FitquadCLI, trainer_defaults
from fitquad.commands.parsing import OneLineErrorParser
from fitquad.core.module import QuadraticRegression, TrainingDiverged
from fitquad.theory.conditioning import OptimizerSettings, conditioning

# lr_find's options other than these are Tuner.lr_find's own, with Lightning's defaults.
NOT_OPTIONS = {"model", "train_dataloaders", "val_dataloaders", "dataloaders", "datamodule", "method"}
NOT_OPTIONS |= {"update_attr", "attr_name"}  # the suggestion is printed, not applied: a fit is a separate run
MODES = ("exponential", "linear")  # how Tuner.lr_find grows the learning rate
# The range test is not a run to compare in TensorBoard: its folder holds lr_find.png and config.yaml, no
# event file (a later --trainer.logger on the command line still wins).
NO_TENSORBOARD_RUN = ["--trainer.logger", "false"]
ONE_STEP_PER_EPOCH = ["--data.steps_per_epoch", "1"]


def stable_lrs(module: QuadraticRegression, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> tuple[float, float]:
    """(2/λmax of the MSE Hessian: plain full-batch GD on MSE; the same bound for this config's loss and SGD
    settings), from fitquad.theory.conditioning, over all the training points."""
    gd_on_mse = conditioning(module.model, x, nn.MSELoss(), OptimizerSettings(lr=0.0)).largest_stable_lr_gd
    own = conditioning(module.model, x, module.loss_fn, OptimizerSettings.of(optimizer)).largest_stable_lr
    return gd_on_mse, own


class LossKeepingRegression(QuadraticRegression):
    """QuadraticRegression that keeps each optimizer step's loss: Tuner.lr_find trains with its own callback alone
    (the Trainer's callbacks, TrainingRecord among them, are set aside while it runs), but the module's own hooks
    still run."""

    def on_train_start(self) -> None:
        super().on_train_start()
        self.step_losses: list[torch.Tensor] = []

    stop_signal: signal.Signals | None = None  # Ctrl-C or SIGTERM during the range test

    def note_signal(self, signum: int, frame: Any) -> None:
        self.stop_signal = signal.Signals(signum)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.step_losses.append(outputs["loss"])
        if sigterm_received():  # noted by fitquad's handler (callbacks.interrupts)
            self.stop_signal = signal.SIGTERM
        # Tuner runs the test in on_fit_start, before Lightning watches for SIGTERM and before CheckpointOnSignal
        # (set aside with the other callbacks) would stop it: stopped here, after the step in progress.
        if self.stop_signal is not None:
            raise Interrupted(self.stop_signal)

    def stop_if_diverged(self, losses: torch.Tensor, first_step: int) -> None:
        # A loss that blows up at a large learning rate is what the range test looks for, not a failed fit: the test
        # ends there, as its own early_stop_threshold would end it (which lr_find.early_stop_threshold null turns off).
        try:
            super().stop_if_diverged(losses, first_step)
        except TrainingDiverged:
            self.trainer.should_stop = True


class LrFindCLI(FitquadCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_method_arguments(Tuner, "lr_find", "lr_find", skip=NOT_OPTIONS)

    def parse_arguments(self, parser: LightningArgumentParser, args: list[str] | None) -> None:
        super().parse_arguments(parser, args)
        check_lr_find_options(self.config.lr_find)
        if self.config.trainer.get("fast_dev_run"):
            raise InvalidInput(
                "trainer.fast_dev_run must be false for lr-find: Lightning skips its learning-rate finder under it "
                "(a short test: lr_find.num_training)"
            )


def check_lr_find_options(options: Any) -> None:
    """Tuner.lr_find's options, which it takes unchecked (min_lr 0 divides by zero; an unknown mode fails late)."""
    min_lr, max_lr, threshold = options.min_lr, options.max_lr, options.early_stop_threshold
    rules = [
        (math.isfinite(min_lr) and min_lr > 0, f"lr_find.min_lr must be > 0, got {min_lr}"),
        (
            math.isfinite(max_lr) and max_lr > min_lr,
            f"lr_find.max_lr must be > lr_find.min_lr = {min_lr}, got {max_lr}",
        ),
        (
            options.num_training >= 2,
            f"lr_find.num_training must be ≥ 2 (learning rates tried), got {options.num_training}",
        ),
        (options.mode in MODES, f"lr_find.mode must be one of {', '.join(MODES)}, got {options.mode!r}"),
        (threshold is None or threshold > 0, f"lr_find.early_stop_threshold must be > 0 or null, got {threshold}"),
    ]
    for passes, message in rules:
        if not passes:
            raise InvalidInput(message)


def main(argv: list[str]) -> None:
    with warnings.catch_warnings():
        # We pass args on purpose (the user's, plus ONE_STEP_PER_EPOCH); LightningCLI warns whenever
        # args differ from sys.argv.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = LrFindCLI(
            LossKeepingRegression,
            FileDataModule,
            args=[*NO_TENSORBOARD_RUN, *argv, *ONE_STEP_PER_EPOCH],
            run=False,
            trainer_defaults=trainer_defaults(argv),
            seed_everything_default=0,
            parser_class=OneLineErrorParser,
            parser_kwargs={"prog": "fitquad lr-find", "description": __doc__.split("\n")[0]},
        )
    model, datamodule, trainer = cli.model, cli.datamodule, cli.trainer
    options = cli.config.lr_find
    main_thread = threading.current_thread() is threading.main_thread()  # the only one that may set a handler
    previous = signal.signal(signal.SIGINT, model.note_signal) if main_thread else None  # Ctrl-C: after the step
    try:
        with warnings.catch_warnings():
            # Stopped by a signal, the finder restores its own starting checkpoint while its callback still stands in
            # for the Trainer's, and Lightning warns as if a user's --ckpt_path lacked callbacks: it does not apply.
            warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`, callbacks used")
            finder = Tuner(trainer).lr_find(model, datamodule=datamodule, update_attr=False, **options)
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    suggestion = finder.suggestion()
    stable_lr, own_stable_lr = stable_lrs(model, trainer.optimizers[0], datamodule.train_x)
    if not trainer.is_global_zero:  # under DDP one process draws and prints; the others found the same numbers
        return
    folder = run_folder(trainer)
    # The loss of each step as taken, beside Lightning's smoothed curve.
    raw_losses = torch.stack(model.step_losses).double().tolist()
    save_plot(finder, suggestion, stable_lr, raw_losses, folder / "lr_find.png")
    tried = finder.results["lr"]
    print(f"fitquad: lr finder tried {len(tried)} learning rates from {tried[0]:.3g} to {tried[-1]:.3g}")
    print(
        f"fitquad: largest stable lr for full-batch GD on MSE: 2/λmax = {stable_lr:.4g} "
        f"(feature_scaling {model.hparams.feature_scaling}); with this config's loss and SGD settings: "
        + (f"{own_stable_lr:.4g}" if math.isfinite(own_stable_lr) else "none (no curvature: L1)")
    )
    if suggestion is None:
        print(
            "fitquad: the lr finder made no suggestion: too few learning rates gave a finite loss (raise "
            "lr_find.num_training, or widen lr_find.min_lr..max_lr)"
        )
    else:
        print(f"fitquad: lr finder suggests lr = {suggestion:.4g}, {suggestion / stable_lr:.3g} × 2/λmax")
    print(f"fitquad: plot in {folder / 'lr_find.png'}", flush=True)


def save_plot(finder: Any, suggestion: float | None, stable_lr: float, raw_losses: list[float], path: Path) -> None:
    """Lightning's own lr_find curve (`finder`: what Tuner.lr_find returns) with its `suggestion`, the loss of each
    step as taken beneath it, and the largest stable learning rate, on a log loss axis (a divergence's spike to 10⁴
    × the start would flatten a linear one). Lightning's smoothing is an average of the losses so far,
    bias-corrected; its first points can sit well below the first loss, which read alone suggests that the smallest
    learning rates raise the loss: the raw losses show they do not."""
    import matplotlib

    matplotlib.use("Agg")  # Lightning's plot imports pyplot: never open a window
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = figure.add_subplot()
    lrs = finder.results["lr"]
    shown = min(len(lrs), len(raw_losses))
    ax.plot(lrs[:shown], raw_losses[:shown], color="gray", linewidth=0.8, alpha=0.8, label="loss of each step")
    finder.plot(suggest=suggestion is not None, ax=ax)  # (suggest=True would ask for the suggestion again)
    ax.lines[1].set_label("Lightning's smoothed loss")  # drawn by finder.plot, after the raw losses
    ax.axvline(stable_lr, color="black", linestyle="--", label=f"2/λmax = {stable_lr:.3g} (GD on MSE)")
    if suggestion is not None:
        ax.axvline(suggestion, color="red", linestyle=":", label=f"suggestion {suggestion:.3g}")
    ax.set_yscale("log")
    ax.set_ylabel("training loss (log scale)")
    ax.set_title("Lightning's learning-rate range test: the loss as the learning rate grows", fontsize="medium")
    ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
