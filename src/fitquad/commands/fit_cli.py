"""`fitquad fit`, `validate`, `test` and `predict`: a LightningCLI over QuadraticRegression and QuadraticDataModule,
with every option checked before anything is built, and runs in runs/<config file name>/version_N.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import os
import re
import traceback
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, LRSchedulerTypeTuple, SaveConfigCallback
from torch.optim import Optimizer

from fitquad.callbacks.diagnosis import FitDiagnosis
from fitquad.callbacks.interrupts import CheckpointOnSignal
from fitquad.callbacks.record import TrainingRecord
from fitquad.callbacks.summary import PredictionsCSV, RunSummary
from fitquad.checks.checkpoint_io import check_checkpoint_fits, load_checkpoint
from fitquad.checks.file_data import FileDataModule
from fitquad.checks.limits import check_limits, check_start
from fitquad.checks.validation import (
    InvalidInput,
    check_config,
    check_enough_points,
    check_evaluated_split,
    check_val_check_interval,
)
from fitquad.commands.config_adjustments import (
    check_monitors_after_validation,
    claim_the_run_folder,
    devices_as_text,
    evaluate_into_the_checkpoints_run_folder,
    give_lr_scheduler_the_models_sgd,
    gradient_clipping_as_callback,
    names_a_file,
    progress_bar_only_on_a_terminal,
)
from fitquad.commands.parsing import BUILD_ERRORS, LIGHTNING_LOGGERS, OneLineErrorParser, input_error_behind
from fitquad.commands.run_folders import (
    DEFAULT_RUN_NAME,
    RUNS_FOLDER,
    config_file_stem,
)
from fitquad.core.module import LOGGED_METRICS, QuadraticRegression

TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        # default_hp_metric=False: RunSummary logs the hyperparameters with the real final metrics.
        "init_args": {"save_dir": RUNS_FOLDER, "name": DEFAULT_RUN_NAME, "default_hp_metric": False},
    },
    # Atomic checkpoint writes and weights-only reads (checkpoint_io.py).
    "plugins": {"class_path": "fitquad.checks.checkpoint_io.SafeCheckpointIO"},
    # A 13-line table of an 11-module model with 0 FLOPs tells a beginner nothing: on with
    # --trainer.enable_model_summary true.
    "enable_model_summary": False,
}


# The commands that evaluate a checkpoint.
EVALUATIONS = ("validate", "test", "predict")


class SaveFitConfig(SaveConfigCallback):
    """LightningCLI's config.yaml, for fits only: validate, test and predict write into the run they
    evaluate, whose config.yaml is its fit's and stays as it is."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            # Saved without the version folder fitquad claimed for this run, so that `fitquad fit --config
            # runs/…/config.yaml` re-runs it into a new version folder beside it.
            self.config = self.config.clone()
            loggers = self.config.get("trainer", {}).get("logger")
            for logger in loggers if isinstance(loggers, list) else [loggers]:
                init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
                if init_args is not None and "version" in init_args:
                    init_args.version = None
            super().setup(trainer, pl_module, stage)


