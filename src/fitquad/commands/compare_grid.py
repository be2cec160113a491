"""`fitquad compare`: the SGD-parameters article's grid of losses × optimizer settings, in one figure and one table.

    fitquad compare --config configs/sgd_article_grid.yaml
    fitquad compare --config configs/sgd_article_grid.yaml --max_steps 50 --losses [mse,huber]
    fitquad compare --help

The config is a YAML file with these keys (all optional; each is also a command-line option):

    data:        QuadraticDataModule's options, as in a `fitquad fit` config
    model:       QuadraticRegression's options except the loss and SGD's momentum, dampening, nesterov
                 and weight_decay, which the grid sets
    losses:      the rows, e.g. [mse, l1, huber, smooth_l1]
    settings:    the columns, each {name, lr (null: model.lr), momentum, dampening, nesterov, weight_decay}
    max_steps:   optimizer steps per run
    resolution, margin, parameters, levels: the landscape's grid, as for fitquad.callbacks.landscape.LossLandscape

Every pair trains on the same data side by side in one quiet Lightning Trainer (fitquad.commands.side_by_side: each
run's path bit for bit the one it takes alone; CPU, no logger, no checkpoints, no validation: only the recorded
paths are used). A run that diverges is marked in the table and the figure, its path ending at its last good
parameters; the others train on, and the command exits with status 1 after writing everything. The output lands in
runs/<config name>/version_N: compare.png (a panel per loss and setting on shared axes, each path on its
own loss's surface), compare.csv and compare.md (final loss, final coefficients, the loss's optimum, and
the steps taken to get within 1% of it), and config.yaml (the resolved comparison, to re-run it).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import torch
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

from fitquad.callbacks.interrupts import CheckpointOnSignal, Interrupted
from fitquad.callbacks.landscape import (
    SURFACE_POINTS,
    add_colorbar,
    add_marker_legend,
    build_landscape,
    choose_axes,
    draw_landscape,
    loss_at,
    path_extent,
)
from fitquad.checks.file_data import FileDataModule
from fitquad.checks.limits import check_landscape_grid, check_limits
from fitquad.checks.validation import InvalidInput, check_model_options
from fitquad.commands.cli import lightning_quiet
from fitquad.commands.compare_report import write_tables
from fitquad.commands.run_folders import RUNS_FOLDER, config_name, make_run_folder
from fitquad.commands.side_by_side import SideBySide
from fitquad.core.losses import LossName
from fitquad.core.model import polynomial_basis
from fitquad.core.module import QuadraticRegression, TrainingDiverged
from fitquad.theory.conditioning import SGD_OPTIONS, OptimizerSettings, conditioning
from fitquad.theory.reference import optimum as optimum_of

if TYPE_CHECKING:  # matplotlib is imported only when the figure is drawn
    from matplotlib.figure import Figure

# "Within 1% of the optimum": loss ≤ (1 + WITHIN) × the loss's minimum on the training set.
WITHIN = 0.01


@dataclass
class OptimizerSetting:
    """One column of the grid: torch.optim.SGD's options (lr None: the model's lr)."""

    name: str
    lr: float | None = None
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0


# The article's five settings; weight decay 0.1 is a choice (strong enough to see the pull towards 0).
ARTICLE_SETTINGS = [
    OptimizerSetting("plain"),
    OptimizerSetting("momentum 0.9", momentum=0.9),
    OptimizerSetting("Nesterov 0.9", momentum=0.9, nesterov=True),
    OptimizerSetting("Nesterov 0.9, wd 0.1", momentum=0.9, nesterov=True, weight_decay=0.1),
    OptimizerSetting("momentum 0.9, dampening 0.8", momentum=0.9, dampening=0.8),
]


@dataclass
class RunResult:
    loss: str
    setting: OptimizerSetting
    path: torch.Tensor  # (steps + 1, coefficients), original units
    path_loss: torch.Tensor  # the training loss at every point of the path
    optimum: torch.Tensor  # of the loss, original units
    optimum_loss: float
    decay_optimum: torch.Tensor | None  # of loss + weight decay (None without weight decay)
    diverged: str | None = None  # why the run diverged (its path ends at its last good parameters), if it did

    @property
    def steps_to_within(self) -> int | None:
        """Optimizer steps after which the training loss stays within WITHIN of the optimum, to the end (None: it
        is not within at the end; a run that passes through and leaves again has not arrived)."""
        outside = (self.path_loss > self.optimum_loss * (1 + WITHIN)).nonzero()
        if not len(outside):
            return 0
        last_outside = int(outside[-1])
        return None if last_outside == len(self.path_loss) - 1 else last_outside + 1


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="fitquad compare", description=__doc__.split("\n")[0], exit_on_error=False, default_env=False
    )
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with the keys below")
    parser.add_argument("--name", type=str | None, default=None, help="runs/<name>/: default, the config's file name")
    parser.add_class_arguments(FileDataModule, "data")
    grid_set = {"loss", "momentum", "dampening", "nesterov", "weight_decay"}
    parser.add_class_arguments(QuadraticRegression, "model", skip=grid_set)
    parser.add_argument("--losses", type=list[LossName], default=["mse", "l1", "huber", "smooth_l1"])
    parser.add_argument("--settings", type=list[OptimizerSetting], default=ARTICLE_SETTINGS)
    parser.add_argument("--max_steps", type=int, default=100, help="optimizer steps per run")
    parser.add_argument("--resolution", type=int, default=101, help="landscape grid points per axis")
    parser.add_argument("--margin", type=float, default=0.1, help="room around all paths, a fraction of their span")
    parser.add_argument("--parameters", type=list[str] | None, default=None, help="two coefficients to draw")
    parser.add_argument("--levels", type=int, default=20, help="log-spaced contour levels per panel")
    return parser


def run_grid(config, datamodule: FileDataModule, basis: torch.Tensor, y: torch.Tensor) -> list[RunResult]:
    """Every loss × setting on the same data, side by side in one Trainer, in config order (row by row)."""
    pairs = [(loss, setting) for loss in config.losses for setting in config.settings]
    module = SideBySide([run_options(config, loss, setting) for loss, setting in pairs], datamodule.train_x)
    on_signal = CheckpointOnSignal(filename=None)  # Ctrl-C or SIGTERM: stop the grid after this step
    trainer = L.Trainer(
        accelerator="cpu",
        callbacks=[on_signal],
        max_steps=config.max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=datamodule.train_dataloader())  # no validation: the paths are all we need
    if on_signal.received is not None:
        raise Interrupted(on_signal.received)
    # Every run has the same degree and feature scaling, fitted to the same points: any run's model gives the basis
    # of the closed-form optima (fitquad.theory.reference), whose coefficients come out in original units.
    model = module.models[0]
    optima = {}  # each loss's optimum, once per loss (a row of the grid), not once per run
    results = []
    for run, (loss, setting) in enumerate(pairs):
        loss_fn = module.loss_fns[run]
        if loss not in optima:
            optimum = optimum_of(model, datamodule.train_x, y, loss_fn).coefficients
            optima[loss] = optimum, loss_at(loss_fn, basis, y, optimum.unsqueeze(0)).item()
        optimum, optimum_loss = optima[loss]
        path = module.models[run].coefficients_of(module.path(run))
        decay_optimum = None
        if setting.weight_decay > 0:
            decay_optimum = optimum_of(model, datamodule.train_x, y, loss_fn, setting.weight_decay).coefficients
        diverged = None
        if module.diverged[run] is not None:
            step, bad_loss, first = module.diverged[run]
            sgd = OptimizerSettings(**{k: module.runs[run][k] for k in SGD_OPTIONS})
            stable = conditioning(module.models[run], datamodule.train_x, loss_fn, sgd).largest_stable_lr
            diverged = str(TrainingDiverged(step, bad_loss, first, sgd.lr, stable))
        path_loss = loss_at(loss_fn, basis, y, path)
        results.append(RunResult(loss, setting, path, path_loss, optimum, optimum_loss, decay_optimum, diverged))
    return results


def run_options(config, loss: str, setting: OptimizerSetting) -> dict:
    """QuadraticRegression's arguments for one loss × setting."""
    options = {**dict(config.model), "loss": loss, "lr": setting.lr if setting.lr is not None else config.model.lr}
    return {**options, "momentum": setting.momentum, "dampening": setting.dampening, "nesterov": setting.nesterov,
            "weight_decay": setting.weight_decay}  # fmt: skip


