"""The `fitquad` command: a LightningCLI over QuadraticRegression and QuadraticDataModule.

    fitquad fit --config configs/lesson3.yaml
    fitquad fit --config configs/lesson3.yaml --model.lr 0.3 --trainer.max_steps 50
    fitquad fit --config configs/lesson3.yaml --print_config
    fitquad validate --config configs/lesson3.yaml --ckpt_path runs/lesson3/version_0/checkpoints/last.ckpt

Runs land in runs/<config file name>/version_N (TensorBoard events, checkpoints/, config.yaml,
summary.json, train_loss.csv); the folder is printed when a fit starts and when it ends.

Bad input of any kind (a wrong type, an unknown key, an out-of-range value, a broken checkpoint) is
one line on stderr, `fitquad: error: <field> must be ...`, and exit status 2 (see validation.py).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata
import inspect
import logging
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace, get_loader, set_loader
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, LRSchedulerTypeTuple, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.optim import Optimizer

from fitquad.callbacks.diagnosis import FitDiagnosis
from fitquad.callbacks.interrupts import CheckpointOnSignal, Interrupted, sigterm_handler, sigterm_received
from fitquad.callbacks.record import TrainingRecord
from fitquad.callbacks.summary import PredictionsCSV, RunSummary
from fitquad.checks.checkpoint_io import check_checkpoint_fits, load_checkpoint
from fitquad.checks.file_data import FileDataModule
from fitquad.checks.limits import check_limits
from fitquad.checks.validation import (
    InvalidInput,
    check_config,
    check_enough_points,
    check_evaluated_split,
    one_line,
    strict_yaml,
)
from fitquad.commands.config_adjustments import (
    check_monitors_after_validation,
    claim_the_run_folder,
    evaluate_into_the_checkpoints_run_folder,
    give_lr_scheduler_the_models_sgd,
    gradient_clipping_as_callback,
    names_a_file,
    progress_bar_only_on_a_terminal,
)
from fitquad.commands.entry import COMMANDS, overview
from fitquad.commands.run_folders import (
    DEFAULT_RUN_NAME,
    RUNS_FOLDER,
    config_file_stem,
)
from fitquad.core import fused  # imported also so that `--model FusedQuadraticRegression` is known by its name
from fitquad.core.module import QuadraticRegression, TrainingDiverged

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

# Lightning's own info lines (devices, "Seed set", tips and adverts, why a fit stopped) are logged by these
# loggers at INFO; fitquad shows WARNING and above unless --lightning_info true.
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")

# What a class raises when it refuses the arguments it was built with.
BUILD_ERRORS = (TypeError, ValueError, LookupError, ImportError, RuntimeError, MisconfigurationException)


@contextlib.contextmanager
def lightning_quiet() -> Iterator[None]:
    """Lightning's info lines off (see LIGHTNING_LOGGERS) for commands that run many Trainers: sweep, compare."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


# The commands that evaluate a checkpoint.
EVALUATIONS = ("validate", "test", "predict")

# Exit status for bad input, as argparse uses.
BAD_INPUT_STATUS = 2


def report_bad_input(message: str) -> int:
    """Bad input as one line on stderr, with no usage text and no traceback; its exit status."""
    print(f"fitquad: error: {one_line(message)}", file=sys.stderr, flush=True)
    return BAD_INPUT_STATUS


class OneLineErrorParser(LightningArgumentParser):
    """jsonargparse's parser, except that an error is an InvalidInput of one line instead of the whole usage text
    and an exit: the command reports it (run_reporting_failures), fitquad.commands.api raises it."""

    # The subcommand's parser, whose options a hint suggests from (the root parser that reads --config knows only
    # the subcommand's name): set as FitquadCLI fills it.
    subcommand_parser: LightningArgumentParser | None = None

    def error(self, message: str, ex: Exception | None = None) -> None:
        if not self.exit_on_error:  # jsonargparse parsing internally, and catching it
            super().error(message, ex)
        line, hint = one_line(message), ""
        with contextlib.suppress(Exception):  # a hint is a help, never a second failure
            hint = did_you_mean(line, self)
        note = re.search(r" \(`[^`]*` lists (the options|them)\)$", line)  # the hint goes before the closing note
        at = note.start() if note else len(line)
        raise InvalidInput(line[:at] + hint + line[at:])