class FitquadCLI(LightningCLI):
    run_folder_made: Path | None = None  # the run folder this command made, if it made one

    def __init__(self, *args: Any, only_subcommand: str | None = None, **kwargs: Any) -> None:
        self.only_subcommand = only_subcommand
        super().__init__(*args, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:
        """LightningCLI's subcommands (its documented override point), narrowed to the one being run when it is
        known: building a parser for each of the four, every class's arguments in each, is a large share of every
        command's start-up (benchmarks/README.md). An unknown or missing one keeps them all, for the parser's own error
        and help."""
        every = LightningCLI.subcommands()
        if self.only_subcommand in every:
            return {self.only_subcommand: every[self.only_subcommand]}
        return every

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """LightningCLI's three sections, fitquad's first: `--help` shows the data's and the model's options and
        fitquad's always-on callbacks' before the Trainer's hundred."""
        self.parser.subcommand_parser = parser  # (the root parser: OneLineErrorParser)
        parser.add_lightning_class_args(self.datamodule_class, "data")
        parser.add_lightning_class_args(self.model_class, "model", subclass_mode=self.subclass_mode_model)
        if self.subclass_mode_model:  # a config without model.class_path gets the textbook module
            parser.set_defaults({"model": {"class_path": "fitquad.core.module.QuadraticRegression"}})
        # Always on, whatever trainer.callbacks a config or the command line gives. FitDiagnosis before RunSummary:
        # when a fit diverges, RunSummary's on_exception writes the diagnosis FitDiagnosis's has just made.
        parser.add_lightning_class_args(TrainingRecord, "training_record")
        parser.add_lightning_class_args(FitDiagnosis, "fit_diagnosis")
        parser.add_lightning_class_args(RunSummary, "run_summary")
        parser.add_lightning_class_args(PredictionsCSV, "predictions_csv")
        parser.add_lightning_class_args(CheckpointOnSignal, "checkpoint_on_signal")
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({f"trainer.{k}": v for k, v in self.trainer_defaults.items() if k != "callbacks"})

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # LightningCLI's --optimizer and --lr_scheduler (it adds none of its own once these exist), titled in --help
        # by what they do here rather than by torch's base class and a tuple of classes.
        parser.add_optimizer_args((Optimizer,))
        parser.add_lr_scheduler_args(LRSchedulerTypeTuple)
        parser.groups["optimizer"].title = "--optimizer X: any torch optimizer, in place of the model's SGD"
        parser.groups["lr_scheduler"].title = "--lr_scheduler X: any torch learning-rate scheduler, on the optimizer"
        parser.add_argument(
            "--lightning_info",
            type=bool,
            default=False,
            help="Show Lightning's own info lines (devices, seed, tips, why a fit stopped) beside fitquad's.",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: list[str] | None) -> None:
        super().parse_arguments(parser, args)
        # Ranges first, before anything is set up or printed. Then --ckpt_path, which LightningCLI
        # reads next (with a traceback for a broken file).
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        checked = with_model_options(config)
        check_config(checked, logged=LOGGED_METRICS if fitquads_own_model(config) else None)
        check_evaluated_split(config["data"], subcommand)
        check_limits(checked)
        level = logging.INFO if config.get("lightning_info") else logging.WARNING
        for name in LIGHTNING_LOGGERS:
            logging.getLogger(name).setLevel(level)
        ckpt_path = config.get("ckpt_path")
        if subcommand in EVALUATIONS and ckpt_path is None:
            raise InvalidInput(
                f"{subcommand} needs --ckpt_path, the checkpoint to {subcommand} "
                "(e.g. runs/lesson3/version_0/checkpoints/last.ckpt); without one it would use an untrained model"
            )
        if ckpt_path is not None and names_a_file(str(ckpt_path)):
            check_checkpoint_fits(load_checkpoint(ckpt_path), ckpt_path, subcommand, dict(checked.model))
        elif ckpt_path is not None:
            check_lightnings_own_ckpt_path(str(ckpt_path), subcommand)

    def instantiate_classes(self) -> None:
        # Building the model, data, callbacks and Trainer from a config that passed every check can still
        # fail on a value only the class itself knows to be wrong (devices -1 on a CPU, an accelerator whose
        # package is missing): that is the config's fault, so one line, not a traceback.
        try:
            super().instantiate_classes()
            self.read_data_file()
            if self.trainer.world_size > 1:  # DDP: every process needs an equal part, checked before anything runs
                check_equal_parts(self.datamodule, self.trainer.world_size)
        except BaseException as error:
            if self.run_folder_made is not None:  # made for this run, still empty: nothing ran in it
                with contextlib.suppress(OSError):
                    os.removedirs(self.run_folder_made)  # and its parents while empty (runs/<name>, runs)
            if isinstance(error, InvalidInput) or not isinstance(error, BUILD_ERRORS):
                raise
            cause = input_error_behind(error)
            if cause is not None:
                raise cause from None
            raise refusal(error) from None

    def read_data_file(self) -> None:
        """A fit's points, drawn or read now and checked before anything is written: a bad file, too few points for
        the degree, or a first step that overflows is one line, and leaves no run folder behind (check_start, as a
        sweep checks each run; FitDiagnosis checks again with the optimizer built). Lightning's own setup call then
        finds them ready."""
        fit = self.subcommand in (None, "fit")
        if not fit and self.datamodule.hparams.file is None:
            return
        self.datamodule.setup(self.subcommand or "fit")
        if not fit:
            return
        data, config = self.datamodule, self.config[self.subcommand] if self.subcommand else self.config
        check_enough_points(data.train_size, self.model.hparams.degree, data.hparams)
        if self.trainer.world_size == 1:  # one process trains on all the points (under DDP: on its part)
            check_val_check_interval(config.trainer, lambda: len(data.train_dataloader()))
        if config.get("ckpt_path") is None and config.get("optimizer") is None:  # a start from the model's options
            check_start(self.model.hparams, data.train_x, data.train_y, self.trainer.precision)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand in EVALUATIONS:
            evaluate_into_the_checkpoints_run_folder(config)
        if self.subcommand in (None, "fit") or not names_a_file(str(config.get("ckpt_path"))):
            self.run_folder_made = claim_the_run_folder(config, TRAINER_DEFAULTS["logger"])
        progress_bar_only_on_a_terminal(config)
        gradient_clipping_as_callback(config, manual="fused_steps" in with_model_options(config).model)
        check_monitors_after_validation(config)
        give_lr_scheduler_the_models_sgd(config)
        devices_as_text(config)


# Where in torch or Lightning a class that refuses its arguments lives, and the config's section that built it.
SECTION_OF_SOURCE = (
    ("torch/optim/lr_scheduler", "lr_scheduler"),
    ("torch/optim/", "optimizer"),
    ("lightning/pytorch/callbacks/", "trainer.callbacks"),
    ("lightning/pytorch/trainer/connectors/callback_connector", "trainer.callbacks"),
    ("lightning/pytorch/loggers/", "trainer.logger"),
    ("/plugins/precision/", "trainer.precision"),  # a precision plugin whose package is missing
)


def refusal(error: BaseException) -> InvalidInput:
    """One line for a class that refused the arguments the config gave it, naming who: the section whose class
    raised it (from where in torch or Lightning it was raised), or the Trainer option its message names."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)  # not KeyError's repr
    first = re.search(r"Errors:\n\s*- ([^\n]+)", text)  # jsonargparse's list of why each type refused it: the first
    message = " ".join((first[1] if first else text).split()) or type(error).__name__
    sources = [frame.filename.replace("\\", "/") for frame in traceback.extract_tb(error.__traceback__)]
    if "callbacks.callback.Callback" in text:  # jsonargparse building trainer.callbacks
        sources.append("lightning/pytorch/callbacks/")
    for source in reversed(sources):
        section = next((section for part, section in SECTION_OF_SOURCE if part in source), None)
        if section is not None:
            return InvalidInput(f"{section} is refused: {message}")
    return InvalidInput(f"{trainer_option_named(message)}: {message}")


def refused_at_fit_start(error: ValueError) -> InvalidInput | None:
    """A Trainer option that Lightning refuses only as the fit starts, with the data in hand (val_check_interval
    above an epoch's batches), as one line; None for any other error, which stays a traceback."""
    frames = traceback.extract_tb(error.__traceback__)
    message = " ".join(str(error).split())
    named = trainer_option_named(message)
    if not frames or "lightning/pytorch/" not in frames[-1].filename.replace("\\", "/") or "trainer." not in named:
        return None
    return InvalidInput(f"{named}: {message}")


def trainer_option_named(message: str) -> str:
    """Who refused the config, for Lightning's refusal as it builds the Trainer: `trainer.<option> is refused by
    Lightning` where its message names one of the Trainer's options (`devices`, `Trainer(devices=...)`)."""
    options = inspect.signature(Trainer).parameters
    # Named in backquotes (`devices`, `Trainer(devices=...)`), or bare where the name has an underscore (a word of
    # English could be an option's name: devices, strategy).
    names = re.findall(r"`(?:Trainer\()?(\w+)", message) + re.findall(r"\b([a-z]+(?:_[a-z]+)+)\b", message)
    named = next((name for name in names if name in options), None)
    return f"trainer.{named} is refused by Lightning" if named else "the config cannot be built as given"


def with_model_options(config: Any) -> Any:
    """The parsed config with its model section as the model's options (the init_args of `model.class_path`, which
    names QuadraticRegression or its FusedQuadraticRegression), as the checks read them."""
    flat = config.clone()
    flat.model = config.model.get("init_args") or config.model
    return flat


def fitquads_own_model(config: Any) -> bool:
    """Whether the config's model is one of fitquad's (whose logged metrics are known), not a subclass of your own."""
    class_path = config.model.get("class_path")
    return class_path is None or class_path.startswith("fitquad.")


def check_equal_parts(datamodule: FileDataModule, processes: int) -> None:
    """Under DDP every process trains on an equal part of the points (fitquad.core.data): their gradients' mean is
    then the gradient on all of them."""
    hp = datamodule.hparams
    points = datamodule.train_size if hp.file is not None else hp.n_train
    if points % processes:
        what = "data.n_train" if hp.file is None else "the training points of data.file (after val_fraction)"
        raise InvalidInput(
            f"{what} must be a multiple of the {processes} processes under DDP, so that every "
            f"process gets an equal part; got {points}"
        )


def check_lightnings_own_ckpt_path(ckpt_path: str, subcommand: str | None) -> None:
    """Lightning's own ckpt_path values name checkpoints that a fresh fitquad process never has: "best" (of a fit
    run earlier in the same process) and "hpc" (of a SLURM requeue, in the run folder, which is new) fail with a
    traceback, and "last" would evaluate an untrained model. `fit --ckpt_path last` keeps Lightning's meaning
    (start afresh, with its warning, when there is none), and "registry:…" goes to Lightning's registry."""
    registry = ckpt_path.startswith("registry:")
    if registry and importlib.util.find_spec("litmodels") is None:
        raise InvalidInput(
            f"ckpt_path {ckpt_path} names a checkpoint in Lightning's model registry, whose client (pip install "
            "litmodels) is not installed: give a checkpoint file"
        )
    if ckpt_path in ("best", "hpc") or subcommand in EVALUATIONS and not registry:
        raise InvalidInput(
            f"ckpt_path {ckpt_path!r} names a checkpoint this new process does not have: give a checkpoint file, "
            "e.g. runs/lesson3/version_0/checkpoints/last.ckpt"
        )


def trainer_defaults(command_line: list[str]) -> dict:
    """TRAINER_DEFAULTS, with the logger named after the config file, so that --print_config shows the name the
    run will have (runs/<config name>/version_N)."""
    stem = config_file_stem(command_line)
    if stem is None:
        return TRAINER_DEFAULTS
    logger = {**TRAINER_DEFAULTS["logger"], "init_args": {**TRAINER_DEFAULTS["logger"]["init_args"], "name": stem}}
    return {**TRAINER_DEFAULTS, "logger": logger}


def run_lightning_cli(command_line: list[str], args: list[str] | None) -> FitquadCLI:
    """fit, validate, test or predict: LightningCLI, built and run (its model, data and Trainer are kept on it)."""
    return FitquadCLI(
        QuadraticRegression,
        FileDataModule,
        # model.class_path may name QuadraticRegression's opt-in FusedQuadraticRegression (fitquad.core.fused); a
        # config without one gets the textbook module.
        subclass_mode_model=True,
        only_subcommand=command_line[0] if command_line else None,
        args=args,
        trainer_defaults=trainer_defaults(command_line),
        # Fixed seed: a run is reproducible unless the config says otherwise.
        seed_everything_default=0,
        parser_class=OneLineErrorParser,
        save_config_callback=SaveFitConfig,
    )