def _loss_options(config) -> dict:
    return {"huber_delta": config.model.huber_delta, "smooth_l1_beta": config.model.smooth_l1_beta}


def draw_grid(config, results: list[RunResult], names: list[str], basis: torch.Tensor, y: torch.Tensor) -> Figure:
    """Small multiples: a panel per loss (row) and setting (column), shared axes, each on its loss's surface."""
    from matplotlib.figure import Figure

    all_paths = torch.cat([r.path for r in results])
    axes = choose_axes(all_paths, names, config.parameters)
    marked = [r.optimum for r in results] + [r.decay_optimum for r in results if r.decay_optimum is not None]
    extent = path_extent(all_paths, marked, axes, config.margin)
    rows, columns = len(config.losses), len(config.settings)
    figure = Figure(figsize=(2.9 * columns, 2.7 * rows + 0.9), layout="constrained")
    panels = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    projection = ""
    for index, (result, ax) in enumerate(zip(results, panels.flat, strict=True)):
        loss_fn = QuadraticRegression(loss=result.loss, **_loss_options(config)).loss_fn
        landscape = build_landscape(
            loss_fn, basis, y, result.path, names, result.optimum, axes, extent, config.resolution, result.decay_optimum
        )
        projection = landscape.projection.replace("the optimum", "each loss's optimum")
        filled = draw_landscape(ax, landscape, config.levels)
        row, column = divmod(index, columns)
        if column == columns - 1:  # a row's panels share a loss, its surface and its levels: one colour bar
            add_colorbar(figure, panels[row].tolist(), filled, f"{result.loss} loss")
        steps = result.steps_to_within
        arrived = f"from step {steps} on" if steps is not None else "not at the end"
        note = f"final {result.path_loss[-1].item():.4g}\nwithin 1%: {arrived}"
        if result.diverged:
            note = f"diverged\nlast good loss {result.path_loss[-1].item():.4g}"
        ax.text(0.03, 0.97, note, transform=ax.transAxes, va="top", fontsize="x-small", color="white")
        ax.label_outer()
    for ax, setting in zip(panels[0], config.settings, strict=True):
        ax.set_title(setting.name, fontsize="small")
    for ax, loss in zip(panels[:, 0], config.losses, strict=True):
        ax.set_ylabel(f"{loss}\n{ax.get_ylabel()}")
    lr = config.model.lr
    figure.suptitle(
        f"Training loss (row) under SGD settings (column), {config.max_steps} steps, lr {lr:g} unless named; "
        f"log-spaced contours, one colour scale per row (loss)\n{projection}",
        fontsize="medium",
    )
    add_marker_legend(figure)
    return figure