# Where a one-line error names an option that does not exist: unrecognized on the command line, not an option
# of the model's class, not an option of a config file's section.
UNKNOWN_OPTION = (
    re.compile(r"unrecognized arguments: (?P<given>\S+)"),
    re.compile(r"^(?P<given>\S+) is not an option of"),
    re.compile(r"does not accept option '(?P<given>[^']+)'"),
)


def did_you_mean(line: str, parser: LightningArgumentParser) -> str:
    """The option nearest to an unknown one, as a hint to append to its error ("" when none is near): a typo
    (--model.lrr: --model.lr), or the right name under another section (--max_steps: --trainer.max_steps)."""
    match = next((found for pattern in UNKNOWN_OPTION if (found := pattern.search(line))), None)
    if match is None:
        return ""
    given = match["given"]
    if not given.startswith("-") and match.re is UNKNOWN_OPTION[0]:  # a word alone: a config file given bare?
        return f"; give a config file with --config {given}" if given.endswith((".yaml", ".yml")) else ""
    name = given.lstrip("-")
    if match.re is UNKNOWN_OPTION[2] and OneLineErrorParser.subcommand_parser is not None:  # a key of a config file
        parser = OneLineErrorParser.subcommand_parser
    known = [key.replace(".init_args.", ".") for key in parser.get_defaults().keys()]
    known += [key.split(".", 1)[1] for key in known if key.split(".", 1)[0] in LightningCLI.subcommands()]
    model_class = re.search(r"is not an option of (\w+)", line)
    if model_class:  # the chosen class's own options (model.class_path may name the fused subclass)
        chosen = next(
            cls for cls in (QuadraticRegression, fused.FusedQuadraticRegression) if cls.__name__ == model_class[1]
        )
        known += [f"model.{option}" for cls in chosen.__mro__[:2] for option in inspect.signature(cls).parameters]
    nearest = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
    nearest = nearest or [key for key in known if key.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]][:1]
    return f"; did you mean --{nearest[0]}?" if nearest else ""


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
        OneLineErrorParser.subcommand_parser = parser
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
        check_config(checked)
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
            message = " ".join(str(error).split()) or type(error).__name__
            raise InvalidInput(f"the config cannot be built as given: {message}") from None

    def read_data_file(self) -> None:
        """Points from a file (data.file), read and checked now, before anything is written: a bad file is one
        line and leaves no run folder behind. Lightning's own setup call then finds them read."""
        if self.datamodule.hparams.file is None:
            return
        self.datamodule.setup(self.subcommand or "fit")
        if self.subcommand in (None, "fit"):
            check_enough_points(self.datamodule.train_size, self.model.hparams.degree)

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


def with_model_options(config: Any) -> Any:
    """The parsed config with its model section as the model's options (the init_args of `model.class_path`, which
    names QuadraticRegression or its FusedQuadraticRegression), as the checks read them."""
    flat = config.clone()
    flat.model = config.model.get("init_args") or config.model
    return flat


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


# Commands beyond LightningCLI's fit/validate/test/predict: name -> "module:function", imported only
# when used, so `fitquad fit` pays nothing for them. Each function takes the remaining arguments.
EXTRA_COMMANDS: dict[str, str] = {
    "sweep": "fitquad.commands.sweep_runs:main",
    "compare": "fitquad.commands.compare_grid:main",
    "lr-find": "fitquad.commands.lr_find:main",
}


