"""`fitquad sweep`: a fit config plus a `sweep:` section (SweepSettings), trained once per value of one setting, every
value checked as `fitquad fit` checks it before any run trains; as one batched model (sweep_batched.py) where the runs
allow it, else one Trainer each. How to read runs/<config name>/version_N: docs/over-and-underfitting.md.
"""

from __future__ import annotations

import json
import signal
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from jsonargparse import ActionConfigFile, Namespace
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.loggers import TensorBoardLogger

from fitquad.callbacks.interrupts import CheckpointOnSignal, Interrupted, stopped_by
from fitquad.callbacks.summary import RunSummary
from fitquad.checks.checkpoint_io import SafeCheckpointIO
from fitquad.checks.file_data import FileDataModule
from fitquad.checks.limits import check_limits, check_start
from fitquad.checks.validation import (
    GENERATED_ONLY,
    InvalidInput,
    check_config,
    check_enough_points,
    check_val_check_interval,
)
from fitquad.commands.config_adjustments import devices_as_text
from fitquad.commands.parsing import BUILD_ERRORS, OneLineErrorParser, lightning_quiet
from fitquad.commands.run_folders import RUNS_FOLDER, config_name, make_run_folder
from fitquad.commands.sweep_batched import check_batched_memory, train_batched, why_not_batched
from fitquad.commands.sweep_report import SweepPoint, write_results
from fitquad.core.module import QuadraticRegression, TrainingDiverged
from fitquad.theory import reference
from fitquad.theory.conditioning import OptimizerSettings, divergence_line

SWEEPABLE_SECTIONS = ("data.", "model.", "trainer.")


@dataclass
class SweepSettings:
    """The `sweep:` section of a sweep config.

    Args:
        parameter: The one setting that varies, as a dotted key of the config: model.degree, data.n_train, ...
        values: Its values, one run each, in this order (also the x-axis of the figure): numbers, null where the
            setting takes it (data.batch_size null: full batch), true and false (model.nesterov), or names for a
            setting that takes them (model.loss: [mse, l1, huber, smooth_l1]; model.feature_scaling).
        x_scale: The figure's x-axis: "log" for values spanning decades (n_train, weight_decay).
        draws: Independent data draws per value (draw k: data.seed + k). Above 1: each value's mean and spread,
            and bias² + variance + σ² (fitquad.theory.bias_variance); needs the runs batched.
        batched: null: all runs as one batched model whenever they allow it (full-batch SGD;
            fitquad.commands.sweep_batched), else one Trainer per value; false: one Trainer per value; true:
            batched, or say why not.
    """

    parameter: str
    values: list[int | float | bool | str | None]
    x_scale: Literal["linear", "log"] = "linear"
    draws: int = 1
    batched: bool | None = None


# ---- one run -----------------------------------------------------------------------------------
def run_label(parameter: str, value: int | float | str, values: list[int | float | str]) -> str:
    """The run's folder name: degree_03, n_train_0015, weight_decay_0.001, loss_huber, batch_size_null."""
    name = parameter.rsplit(".", 1)[-1]
    if isinstance(value, str):
        return f"{name}_{value}"
    if all(isinstance(v, int) for v in values):
        width = len(str(max(abs(v) for v in values)))
        return f"{name}_{value:0{width}d}"
    return f"{name}_{value:g}"


def train_one(
    parser: LightningArgumentParser, config: Namespace, value: int | float | str, folder: Path, label: str
) -> tuple[SweepPoint, signal.Signals | None]:
    """Fit one configuration with its own Trainer, logging to folder/label, and compare it with its optimum.
    Returns the point and the signal that arrived after its training was done, if one did."""
    L.seed_everything(config.seed_everything, verbose=False)
    init = parser.instantiate(config)
    trainer_options = dict(init.trainer.items())
    if trainer_options.get("devices") == "auto":  # one device, in this process: "auto" takes every GPU, with DDP
        trainer_options["devices"] = 1
    # name="" and version=label: the run's folder is folder/label, beside the sweep's other runs.
    trainer_options["logger"] = TensorBoardLogger(save_dir=folder, name="", version=label, default_hp_metric=False)
    trainer_options["default_root_dir"] = folder / label  # where fitquad's files go if fast_dev_run sets it aside
    # Checkpoints written atomically and read weights-only, as `fitquad fit` writes and reads them.
    trainer_options["plugins"] = trainer_options.get("plugins") or [SafeCheckpointIO()]
    on_signal = CheckpointOnSignal()
    trainer_options["callbacks"] = [*(trainer_options.get("callbacks") or []), RunSummary(), on_signal]
    trainer = L.Trainer(**trainer_options)
    module, datamodule, diverged = init.model, init.data, None
    try:
        trainer.fit(module, datamodule=datamodule)
    except TrainingDiverged as error:  # a result of this value, not the sweep's end: marked in the table
        settings = OptimizerSettings.of(trainer.optimizers[0])
        diverged = divergence_line(error, module.model, datamodule.train_x, module.loss_fn, settings)
    if on_signal.checkpoint_path is not None:  # stopped mid-training by Ctrl-C or SIGTERM, after saving
        raise Interrupted(on_signal.received)
    return measure(module, datamodule, trainer, value, label, diverged), on_signal.received