def main(argv: list[str]) -> None:
    parser = build_parser()
    try:
        config = parser.parse_args(argv)
        check_comparison(config)
        _, results = compare(config, parser)
    # InvalidInput: a range the data or the model checks (fitquad.checks.validation). One line each.
    except (ArgumentError, InvalidInput) as error:
        print(f"fitquad compare: error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(2)
    diverged = [f"{r.loss}, {r.setting.name}" for r in results if r.diverged]
    if diverged:  # as `fitquad sweep` does: everything is written, the status says some runs blew up
        print(f"fitquad compare: error: {len(diverged)} run(s) diverged ({'; '.join(diverged)}): see the table",
              file=sys.stderr)  # fmt: skip
        sys.exit(1)


def check_comparison(config) -> None:
    """Every option, and every run of the grid, checked before anything trains or is written."""
    checks = [
        (config.losses, "losses must list at least one loss (mse, l1, huber, smooth_l1)"),
        (config.settings, "settings must list at least one optimizer setting"),
        (config.max_steps >= 1, f"max_steps must be ≥ 1, got {config.max_steps}"),
        (
            config.model.degree >= 1,
            f"model.degree must be ≥ 1 (a landscape needs two coefficients), got {config.model.degree}",
        ),
        (
            math.isfinite(config.margin) and config.margin >= 0,
            f"margin must be a finite number ≥ 0, got {config.margin}",
        ),
    ]
    for passes, message in checks:
        if not passes:
            raise InvalidInput(message)
    check_landscape_grid(config.resolution, config.levels, len(config.losses) * len(config.settings))
    names = [setting.name for setting in config.settings]
    repeated = next((name for name in names if names.count(name) > 1), None)
    if repeated is not None:
        raise InvalidInput(f"settings must have distinct names: {repeated!r} appears twice")
    coefficient_names = QuadraticRegression(degree=config.model.degree).coefficient_names
    if config.parameters is not None:
        chosen = list(config.parameters)
        if len(chosen) != 2 or chosen[0] == chosen[1] or not set(chosen) <= set(coefficient_names):
            raise InvalidInput(f"parameters must be two different names among {coefficient_names}, got {chosen}")
    data = FileDataModule(**config.data)  # checks the data's options
    for setting in config.settings:  # each run's model and SGD options, as fitquad fit checks them
        options = {**dict(config.model), "lr": setting.lr if setting.lr is not None else config.model.lr}
        sgd = dict(momentum=setting.momentum, dampening=setting.dampening, nesterov=setting.nesterov)
        try:
            check_model_options({**options, "weight_decay": setting.weight_decay, **sgd})
        except InvalidInput as error:
            raise InvalidInput(f"settings {setting.name!r}: {error}") from None
        check_limits({"data": data.hparams, "model": {**options, **sgd}, "trainer": {}})


def compare(config, parser: ArgumentParser) -> tuple[Path, list[RunResult]]:
    """Run the grid, draw it, write the tables, in runs/<config name>/version_N; returns that folder and the runs."""
    name = config_name(config, default="compare")
    config.name = name  # saved with the config: a re-run from its config.yaml lands under the same name
    datamodule = FileDataModule(**config.data)  # checks the data options before any folder is made
    datamodule.setup("fit")
    folder = make_run_folder(Path(RUNS_FOLDER) / name, "the compare config's name")
    print(f"fitquad: compare folder {folder}", flush=True)
    basis = polynomial_basis(datamodule.train_x, config.model.degree)
    y = datamodule.train_y.double()
    names = QuadraticRegression(degree=config.model.degree).coefficient_names
    with lightning_quiet():  # each Trainer would announce its hardware (GPU available: ...) once per run
        results = run_grid(config, datamodule, basis, y)
    # The surfaces on at most SURFACE_POINTS of the points, as LossLandscape draws them: resolution² losses per
    # panel over millions of points would take hours, and a uniform sample draws the same picture.
    surface_x, surface_y = datamodule.training_sample(SURFACE_POINTS)
    figure = draw_grid(config, results, names, polynomial_basis(surface_x, config.model.degree), surface_y.double())
    figure.savefig(folder / "compare.png", dpi=110)
    markdown = write_tables(results, names, folder)
    parser.save(config, folder / "config.yaml", skip_unset=False, overwrite=True)
    print(markdown, end="")
    print(f"fitquad: compare finished in {folder}: compare.png, compare.csv, compare.md", flush=True)
    return folder, results
