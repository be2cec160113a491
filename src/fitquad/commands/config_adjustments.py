"""What fitquad changes in a parsed config before LightningCLI builds the classes from it, and why: where the
run lands, where an evaluation writes, the progress bar, clipping as a callback, when monitors act, and the SGD
an --lr_scheduler needs. Each function takes the subcommand's config (a jsonargparse Namespace) and changes it
in place.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from jsonargparse import Namespace

from fitquad.commands.run_folders import RUNS_FOLDER, claim_logger_folder, config_name, make_run_folder
from fitquad.theory.conditioning import SGD_OPTIONS

# Loggers that write into a version folder of their own (run_folders.py makes it).
FOLDER_LOGGERS = ("TensorBoardLogger", "CSVLogger")


def names_a_file(ckpt_path: str) -> bool:
    """A file path, as opposed to one of Lightning's own ckpt_path values ("last", "best", "registry:…"),
    which Lightning resolves itself: an existing file, or anything shaped like a path."""
    path = Path(ckpt_path)
    return path.exists() or len(path.parts) > 1 or path.suffix in (".ckpt", ".pt", ".pth")


def give_lr_scheduler_the_models_sgd(config: Namespace) -> None:
    # LightningCLI builds an --lr_scheduler only together with an optimizer it builds itself (--optimizer); without one
    # it drops the scheduler silently. So hand it the model's own SGD.
    if config.get("lr_scheduler") is None or config.get("optimizer") is not None:
        return
    model = config.model.get("init_args") or config.model  # fit's model.class_path/init_args, or sweep's options
    config.optimizer = Namespace(
        class_path="torch.optim.SGD", init_args=Namespace({name: model[name] for name in SGD_OPTIONS})
    )


def check_monitors_after_validation(config: Namespace) -> None:
    # EarlyStopping and a ModelCheckpoint that monitors a metric, left to choose, act at the end of each training epoch,
    # just after its validation: the same moment, except right after resuming from a checkpoint saved at an epoch's end,
    # where Lightning ends the restored epoch before any validation (no val/loss yet: EarlyStopping fails,
    # ModelCheckpoint warns). Acting after each validation instead is the same in a plain run, and right on resume.
    options = {"EarlyStopping": "check_on_train_epoch_end", "ModelCheckpoint": "save_on_train_epoch_end"}
    for callback in config.trainer.get("callbacks") or []:
        name = str(callback.get("class_path", "")).rsplit(".", 1)[-1]
        init_args = callback.get("init_args")
        if name in options and init_args is not None and init_args.get("monitor") is not None:
            if init_args.get(options[name]) is None:
                init_args[options[name]] = False


def evaluate_into_the_checkpoints_run_folder(config: Namespace) -> None:
    # validate, test and predict are about a checkpoint's run: their results (metrics JSON, predictions.csv) go into
    # that run's folder, and they make no TensorBoard run of their own.
    ckpt_path = str(config.ckpt_path)
    if not names_a_file(ckpt_path):  # one of Lightning's own values ("last", "best", ...)
        return
    checkpoint = Path(ckpt_path)
    folder = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    config.trainer.logger = False
    config.trainer.default_root_dir = str(folder)


def progress_bar_only_on_a_terminal(config: Namespace) -> None:
    # A progress bar redrawn into a file or a pipe is megabytes of carriage returns: on a terminal only (the bar writes
    # to stdout, so stdout is what must be one: `fitquad fit … | tee run.log` gets no bar frames), unless
    # trainer.enable_progress_bar says otherwise. Off, the configs' progress-bar callbacks go too (Lightning refuses one
    # with enable_progress_bar false).
    trainer = config.trainer
    if trainer.get("enable_progress_bar") is None:
        trainer.enable_progress_bar = sys.stdout.isatty()
    if not trainer.enable_progress_bar:
        callbacks = trainer.get("callbacks") or []
        trainer.callbacks = [c for c in callbacks if not str(c.get("class_path", "")).endswith("ProgressBar")]


def claim_the_run_folder(config: Namespace, default_logger: dict) -> Path | None:
    """Every run gets a fresh folder of its own, made now (run_folders.py): the logger's version folder (named
    after the config by the CLI's trainer defaults); or, without a logger, trainer.default_root_dir (Lightning's
    default, the current folder, would mix runs' checkpoints and figures). Under trainer.fast_dev_run, which sets
    the loggers aside, the first logger's folder is trainer.default_root_dir too, where fitquad's files then go.
    Returns the folder made (None: the config names its own)."""
    trainer = config.trainer
    made = None
    if trainer.get("logger") is True:  # Lightning's own default would be ./lightning_logs
        init_args = Namespace(**{**default_logger["init_args"], "name": config_name(config)})
        trainer.logger = Namespace(class_path=default_logger["class_path"], init_args=init_args)
    loggers = trainer.get("logger")
    if loggers in (None, False):
        if trainer.get("default_root_dir") is None:
            folder = make_run_folder(Path(RUNS_FOLDER) / config_name(config), "the config's name")
            trainer.default_root_dir = str(folder)
            made = folder
        return made
    for index, logger in enumerate(loggers if isinstance(loggers, list) else [loggers]):
        init_args = logger.get("init_args") if hasattr(logger, "get") else None
        if init_args is None or not str(logger.get("class_path", "")).endswith(FOLDER_LOGGERS):
            continue
        field = "trainer.logger" if not isinstance(loggers, list) else f"trainer.logger[{index}]"
        had_version = init_args.get("version") is not None
        claim_logger_folder(logger, field)
        parent = Path(str(init_args.get("save_dir") or ".")) / str(init_args.get("name") or "")
        version = init_args["version"]
        folder = parent / (version if isinstance(version, str) else f"version_{version}")
        made = made if had_version else folder
        if trainer.get("fast_dev_run") and trainer.get("default_root_dir") is None:
            trainer.default_root_dir = str(folder)
    return made


def devices_as_text(config: Namespace) -> None:
    """A callback option that defaults to a torch.device (StochasticWeightAveraging's device) given as its name:
    jsonargparse cannot write a device object into the run's config.yaml (it wrote "Unable to serialize instance
    cpu" there, with a warning), and the callbacks take the name as well."""
    for callback in config.trainer.get("callbacks") or []:
        init_args = callback.get("init_args") or {}
        for name, value in list(init_args.items()):
            if isinstance(value, torch.device):
                init_args[name] = str(value)


def gradient_clipping_as_callback(config: Namespace, manual: bool) -> None:
    """`--trainer.gradient_clip_val` as the GradientClipping callback, with the same value and algorithm, for a
    manually optimized model (FusedQuadraticRegression, a batched sweep): Lightning refuses that Trainer option
    under manual optimization. The textbook QuadraticRegression leaves clipping to Lightning."""
    if not manual:
        return
    trainer = config.trainer
    value, algorithm = trainer.get("gradient_clip_val"), trainer.get("gradient_clip_algorithm") or "norm"
    trainer.gradient_clip_val = trainer.gradient_clip_algorithm = None
    if not value:  # None or 0: no clipping, as Lightning reads it
        return
    clipping = Namespace(
        class_path="fitquad.callbacks.clipping.GradientClipping",
        init_args=Namespace(gradient_clip_val=value, gradient_clip_algorithm=algorithm),
    )
    trainer.callbacks = [*(trainer.get("callbacks") or []), clipping]