def measure(
    module: QuadraticRegression, datamodule: FileDataModule, trainer: L.Trainer, value: int | float | str,
    label: str, diverged: str | None,
) -> SweepPoint:  # fmt: skip
    """The trained run's point: its train and validation MSE beside those of its loss's closed-form optimum."""
    train, val = (datamodule.train_x, datamodule.train_y), (datamodule.val_x, datamodule.val_y)
    with torch.no_grad():
        predictions = [module.model.cpu()(x.to(module.dtype)).double() for x, _ in (train, val)]
    optimum_train_mse, optimum_val_mse, gap = reference.against_optimum(
        module.model, train, val, module.loss_fn, module.hparams.weight_decay, torch.cat(predictions)
    )
    train_mse, val_mse = (
        torch.mean((p - y.double()) ** 2).item() for p, (_, y) in zip(predictions, (train, val), strict=True)
    )
    result = {"train_mse": train_mse, "val_mse": val_mse, "optimum_train_mse": optimum_train_mse,
              "optimum_val_mse": optimum_val_mse, "gap": gap, "diverged": diverged}  # fmt: skip
    return SweepPoint.of_draws(value, label, [result], trainer.global_step, trainer.current_epoch,
                               datamodule.true_noise_std, datamodule.train_size, module.hparams.degree + 1)  # fmt: skip


