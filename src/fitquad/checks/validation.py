"""Bad input: range checks on every option, as tables of (option, test, what is allowed), and the options that only make
sense together. A failure is an InvalidInput naming the field and what is allowed; the command prints it as one line
and exits with status 2.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from fitquad.core import InvalidInput  # the core's own error type: every check here raises it too
from fitquad.core.module import LOGGED_METRICS

# (option, test, what is allowed). A test only sees values that are not None: where None is allowed
# the type says so, and jsonargparse has checked the type already.
Rule = tuple[str, Callable[[Any], bool], str]

DATA_RULES: list[Rule] = [
    ("noise_std", lambda v: v >= 0, "≥ 0"),
    ("x_std", lambda v: v > 0, "> 0"),
    ("n_train", lambda v: v >= 1, "≥ 1"),
    # R² (a validation and test metric) needs two points: one would fail in torchmetrics mid-fit.
    ("n_val", lambda v: v == 0 or v >= 2, "0 (no validation) or ≥ 2 (R² needs two points)"),
    ("n_test", lambda v: v == 0 or v >= 2, "0 or ≥ 2 (R² needs two points)"),
    ("seed", lambda v: 0 <= v < 2**32, "in [0, 2**32) (numpy's RandomState)"),
    ("batch_size", lambda v: v >= 1, "≥ 1, or null for full batch"),
    ("steps_per_epoch", lambda v: v >= 1, "≥ 1, or null for one pass over the data"),
    ("val_fraction", lambda v: 0 <= v < 1, "in [0, 1), or null: 0.2 without data.val_file"),
    ("test_fraction", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("x_column", lambda v: v >= 0 if isinstance(v, int) else v != "", "a column's name, or its position ≥ 0"),
    ("y_column", lambda v: v >= 0 if isinstance(v, int) else v != "", "a column's name, or its position ≥ 0"),
]

# What only generated data has: with data.file the points, and how many there are, are the file's, and these
# are not used (so that any config, e.g. lesson3.yaml, can be pointed at a file from the command line).
GENERATED_ONLY = (
    "true_a", "true_b", "true_c", "noise_std", "x_distribution", "x_min", "x_max", "x_mean", "x_std",
    "n_train", "n_val", "n_test",
)  # fmt: skip
# What only data from a file has.
FILE_ONLY = ("val_file", "test_file", "val_fraction", "test_fraction", "x_column", "y_column")

MODEL_RULES: list[Rule] = [
    ("degree", lambda v: v >= 0, "≥ 0"),
    ("fused_steps", lambda v: v >= 1, "≥ 1"),
    ("huber_delta", lambda v: v > 0, "> 0"),
    ("smooth_l1_beta", lambda v: v >= 0, "≥ 0"),
    ("lr", lambda v: v > 0, "> 0"),
    ("momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("dampening", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("weight_decay", lambda v: v >= 0, "≥ 0"),
]

# Trainer options our own code divides by or counts with.
TRAINER_RULES: list[Rule] = [
    ("log_every_n_steps", lambda v: v >= 1, "≥ 1"),
    ("max_steps", lambda v: v >= -1, "≥ 0, or -1 for no limit"),
    ("gradient_clip_val", lambda v: v >= 0, "≥ 0, or null for no clipping"),
    ("val_check_interval", lambda v: v > 0, "> 0 (a fraction of an epoch, or a number of training_steps)"),
    ("check_val_every_n_epoch", lambda v: v >= 1, "≥ 1, or null"),
    ("accumulate_grad_batches", lambda v: v >= 1, "≥ 1 (batches per optimizer step)"),
]

# torch schedulers' periods, which they take unchecked and divide by as they step (mid-fit).
LR_SCHEDULER_RULES: list[Rule] = [
    ("step_size", lambda v: v >= 1, "≥ 1 (scheduler steps between decays)"),
    ("T_max", lambda v: v >= 1, "≥ 1 (scheduler steps from the top of the cosine to its bottom)"),
    ("gamma", lambda v: v > 0, "> 0 (the factor a decay multiplies the lr by; a negative one flips the step's sign)"),
]


def _check_rules(section: str, options: Mapping[str, Any], rules: list[Rule]) -> None:
    for name, value in options.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"{section}.{name} must be a finite number, got {value!r}")
    for name, test, allowed in rules:
        value = options.get(name)
        if value is not None and not test(value):
            raise InvalidInput(f"{section}.{name} must be {allowed}, got {value!r}")


def check_data_options(options: Mapping[str, Any]) -> None:
    """QuadraticDataModule's options, alone and together."""
    _check_rules("data", options, DATA_RULES)
    if options.get("x_distribution", "normal") in ("grid", "uniform") and not options["x_max"] > options["x_min"]:
        raise InvalidInput(
            f"data.x_max must be > data.x_min for x_distribution {options['x_distribution']}; "
            f"got x_min {options['x_min']!r}, x_max {options['x_max']!r}"
        )


