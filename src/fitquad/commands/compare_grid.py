"""`fitquad compare`: the SGD-parameters article's grid of losses × optimizer settings, in one figure and one table.

Each cell is QuadraticRegression trained in its own quiet Trainer, as `fitquad fit` trains it; what the config holds,
what lands in the run folder and how to read it: docs/how-it-works.md, "compare_grid.py".
"""

from __future__ import annotations

import math
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
from jsonargparse import ActionConfigFile, Namespace
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fitquad.callbacks.interrupts import CheckpointOnSignal, Interrupted
from fitquad.callbacks.parameter_path import ParameterPath
from fitquad.checks.file_data import FileDataModule
from fitquad.checks.limits import check_first_step, check_landscape_grid, check_limits, started_model
from fitquad.checks.validation import InvalidInput, check_enough_points, check_model_options, check_n_train
from fitquad.commands.compare_report import draw_grid, write_tables
from fitquad.commands.parsing import SET_BY_THE_GRID, OneLineErrorParser, lightning_quiet
from fitquad.commands.run_folders import RUNS_FOLDER, config_name, make_run_folder
from fitquad.core.losses import LOSSES, LossName
from fitquad.core.model import polynomial_basis
from fitquad.core.module import QuadraticRegression, TrainingDiverged
from fitquad.theory.conditioning import OptimizerSettings, divergence_line
from fitquad.theory.reference import optimum as optimum_of
from fitquad.theory.surface import SURFACE_POINTS, loss_at

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


# Steps per run at most: each run's path, one row a step, is kept, evaluated on every point and drawn.
MAX_STEPS = 100_000

# The article's four losses (a loss added to the loss table joins a grid that names it in `losses`).
ARTICLE_LOSSES = ("mse", "l1", "huber", "smooth_l1")
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