# ---- the command -------------------------------------------------------------------------------
def make_parser() -> LightningArgumentParser:
    """The fit config's sections, as `fitquad fit` reads them, plus `sweep:`."""
    parser = OneLineErrorParser(prog="fitquad sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="a sweep config (configs/capacity.yaml)")
    parser.add_argument("--seed_everything", type=int, default=0, help="seed set before each run")
    parser.add_argument("--name", type=str | None, default=None, help="runs/<name>/: default, the config's file name")
    parser.add_lightning_class_args(L.Trainer, "trainer")
    parser.add_lightning_class_args(QuadraticRegression, "model")
    parser.add_lightning_class_args(FileDataModule, "data")
    parser.add_class_arguments(SweepSettings, "sweep")
    return parser


def parse_value(parser: LightningArgumentParser, args: list[str], parameter: str, value: object) -> Namespace:
    """The sweep's config with one value in place, as a command-line override; a value of the wrong type is one line
    naming sweep.values (not the setting's own key, which the user did not type)."""
    text = value if isinstance(value, str) else json.dumps(value)  # as typed: None is null
    if text.lstrip().startswith(("[", "{")):  # jsonargparse keeps a value that is no number or name as its text
        raise InvalidInput(
            f"sweep.values: {text} holds lists or mappings; a sweep's values are numbers, names, true or false, or "
            "null, one run each"
        )
    try:
        return parser.parse_args([*args, f"--{parameter}", text])
    except InvalidInput as error:
        shown = "null" if value is None else repr(value)
        raise InvalidInput(f"sweep.values: {shown} is not a value {parameter} takes ({error})") from None


def blamed_on_the_value(error: InvalidInput, check_the_base: Callable[[], None]) -> InvalidInput:
    """A check's refusal of one value's run, blamed where it belongs: on the base config when the same check refuses
    it too (its data, its other options), else on the value (`sweep.values: ...`)."""
    try:
        check_the_base()
    except InvalidInput:
        return error
    return InvalidInput(f"sweep.values: {error}")


def checked(parser: LightningArgumentParser, run_config: Namespace, parameter: str) -> None:
    """A run's config, checked as `fitquad fit` checks its config (check_config, check_limits) and built (the model,
    the data module, and for a Trainer setting the Trainer, which refuses a bad option only as it is built)."""
    check_config(run_config)
    check_limits(run_config)
    QuadraticRegression(**run_config.model)
    FileDataModule(**run_config.data)
    if parameter.startswith("trainer."):
        # Built only to be checked: its info lines and warnings (16-mixed on a CPU) come when the run builds its own.
        with lightning_quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            L.Trainer(**parser.instantiate(run_config).trainer)


def check_value(
    parser: LightningArgumentParser, run_config: Namespace, parameter: str, value: object, base: Namespace
) -> None:
    """One value's run, `checked` before any run trains or the sweep's folder is made; `base` is the sweep's config
    without the value, for blamed_on_the_value."""
    try:
        checked(parser, run_config, parameter)
    except InvalidInput as error:
        raise blamed_on_the_value(error, lambda: checked(parser, base, parameter)) from None
    except BUILD_ERRORS as error:
        message = " ".join(str(error).split()) or type(error).__name__
        raise InvalidInput(f"sweep.values: {parameter} {value!r} is refused by Lightning: {message}") from None


def sweep(args: list[str]) -> tuple[list[SweepPoint], Path]:
    """Run a sweep from command-line arguments; returns the points, also written to the sweep folder, and the
    folder."""
    parser = make_parser()
    config = parser.parse_args(args)
    # Namespace has a values() method, so the sweep's values are read by key, not by attribute.
    parameter, values, x_scale = config["sweep.parameter"], config["sweep.values"], config["sweep.x_scale"]
    if not parameter.startswith(SWEEPABLE_SECTIONS) or parameter not in config:
        parser.error(
            f"sweep.parameter must be a setting of the data, model or trainer section (e.g. model.degree); "
            f"got {parameter!r}"
        )
    if not values:
        parser.error("sweep.values must list at least one value")
    if config["data.file"] is not None and parameter.removeprefix("data.") in GENERATED_ONLY:
        parser.error(f"sweep.parameter {parameter} is for generated data: with data.file it would change nothing")
    # Each value parsed as a command-line override, checked and built (check_value) before anything is written.
    run_configs = [parse_value(parser, args, parameter, value) for value in values]
    for run_config, value in zip(run_configs, values, strict=True):
        check_value(parser, run_config, parameter, value, config)
    check_on_the_data(run_configs, parameter, config)
    check_one_process(run_configs)
    if any(value is None or isinstance(value, str | bool) for value in values):  # names, null, true: a category axis
        values = [value if isinstance(value, str) else json.dumps(value) for value in values]  # as configs write them
    labels = [run_label(parameter, value, values) for value in values]
    repeated = next((value for value, label in zip(values, labels, strict=True) if labels.count(label) > 1), None)
    if repeated is not None:
        parser.error(f"sweep.values must be distinct: {repeated} appears twice (its runs would share one folder)")
    draws = config["sweep.draws"]
    batched = choose_batching(parser, run_configs, draws, config["sweep.batched"])

    name = config_name(config, default="sweep")
    config.name = name  # saved with the config: a re-run from its config.yaml lands under the same name
    folder = make_run_folder(Path(RUNS_FOLDER) / name, "the sweep config's name")
    devices_as_text(config)
    parser.save(config, folder / "config.yaml", skip_validation=True)
    how = f"{len(values)} values × {draws} data draws, as one batched fit" if batched else f"{len(values)} runs"
    print(f"fitquad sweep: {how} of {parameter} in {folder}", flush=True)

    points: list[SweepPoint] = []
    try:
        with lightning_quiet():  # each Trainer would announce its hardware (GPU available: ...) once per run
            if batched:
                for point in train_batched(parser, run_configs, values, labels, folder, draws):
                    points.append(point)
                    print(f"fitquad sweep: {parameter}={point.value}: {result_line(point)}", flush=True)
            else:
                run_all(points, parser, run_configs, values, labels, parameter, folder)
    except BaseException as stopped:  # the runs that finished are tabulated, marked, whatever stopped the sweep
        note = f"interrupted after {len(points)} of {len(values)} runs: {stopped_by(stopped)}"
        if points:
            write_results(points, parameter, x_scale, name, folder, note)
        where = f"; their table is in {folder}" if points else ""
        print(f"fitquad sweep: {note}{where}", flush=True)
        raise
    write_results(points, parameter, x_scale, name, folder)
    return points, folder


def check_one_process(run_configs: list[Namespace]) -> None:
    """Every run on one device in this process: Lightning's DDP would start this whole command again in each new
    process (a sweep of DDP fits is `fitquad fit` once a value)."""
    for trainer in (run_config.trainer for run_config in run_configs):
        if trainer.num_nodes != 1 or several_devices(trainer.devices):
            raise InvalidInput(
                "a sweep trains its runs one after another in this process: trainer.devices must be 1 and "
                f"trainer.num_nodes 1, got devices {trainer.devices}, num_nodes {trainer.num_nodes} (DDP: fitquad fit)"
            )


def several_devices(devices: int | str | list) -> bool:
    """Whether a trainer.devices value asks for more than one device ("auto": one, as a sweep's runs take it; -1:
    every one)."""
    if isinstance(devices, list | tuple):
        return len(devices) > 1
    text = str(devices).strip()
    listed = [part for part in text.split(",") if part.strip()]  # "0,1": those GPUs
    return len(listed) > 1 or text == "-1" or (text.isdigit() and int(text) > 1)


def check_on_the_data(run_configs: list[Namespace], parameter: str, base: Namespace) -> None:
    """Every run on its training points, as `fitquad fit` checks a fit before it trains: a data file read (a bad
    file leaves no sweep folder), enough points for the degree, and the first step finite (check_start). The points
    are drawn or read once, or once a value where the sweep's setting is a data option."""

    def drawn(run_config: Namespace) -> FileDataModule:
        data = FileDataModule(**run_config.data)
        data.setup("fit")
        return data

    def check_on(run_config: Namespace, data: FileDataModule) -> None:
        check_enough_points(len(data.train_x), run_config.model.degree, run_config.data)
        check_start(run_config.model, data.train_x, data.train_y, run_config.trainer.precision)
        check_val_check_interval(run_config.trainer, lambda: len(data.train_dataloader()))

    data = None
    for run_config in run_configs:
        try:
            if data is None or parameter.startswith("data."):
                data = drawn(run_config)
            check_on(run_config, data)
        except InvalidInput as error:
            raise blamed_on_the_value(error, lambda: check_on(base, drawn(base))) from None


def choose_batching(parser: LightningArgumentParser, run_configs: list[Namespace], draws: int,
                    batched: bool | None) -> bool:  # fmt: skip
    """Whether the runs train as one batched fit: sweep.batched, or when null whether they can. Draws need it;
    what cannot be batched, or would not fit in memory, is refused in one line."""
    if draws < 1:
        parser.error(f"sweep.draws must be ≥ 1, got {draws}")
    if draws > 1 and batched is False:
        parser.error(f"sweep.draws {draws} needs the runs batched: set sweep.batched null (or true), or sweep.draws 1")
    reason = why_not_batched(run_configs, draws)
    if reason is not None and (batched or draws > 1):
        what = f"sweep.draws {draws}" if draws > 1 else "sweep.batched true"
        parser.error(f"{what} needs the runs batched, and these cannot be: {reason}")
    if reason is not None or batched is False:
        return False
    try:
        check_batched_memory(run_configs, draws)
    except InvalidInput as error:
        parser.error(str(error))
    return True


def run_all(points: list, parser, run_configs: list, values: list, labels: list[str], parameter: str, folder: Path):
    """Train each value in turn, appending its SweepPoint to `points` as soon as it is done."""
    for value, run_config, label in zip(values, run_configs, labels, strict=True):
        point, signalled = train_one(parser, run_config, value, folder, label)
        points.append(point)
        print(f"fitquad sweep: {parameter}={value}: {result_line(point)}", flush=True)
        if signalled is not None:  # after this run had finished: it is kept, the sweep stops here
            raise Interrupted(signalled)


def result_line(point: SweepPoint) -> str:
    if point.diverged and point.draws == 1:
        return f"diverged ({point.diverged})"
    mean = "mean " if point.draws > 1 else ""
    result = f"{mean}train MSE {point.train_mse:.4g}, {mean}val MSE {point.val_mse:.4g}, gap to optimum {point.gap:.2g}"
    return result + (f"; {point.diverged}" if point.diverged else "")


def main(args: list[str] | None = None) -> None:
    points, _ = sweep(sys.argv[1:] if args is None else args)  # bad input: InvalidInput, one line (cli.py)
    diverged = [p for p in points if p.diverged]
    if diverged:  # as `fitquad fit` does for a diverged run: the table is written, the status says so
        values = ", ".join(str(p.value) for p in diverged)
        print(f"fitquad sweep: error: {len(diverged)} run(s) diverged ({values}): see the table", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