def check_file_options(options: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Data from a file (data.file): its options need it, and go together."""
    given = [name for name in defaults if options.get(name) != defaults[name]]
    if options.get("file") is None:
        needs_file = [name for name in given if name in FILE_ONLY]
        if needs_file:
            raise InvalidInput(f"data.{needs_file[0]} is for points read from a file: it needs data.file")
        return
    if options.get("val_file") is not None and options.get("val_fraction"):
        raise InvalidInput("data.val_fraction and data.val_file both give validation points: set one")
    if options.get("test_file") is not None and options.get("test_fraction"):
        raise InvalidInput("data.test_fraction and data.test_file both give test points: set one")
    if options.get("x_column") == options.get("y_column"):
        raise InvalidInput(f"data.x_column and data.y_column must be two columns, got {options['x_column']!r} for both")


# The share of a file's points held out for validation when nothing says otherwise: a common choice that leaves
# most points for training and still measures validation MSE on a few dozen points out of a few hundred.
DEFAULT_VAL_FRACTION = 0.2


def held_out_fraction(data: Mapping[str, Any], split: str) -> float:
    """The share of data.file's points held out for the "val" or "test" split: as set, or, where val_fraction is
    null, DEFAULT_VAL_FRACTION (none when data.val_file gives the validation points)."""
    fraction = data.get(f"{split}_fraction")
    if fraction is None:
        return 0.0 if data.get("val_file") is not None else DEFAULT_VAL_FRACTION
    return fraction


def has_points(data: Mapping[str, Any], split: str) -> bool:
    """Whether data options give any points to the "val" or "test" split (generated, from a file, or held out)."""
    if data.get("file") is None:
        return data[f"n_{split}"] > 0
    return data.get(f"{split}_file") is not None or held_out_fraction(data, split) > 0


def check_evaluated_split(data: Mapping[str, Any], subcommand: str | None) -> None:
    """validate needs validation points, test and predict test points: without them Lightning runs nothing."""
    split = {"validate": "val", "test": "test", "predict": "test"}.get(subcommand or "")
    if split is not None and not has_points(data, split):
        how = f"data.n_{split} ≥ 1" if data.get("file") is None else f"data.{split}_fraction > 0 or data.{split}_file"
        raise InvalidInput(f"{subcommand} needs {'validation' if split == 'val' else 'test'} points: set {how}")


def check_enough_points(n_train: int, degree: int, data: Mapping[str, Any]) -> None:
    """At least one training point per parameter: with fewer, the least-squares optimum is not unique."""
    if n_train < degree + 1:
        held_out = " (data.file's points less those data.val_fraction and data.test_fraction hold out)"
        raise InvalidInput(
            f"the training data has {n_train} point{'s' * (n_train != 1)}{held_out if data.get('file') else ''}, "
            f"and model.degree {degree} needs at least {degree + 1} (one per parameter)"
        )


def check_val_check_interval(trainer: Mapping[str, Any], epoch_batches: Callable[[], int]) -> None:
    """An integer trainer.val_check_interval (training batches between validations) within an epoch's batches
    (`epoch_batches()`, asked only then): Lightning refuses a longer one only as the fit starts, which in a sweep is
    after the values before it have trained."""
    interval, limit = trainer.get("val_check_interval"), trainer.get("limit_train_batches")
    if not isinstance(interval, int) or isinstance(interval, bool) or trainer.get("check_val_every_n_epoch") is None:
        return
    if trainer.get("limit_val_batches") == 0:  # no validation, nothing to schedule
        return
    batches = epoch_batches()  # then limited as Lightning limits them
    batches = batches if limit is None else min(batches, limit) if isinstance(limit, int) else int(batches * limit)
    if interval > batches:
        raise InvalidInput(
            f"trainer.val_check_interval must be at most the {batches} training batches of an epoch (or a fraction "
            f"of one; any count with trainer.check_val_every_n_epoch null), got {interval}"
        )


def check_n_train(data: Mapping[str, Any], degree: int) -> None:
    """Generated data: at least one training point per parameter (a file's points are counted as it is read)."""
    if data.get("file") is None and data["n_train"] < degree + 1:
        raise InvalidInput(
            f"data.n_train must be ≥ model.degree + 1 = {degree + 1} (one point per parameter at least), "
            f"got {data['n_train']}"
        )


def check_sgd_options(section: str, options: Mapping[str, Any]) -> None:
    """torch.optim.SGD's own rule, told before it is hit mid-run: Nesterov needs momentum and no dampening."""
    if options.get("nesterov") and (not options.get("momentum", 0) > 0 or options.get("dampening", 0) != 0):
        raise InvalidInput(
            f"{section}.nesterov needs {section}.momentum > 0 and {section}.dampening = 0; "
            f"got momentum {options.get('momentum', 0)!r}, dampening {options.get('dampening', 0)!r}"
        )


def check_model_options(options: Mapping[str, Any]) -> None:
    """QuadraticRegression's options, alone and together."""
    _check_rules("model", options, MODEL_RULES)
    check_sgd_options("model", options)
    coefficients = options.get("init_coefficients")
    if coefficients is not None:
        if len(coefficients) != options["degree"] + 1:
            raise InvalidInput(
                f"model.init_coefficients must have model.degree + 1 = {options['degree'] + 1} values "
                f"(constant term first), got {list(coefficients)}"
            )
        if not all(math.isfinite(c) for c in coefficients):
            raise InvalidInput(f"model.init_coefficients must be finite numbers, got {list(coefficients)}")


def check_fused_step_callback(name: str, init_args: Mapping[str, Any], fused_steps: int) -> None:
    """Callbacks that count Lightning batches, which are fused_steps optimizer steps each (fitquad.core.fused)."""
    every = init_args.get("every_n_train_steps")
    if name == "ModelCheckpoint" and every and every % fused_steps:
        raise InvalidInput(
            f"ModelCheckpoint.every_n_train_steps must be a multiple of model.fused_steps = {fused_steps} "
            f"(it can only act between training_steps, every {fused_steps} optimizer steps), got {every}"
        )
    if name == "LearningRateMonitor" and fused_steps > 1 and init_args.get("logging_interval") != "epoch":
        raise InvalidInput(
            f"LearningRateMonitor counts training_steps, which are {fused_steps} optimizer steps each here: "
            "use model.fused_steps 1, LearningRateMonitor.logging_interval epoch, or train/lr, which fitquad "
            "logs at every logged optimizer step"
        )


def _init_args(component: Any) -> tuple[str, Mapping[str, Any]]:
    """(class name, init args) of a `class_path`/`init_args` entry of a parsed config."""
    class_path = str(component.get("class_path", ""))
    return class_path.rsplit(".", 1)[-1], component.get("init_args") or {}


def check_callbacks(callbacks: list, data: Mapping[str, Any], fused_steps: int, logged: Collection[str] | None) -> None:
    """trainer.callbacks: what a monitor needs (a metric the model logs, `logged`, where known; validation points for
    all but train/loss), and what fused steps allow (check_fused_step_callback)."""
    for callback in callbacks:
        name, init_args = _init_args(callback)
        check_fused_step_callback(name, init_args, fused_steps)
        monitor = init_args.get("monitor")
        if monitor is not None and logged is not None and monitor not in logged:  # Lightning would fail mid-fit
            raise InvalidInput(
                f"trainer.callbacks: {name} monitors {monitor!r}, which the model does not log: use one of "
                f"{', '.join(logged)}"
            )
        # Everything but train/loss is logged by the validation loop, which needs validation points.
        if monitor is not None and monitor != "train/loss" and not has_points(data, "val"):
            which = "data.n_val must be ≥ 1" if data.get("file") is None else "data.val_fraction must be > 0"
            raise InvalidInput(
                f"{which} when a callback monitors a validation metric ({name} monitors {monitor}), got 0"
            )


def check_config(config: Mapping[str, Any], logged: Collection[str] | None = LOGGED_METRICS) -> None:
    """One subcommand's parsed config (data, model, trainer, optimizer, ...), before anything is built; `logged`:
    the metrics its model logs (None: a model of your own, whose metrics are not known here)."""
    data, model, trainer = config["data"], config["model"], config["trainer"]
    check_data_options(data)
    check_model_options(model)
    _check_rules("trainer", {name: trainer.get(name) for name, _, _ in TRAINER_RULES}, TRAINER_RULES)
    seed = config.get("seed_everything")
    if not isinstance(seed, bool) and seed is not None and not 0 <= seed < 2**32:
        raise InvalidInput(
            f"seed_everything must be in [0, 2**32) (numpy's seeds), or true for a random one, got {seed}"
        )
    # FusedQuadraticRegression (the only model with fused_steps) optimizes manually: Lightning refuses accumulation
    # only mid-fit, and a closure-driven optimizer cannot step inside its loop.
    fused_steps = model.get("fused_steps")
    manual = fused_steps is not None
    fused_steps = fused_steps or 1
    if manual and trainer.get("accumulate_grad_batches") not in (None, 1):
        raise InvalidInput(
            "trainer.accumulate_grad_batches must be 1 with FusedQuadraticRegression (one optimizer step per batch; "
            "use a larger data.batch_size or the textbook QuadraticRegression), "
            f"got {trainer['accumulate_grad_batches']}"
        )
    check_n_train(data, model["degree"])
    check_callbacks(trainer.get("callbacks") or [], data, fused_steps, logged)
    optimizer = config.get("optimizer")
    if optimizer:
        name, init_args = _init_args(optimizer)
        _check_rules("optimizer", init_args, [rule for rule in MODEL_RULES if rule[0] in ("lr", "weight_decay")])
        if name == "SGD":
            check_sgd_options("optimizer", init_args)
        if name == "LBFGS" and manual:  # its step re-evaluates the loss through a closure, which the fused loop has not
            raise InvalidInput(
                "optimizer LBFGS needs a closure, which FusedQuadraticRegression's loop has not: use the textbook "
                "QuadraticRegression, or SGD, Adam or another torch optimizer"
            )
    if config.get("lr_scheduler"):
        _check_rules("lr_scheduler", _init_args(config["lr_scheduler"])[1], LR_SCHEDULER_RULES)
    check_accelerator(trainer.get("accelerator"))
    check_devices(trainer.get("devices"), trainer.get("accelerator"))
    if config.get("weights_only") is False:
        raise InvalidInput("weights_only must be true or null: fitquad never unpickles code from a checkpoint")


# What each accelerator Lightning knows by name needs, for the one line that says it is missing.
ACCELERATOR_NEEDS = {
    "cuda": "a CUDA GPU",
    "gpu": "a CUDA GPU",
    "mps": "an Apple GPU (MPS)",
    "tpu": "a TPU and torch_xla",
}


def check_accelerator(accelerator: Any) -> None:
    """trainer.accelerator names one this machine has (Lightning's own check fails later, naming a package)."""
    if not isinstance(accelerator, str) or accelerator not in ACCELERATOR_NEEDS:
        return  # auto, cpu, an Accelerator object, or a name Lightning refuses itself
    from lightning.pytorch.accelerators import AcceleratorRegistry  # Lightning's registry, by its public names

    name = "cuda" if accelerator == "gpu" else accelerator
    if not AcceleratorRegistry[name]["accelerator"].is_available():
        raise InvalidInput(
            f"trainer.accelerator {accelerator} needs {ACCELERATOR_NEEDS[accelerator]}, and this machine has none: "
            "use cpu, or auto (the best this machine has)"
        )


def check_devices(devices: Any, accelerator: Any) -> None:
    """trainer.devices as a count: at least 1, or -1 (every GPU) where there is a GPU to use (Lightning's own
    refusal names neither the option nor what is allowed)."""
    if isinstance(devices, str) and re.fullmatch(r"-?\d+", devices.strip()):
        devices = int(devices)  # the command line gives "-1"
    if not isinstance(devices, int) or isinstance(devices, bool) or devices >= 1:
        return  # auto, a list of device indices, a string Lightning parses, or a count
    if devices < -1 or devices == 0:
        raise InvalidInput(f"trainer.devices must be ≥ 1 (processes or GPUs), -1 (every GPU) or auto, got {devices}")
    import torch

    if accelerator == "cpu" or not torch.cuda.is_available():
        raise InvalidInput(
            "trainer.devices -1 means every GPU, and this run has none: give a number of CPU processes ≥ 1, or auto"
        )