def build_parser() -> OneLineErrorParser:
    parser = OneLineErrorParser(prog="fitquad compare", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with the keys below")
    parser.add_argument("--name", type=str | None, default=None, help="runs/<name>/: default, the config's file name")
    parser.add_class_arguments(FileDataModule, "data")
    grid_set = {key.removeprefix("model.") for key in SET_BY_THE_GRID}
    parser.add_class_arguments(QuadraticRegression, "model", skip=grid_set)
    parser.add_argument("--losses", type=list[LossName], default=list(ARTICLE_LOSSES), help="the rows: losses")
    # The defaults as the parsed values are (Namespaces), so that config.yaml can write them.
    article = [Namespace(**asdict(setting)) for setting in ARTICLE_SETTINGS]
    parser.add_argument("--settings", type=list[OptimizerSetting], default=article)
    parser.add_argument("--max_steps", type=int, default=100, help=f"optimizer steps per run, at most {MAX_STEPS:,}")
    parser.add_argument("--resolution", type=int, default=101, help="landscape grid points per axis")
    parser.add_argument("--margin", type=float, default=0.1, help="room around all paths, a fraction of their span")
    parser.add_argument("--parameters", type=list[str] | None, default=None, help="two coefficients to draw")
    parser.add_argument("--levels", type=int, default=20, help="log-spaced contour levels per panel")
    return parser


def run_grid(
    config, datamodule: FileDataModule, basis: torch.Tensor, y: torch.Tensor
) -> tuple[list[RunResult], int | None]:
    """Every loss × setting on the same data, in config order (row by row), each trained by QuadraticRegression in a
    Trainer of its own, as `fitquad fit` trains it. Returns the runs finished and the signal (Ctrl-C, SIGTERM) that
    stopped the grid, if one did: the run in progress is then stopped and left out."""
    results: list[RunResult] = []
    optima = {}  # each loss's optimum, once per loss (a row of the grid), not once per run
    try:
        for loss in config.losses:
            for setting in config.settings:
                module, path, diverged, signalled = train_cell(config, datamodule, loss, setting)
                if signalled is not None:
                    return results, signalled
                results.append(cell_result(module, path, diverged, loss, setting, datamodule, basis, y, optima))
    except SIGTERMException:  # between two runs (fitquad's handler, see callbacks.interrupts)
        return results, signal.SIGTERM
    except KeyboardInterrupt:
        return results, signal.SIGINT
    return results, None


def cell_result(module, path, diverged, loss, setting, datamodule, basis, y, optima: dict) -> RunResult:
    """One trained cell's path in original units, its losses, and its loss's optimum (`optima`: found once a loss)."""
    loss_fn, model = module.loss_fn, module.model
    if loss not in optima:
        optimum = optimum_of(model, datamodule.train_x, y, loss_fn).coefficients
        optima[loss] = optimum, loss_at(loss_fn, basis, y, optimum.unsqueeze(0)).item()
    optimum, optimum_loss = optima[loss]
    decay_optimum = None
    if setting.weight_decay > 0:
        decay_optimum = optimum_of(model, datamodule.train_x, y, loss_fn, setting.weight_decay).coefficients
    path = model.coefficients_of(path)
    return RunResult(loss, setting, path, loss_at(loss_fn, basis, y, path), optimum, optimum_loss, decay_optimum,
                     diverged)  # fmt: skip


def train_cell(
    config, datamodule: FileDataModule, loss: str, setting: OptimizerSetting
) -> tuple[QuadraticRegression, torch.Tensor, str | None, int | None]:
    """One loss × setting trained alone: the module, its parameter path (ending at its last good parameters if it
    diverged), why it diverged, and the signal that stopped it, if one did. CPU, no logger, no checkpoints, no
    validation: only the recorded path is used."""
    module = QuadraticRegression(**run_options(config, loss, setting))
    recorder, on_signal = ParameterPath(), CheckpointOnSignal(filename=None)  # a signal: stop after this step
    trainer = L.Trainer(
        accelerator="cpu",
        callbacks=[recorder, on_signal],
        max_steps=config.max_steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    diverged, path = None, None
    try:
        trainer.fit(module, datamodule=datamodule)
    except TrainingDiverged as error:  # a result of this cell, marked in the table and the figure
        sgd = OptimizerSettings.of(trainer.optimizers[0])
        diverged = divergence_line(error, module.model, datamodule.train_x, module.loss_fn, sgd)
        # Row k of the path holds the parameters after k steps, and step k + 1's loss is theirs: the path ends
        # before the row whose loss diverged.
        path = recorder.path()[: max(error.step - 1, 1)]
    except SIGTERMException:  # Lightning's, after the step in progress: CheckpointOnSignal has noted it (received)
        pass
    path = recorder.path() if path is None else path
    return module, path, diverged, on_signal.received


def run_options(config, loss: str, setting: OptimizerSetting) -> dict:
    """QuadraticRegression's arguments for one loss × setting."""
    options = {**dict(config.model), "loss": loss, "lr": setting.lr if setting.lr is not None else config.model.lr}
    return {**options, "momentum": setting.momentum, "dampening": setting.dampening, "nesterov": setting.nesterov,
            "weight_decay": setting.weight_decay}  # fmt: skip


def run(argv: list[str]) -> tuple[Path, list[RunResult]]:
    """`fitquad compare <argv>`, parsed and checked before anything trains; its folder and runs (also fitquad.compare's
    from Python)."""
    parser = build_parser()
    config = parser.parse_args(argv)  # bad input: InvalidInput, one line naming the option (cli.py reports it)
    check_comparison(config)
    return compare(config, parser)


def main(argv: list[str]) -> None:
    _, results = run(argv)
    diverged = [f"{r.loss}, {r.setting.name}" for r in results if r.diverged]
    if diverged:  # as `fitquad sweep` does: everything is written, the status says some runs blew up
        print(f"fitquad compare: error: {len(diverged)} run(s) diverged ({'; '.join(diverged)}): see the table",
              file=sys.stderr)  # fmt: skip
        sys.exit(1)


def check_comparison(config) -> None:
    """Every option, and every run of the grid, checked before anything trains or is written."""
    checks = [
        (config.losses, f"losses must list at least one loss ({', '.join(LOSSES)})"),
        (config.settings, "settings must list at least one optimizer setting"),
        (
            1 <= config.max_steps <= MAX_STEPS,
            f"max_steps must be in [1, {MAX_STEPS:,}] (every step of every run's path is kept, evaluated and drawn), "
            f"got {config.max_steps}",
        ),
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
    for key, names in (("losses", list(config.losses)), ("settings", [setting.name for setting in config.settings])):
        repeated = next((name for name in names if names.count(name) > 1), None)
        if repeated is not None:  # a row or column twice: the same runs again, and two panels of one name
            raise InvalidInput(f"{key} must be distinct: {repeated!r} appears twice")
    coefficient_names = QuadraticRegression(degree=config.model.degree).coefficient_names
    if config.parameters is not None:
        chosen = list(config.parameters)
        if len(chosen) != 2 or chosen[0] == chosen[1] or not set(chosen) <= set(coefficient_names):
            raise InvalidInput(f"parameters must be two different names among {coefficient_names}, got {chosen}")
    data = FileDataModule(**config.data)  # checks the data's options
    check_n_train(config.data, config.model.degree)

    def check_run(model_options: dict) -> None:  # one run's model and SGD options, as fitquad fit checks them
        check_model_options(model_options)
        check_limits({"data": data.hparams, "model": model_options, "trainer": {}})

    for_each_setting(config, check_run)


# What a run of the model's own options alone would train with: its lr, and plain SGD.
PLAIN_SGD = OptimizerSetting("the model's own")


def for_each_setting(config, check: Callable[[dict], None]) -> None:
    """`check` of the model's options with each setting's lr and SGD options in place, after the model's own with
    plain SGD: what fails there is the model section's, named as it is; what fails for one setting alone is named
    `settings '<name>': lr …`."""
    for setting in [PLAIN_SGD, *config.settings]:
        try:
            check(run_options(config, config.losses[0], setting))  # the SGD options do not depend on the loss
        except InvalidInput as error:
            if setting is PLAIN_SGD:
                raise
            raise InvalidInput(f"settings {setting.name!r}: {str(error).replace('model.', '')}") from None


def check_first_steps(config, datamodule: FileDataModule) -> None:
    """Each setting's first step on the drawn points, as `fitquad fit` checks it (FitDiagnosis): features, loss and
    step finite in float32, or one line naming the option at fault, before any folder is made. Every setting starts
    from the same model (the grid varies only the loss and SGD), so it is built once."""
    model, (x, y) = started_model(config.model, datamodule.train_x), (datamodule.train_x, datamodule.train_y)
    start = config.model.init_coefficients
    for_each_setting(
        config, lambda options: check_first_step(model, x, y, options["lr"], options["weight_decay"], None, start)
    )


def compare(config, parser: OneLineErrorParser) -> tuple[Path, list[RunResult]]:
    """Run the grid, draw it, write the tables, in runs/<config name>/version_N; returns that folder and the runs."""
    name = config_name(config, default="compare")
    config.name = name  # saved with the config: a re-run from its config.yaml lands under the same name
    datamodule = FileDataModule(**config.data)  # checks the data options before any folder is made
    datamodule.setup("fit")
    check_enough_points(datamodule.train_size, config.model.degree, config.data)  # a file's points, counted as read
    check_first_steps(config, datamodule)
    folder = make_run_folder(Path(RUNS_FOLDER) / name, "the compare config's name")
    print(f"fitquad: compare folder {folder}", flush=True)
    basis = polynomial_basis(datamodule.train_x, config.model.degree)
    y = datamodule.train_y.double()
    names = QuadraticRegression(degree=config.model.degree).coefficient_names
    with lightning_quiet():  # each Trainer would announce its hardware (GPU available: ...) once per run
        results, signalled = run_grid(config, datamodule, basis, y)
    parser.save(config, folder / "config.yaml", skip_unset=False, overwrite=True)
    total = len(config.losses) * len(config.settings)
    if signalled is not None:  # the runs that finished, tabulated and marked; no figure of a part of the grid
        note = f"interrupted by {signal.Signals(signalled).name} after {len(results)} of {total} runs"
        if results:
            write_tables(results, names, folder, note)
        where = f"; their table is in {folder}" if results else ""
        print(f"fitquad compare: {note}{where}", flush=True)
        raise Interrupted(signalled)
    markdown = write_tables(results, names, folder)  # first: a signal while the figure draws leaves the tables whole
    # The surfaces on at most SURFACE_POINTS of the points, as LossLandscape draws them: resolution² losses per
    # panel over millions of points would take hours, and a uniform sample draws the same picture.
    surface_x, surface_y = datamodule.training_sample(SURFACE_POINTS)
    figure = draw_grid(config, results, names, polynomial_basis(surface_x, config.model.degree), surface_y.double())
    figure.savefig(folder / "compare.png", dpi=110)
    print(markdown, end="")
    print(f"fitquad: compare finished in {folder}: compare.png, compare.csv, compare.md", flush=True)
    return folder, results