def check_lightnings_own_ckpt_path(ckpt_path: str, subcommand: str | None) -> None:
    """Lightning's own ckpt_path values name checkpoints that a fresh fitquad process never has: "best" (of a fit
    run earlier in the same process) and "hpc" (of a SLURM requeue, in the run folder, which is new) fail with a
    traceback, and "last" would evaluate an untrained model. `fit --ckpt_path last` keeps Lightning's meaning
    (start afresh, with its warning, when there is none), and "registry:…" goes to Lightning's registry."""
    refused = ckpt_path in ("best", "hpc") or subcommand in EVALUATIONS and not ckpt_path.startswith("registry:")
    if refused:
        raise InvalidInput(
            f"ckpt_path {ckpt_path!r} names a checkpoint this new process does not have: give a checkpoint file, "
            "e.g. runs/lesson3/version_0/checkpoints/last.ckpt"
        )


def version() -> str:
    import lightning
    import torch

    fitquad = importlib.metadata.version("fitquad")
    return f"fitquad {fitquad} (lightning {lightning.__version__}, torch {torch.__version__})"


def input_error_behind(error: BaseException) -> InvalidInput | None:
    """The InvalidInput that caused `error`, if one did (a class refusing its arguments while jsonargparse
    built it from the config)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InvalidInput):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def settle_warnings_and_yaml() -> None:
    """What every fitquad command sets up first: Lightning's warnings that do not apply to fitquad off (each by its
    message, with why), and the strict YAML loader for config files."""
    # The module logs every trainer.log_every_n_steps optimizer steps itself, so Lightning's warning that
    # an epoch has fewer training_steps than that interval (always true with fused steps) does not apply.
    warnings.filterwarnings("ignore", message="The number of training batches .* is smaller than the logging")
    # Lightning 2.6 with torch 2.13 warns about its own use of a deprecated torch API, on every run.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # A step checkpoint under manual optimization holds the state after that step's update, as it does under
    # automatic optimization: what a checkpoint at global_step k should hold, not a problem to warn about.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization and every_n_train_steps")
    # No validation points (data.n_val 0, data.val_fraction 0) is a choice: the data module then gives Lightning an
    # empty validation loader, which it warns about as if by mistake.
    warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")
    # A resumed fit is a new run, in its own folder, by design: its ModelCheckpoint starts a fresh best-k list.
    warnings.filterwarnings("ignore", message="The dirpath has changed from")
    # `--optimizer X` replaces the model's SGD: what the option is for (README), not a surprise to warn about.
    warnings.filterwarnings("ignore", message=r"`\w*QuadraticRegression.configure_optimizers` will be overridden by")
    # Every config file fitquad reads (fit, sweep, compare, lr-find) goes through jsonargparse's YAML loader.
    if not getattr(get_loader("yaml"), "strict", False):
        strict = strict_yaml(get_loader("yaml"))
        strict.strict = True
        set_loader("yaml", strict, exceptions=(yaml.YAMLError,))


def main(args: list[str] | None = None) -> None:
    settle_warnings_and_yaml()
    command_line = sys.argv[1:] if args is None else args
    if command_line[:1] in ([], ["-h"], ["--help"]):
        print(overview(), file=sys.stdout if command_line else sys.stderr)
        sys.exit(0 if command_line else BAD_INPUT_STATUS)
    if command_line[:1] == ["--version"]:
        print(version())
        return
    if command_line[0] not in COMMANDS:  # LightningCLI's own error would name its four commands only
        nearest = difflib.get_close_matches(command_line[0], COMMANDS, n=1)
        hint = f"did you mean {nearest[0]}? " if nearest else ""
        print(
            f"fitquad: error: {command_line[0]!r} is not a command: {hint}the commands are {', '.join(COMMANDS)} "
            "(`fitquad --help` says what each does)",
            file=sys.stderr,
        )
        sys.exit(BAD_INPUT_STATUS)
    failed_writes: list[OSError] = []
    report_thread_failure = threading.excepthook

    def note_failed_write(failure: threading.ExceptHookArgs) -> None:
        # TensorBoard writes from a thread of its own: a full disk there is noted, and told as one line below.
        if isinstance(failure.exc_value, OSError):
            failed_writes.append(failure.exc_value)
        else:
            report_thread_failure(failure)

    threading.excepthook = note_failed_write
    try:
        with sigterm_handler():
            status = run_reporting_failures(command_line, args)
    finally:
        threading.excepthook = report_thread_failure
    if failed_writes and not status:
        status = report_failed_write(failed_writes[0])
    if status:
        sys.exit(status)


def run_reporting_failures(command_line: list[str], args: list[str] | None) -> int:
    """Run one command; every way it can fail that is not a bug in fitquad becomes one line on stderr and the
    exit status: 2 for bad input, 1 for a diverged fit or a file that cannot be written, 128 + the signal's
    number for SIGTERM and Ctrl-C (the shell's status for a program stopped by it). A bug keeps its traceback."""
    try:
        return run_command(command_line, args)
    except (InvalidInput, MisconfigurationException) as error:  # the input is wrong
        return report_bad_input(str(error))
    except TrainingDiverged as diverged:  # the divergence guard
        print(f"fitquad: error: {diverged}", file=sys.stderr, flush=True)
        return 1
    except OSError as error:  # the file system: full, read-only, gone (files written before stay whole)
        return report_failed_write(error)
    except SIGTERMException:  # outside a Trainer's run (interrupts.py); inside, CheckpointOnSignal saved first
        print("fitquad: stopped by SIGTERM", file=sys.stderr, flush=True)
        return 128 + signal.SIGTERM
    except Interrupted as interrupted:  # a sweep's or comparison's Trainer, stopped by a signal
        print(f"fitquad: {interrupted}", file=sys.stderr, flush=True)
        return 128 + interrupted.signum
    except KeyboardInterrupt:  # Ctrl-C outside a Trainer's run: nothing to save
        print("fitquad: stopped by Ctrl-C", file=sys.stderr, flush=True)
        return 128 + signal.SIGINT


def trainer_defaults(command_line: list[str]) -> dict:
    """TRAINER_DEFAULTS, with the logger named after the config file, so that --print_config shows the name the
    run will have (runs/<config name>/version_N)."""
    stem = config_file_stem(command_line)
    if stem is None:
        return TRAINER_DEFAULTS
    logger = {**TRAINER_DEFAULTS["logger"], "init_args": {**TRAINER_DEFAULTS["logger"]["init_args"], "name": stem}}
    return {**TRAINER_DEFAULTS, "logger": logger}


def report_failed_write(error: OSError) -> int:
    what = f"{error.filename}: " if error.filename else ""
    print(
        f"fitquad: error: a file could not be written or read: {what}{error.strerror or error} "
        "(the checkpoints written before it are whole)",
        file=sys.stderr,
        flush=True,
    )
    return 1


def run_command(command_line: list[str], args: list[str] | None) -> int:
    """One command, run; its exit status: 0, or 128 + the signal that stopped it."""
    if command_line[0] in EXTRA_COMMANDS:
        module_name, function_name = EXTRA_COMMANDS[command_line[0]].split(":")
        getattr(importlib.import_module(module_name), function_name)(command_line[1:])
        return 128 + signal.SIGTERM if sigterm_received() else 0
    cli = run_lightning_cli(command_line, args)
    interrupted_by = next((c.received for c in cli.trainer.callbacks if isinstance(c, CheckpointOnSignal)), None)
    if interrupted_by is None and sigterm_received():  # after the last training step, or in validate/test/predict
        print("fitquad: SIGTERM arrived as the command was finishing; its results are written", file=sys.stderr)
        interrupted_by = signal.SIGTERM
    return 0 if interrupted_by is None else 128 + interrupted_by


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


if __name__ == "__main__":
    main()
