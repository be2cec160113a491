"""`fitquad sweep`'s values, each over `sweep.draws` data draws, trained as one batched fit (commands.many_runs): draw
k of a value is the run that value would train alone with `data.seed + k`. `why_not_batched` says what a sweep must
share to be batched; one TensorBoard run and one summary.json per value.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from fitquad.callbacks.clipping import GradientClipping
from fitquad.callbacks.interrupts import CheckpointOnSignal, Interrupted
from fitquad.callbacks.summary import _finite, optimizer_hparams
from fitquad.checks.file_data import FileDataModule
from fitquad.checks.limits import check_fits_in_memory
from fitquad.checks.validation import check_enough_points
from fitquad.commands.config_adjustments import gradient_clipping_as_callback
from fitquad.commands.many_runs import ManyRuns, ManyRunsData
from fitquad.commands.sweep_report import SweepPoint
from fitquad.core.losses import make_loss
from fitquad.core.model import PolynomialModel
from fitquad.core.module import TrainingDiverged
from fitquad.theory import reference
from fitquad.theory.bias_variance import Decomposition, decompose, evaluation_points
from fitquad.theory.conditioning import SGD_OPTIONS, OptimizerSettings, divergence_line

# What the runs must share to train as one model: everything but model and data settings.
SHARED_DATA_OPTIONS = ("batch_size", "steps_per_epoch", "shuffle")
BATCHABLE_PRECISIONS = ("32-true", "32", "64-true", "64", "None")  # None: Lightning's default, 32-true


def why_not_batched(run_configs: list[Namespace], draws: int) -> str | None:
    """Why these runs cannot train as one batched fit, or None if they can."""
    first = run_configs[0]
    if any(c.trainer != first.trainer for c in run_configs):
        return "the sweep's values differ in a trainer setting"
    if any(c.data[k] != first.data[k] for c in run_configs for k in SHARED_DATA_OPTIONS):
        return "the sweep's values differ in how the data is batched"
    if any(c.data.batch_size is not None and c.data.batch_size < c.data.n_train for c in run_configs):
        return "data.batch_size makes mini-batches (batched runs are full batch: data.batch_size null)"
    trainer = first.trainer
    if str(trainer.precision) not in BATCHABLE_PRECISIONS:
        return f"trainer.precision {trainer.precision} (batched runs train in 32-true or 64-true)"
    if trainer.strategy != "auto" or trainer.devices not in ("auto", 1, "1"):  # several: refused before (sweep_runs)
        return "trainer.strategy or trainer.devices place the runs (batched runs take the one device Lightning picks)"
    clipping = f"{GradientClipping.__module__}.{GradientClipping.__name__}"
    others = [c.class_path for c in trainer.callbacks or [] if c.class_path != clipping]
    if others:
        return f"trainer.callbacks has {others[0].rsplit('.', 1)[-1]} (batched runs take only GradientClipping)"
    if draws > 1 and first.data.file is not None:
        return "sweep.draws needs generated data: data.file has one draw"
    return None


# Per run, beyond its points' float64 designs: its feature scaling, parameters and results (twice what
# benchmarks/many_runs.py measures). Per point: x and y stacked, the training and validation designs, and the
# evaluation's temporaries.
BYTES_PER_RUN = 8 * 1024
BYTES_PER_POINT_AND_FEATURE = 24


def check_batched_memory(run_configs: list[Namespace], draws: int) -> None:
    """InvalidInput if the batched fit of all values × draws would not fit in the memory available."""
    runs = len(run_configs) * draws
    points = max(c.data.n_train + c.data.n_val for c in run_configs)
    width = max(c.model.degree for c in run_configs) + 1
    needed = runs * (BYTES_PER_RUN + points * (16 + BYTES_PER_POINT_AND_FEATURE * width))
    check_fits_in_memory(f"sweep.draws {draws} × {len(run_configs)} values ({runs} runs of up to {points} points)",
                         needed, "ask for fewer draws or values")  # fmt: skip


def train_batched(
    parser: LightningArgumentParser, run_configs: list[Namespace], values: list, labels: list[str], folder: Path,
    draws: int,
) -> list[SweepPoint]:  # fmt: skip
    """Train every value's draws as one model, log each value as its own TensorBoard run, and return the points."""
    first = run_configs[0]
    L.seed_everything(first.seed_everything, verbose=False)
    splits = [draw_splits(run_config, draw) for run_config in run_configs for draw in range(draws)]
    groups = [run_config.model.as_dict() for run_config in run_configs]
    for run, (train, _) in enumerate(splits):
        check_enough_points(len(train[0]), groups[run // draws]["degree"], first.data)
    data = ManyRunsData(
        train=[train for train, _ in splits],
        val=[val for _, val in splits],
        steps_per_epoch=first.data.steps_per_epoch or 1,
        fused_steps=first.data.steps_per_epoch or 1,  # a whole epoch per training_step
    )
    del splits  # the stacked copies are all that is kept
    module = ManyRuns(groups, draws)
    gradient_clipping_as_callback(first, manual=True)
    trainer_options = dict(parser.instantiate(first).trainer.items())
    loggers = [TensorBoardLogger(save_dir=folder, name="", version=label, default_hp_metric=False) for label in labels]
    hparams = [value_hparams(run_config, draws) for run_config in run_configs]
    for logger, value_hparams_ in zip(loggers, hparams, strict=True):
        logger.log_hyperparams(value_hparams_)  # kept for hparams.yaml, which Lightning writes as the fit starts
    on_signal = CheckpointOnSignal(filename=None)  # Ctrl-C or SIGTERM: stop cleanly, nothing to keep mid-fit
    trainer_options.update(
        logger=loggers,
        callbacks=[*(trainer_options.get("callbacks") or []), on_signal],
        devices=1,
        enable_checkpointing=False,  # each draw's coefficients are kept in its value's summary.json instead
        num_sanity_val_steps=0,
        default_root_dir=folder,
    )
    trainer = L.Trainer(**trainer_options)
    trainer.fit(module, datamodule=data)
    if on_signal.received is not None:
        raise Interrupted(on_signal.received)
    points = []
    mses = module.mse("train").double().cpu(), module.mse("val").double().cpu()  # every run's, at once
    for group, (value, label, logger) in enumerate(zip(values, labels, loggers, strict=True)):
        runs = range(group * draws, (group + 1) * draws)
        point, summary = measure_group(module, data, mses, run_configs[group], runs, trainer, value, label)
        (folder / label).mkdir(exist_ok=True)  # its logger's folder, unless fast_dev_run set the logger aside
        (folder / label / "summary.json").write_text(json.dumps(_finite(summary), indent=2) + "\n")
        logger.log_hyperparams(hparams[group], point.final_metrics())
        logger.finalize("success")
        points.append(point)
    return points


def value_hparams(run_config: Namespace, draws: int) -> dict[str, int | float | str | bool]:
    """One value's settings for TensorBoard's HPARAMS tab, with the columns of a fit's run: the model's and the
    data's (first draw's seed), SGD's settings as `optimizer.*`, the number of draws and the precision."""
    model = run_config.model.as_dict()
    sgd = torch.optim.SGD([torch.zeros(1, requires_grad=True)], **{name: model.pop(name) for name in SGD_OPTIONS})
    given = {**model, **run_config.data.as_dict(), "draws": draws}
    given.update(optimizer_hparams(sgd, [], run_config.trainer.precision))  # the columns a fit's run has
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in given.items()}


Points = tuple[torch.Tensor, torch.Tensor]


def draw_splits(run_config: Namespace, draw: int) -> tuple[Points, Points]:
    """The training and validation points of one draw: the value's data settings with seed data.seed + draw."""
    options = run_config.data.as_dict()
    options["seed"] += draw
    data = FileDataModule(**options)
    data.setup("fit")
    return (data.train_x, data.train_y), (data.val_x, data.val_y)


def measure_group(
    module: ManyRuns, data: ManyRunsData, mses: tuple[torch.Tensor, torch.Tensor], run_config: Namespace,
    runs: range, trainer: L.Trainer, value: int | float | str, label: str,
) -> tuple[SweepPoint, dict]:  # fmt: skip
    """One value's point (its draws' mean and spread, bias² and variance) and its summary.json; `mses` are every
    run's train and validation MSE."""
    options = run_config.model.as_dict()
    loss_fn = make_loss(options["loss"], options["huber_delta"], options["smooth_l1_beta"])
    train_mse, val_mse = mses
    per_draw, models = [], []
    for draw, run in enumerate(runs):
        (train_x, train_y), (val_x, val_y) = data.train.points(run), data.val.points(run)
        model = module.trained_model(run)
        models.append(model)
        optimum_train_mse, optimum_val_mse, gap = reference.against_optimum(
            model, (train_x, train_y), (val_x, val_y), loss_fn, options["weight_decay"]
        )
        per_draw.append(
            {
                "seed": run_config.data.seed + draw,
                "coefficients": model.coefficients().tolist(),
                "train_mse": train_mse[run].item(),
                "val_mse": val_mse[run].item() if len(val_x) else float("nan"),
                "optimum_train_mse": optimum_train_mse,
                "optimum_val_mse": optimum_val_mse,
                "gap": gap,
                "diverged": divergence(module, run, model, train_x, loss_fn, options),
            }
        )
    generated = run_config.data.file is None
    kept_models = [model for model, d in zip(models, per_draw, strict=True) if d["diverged"] is None]
    decomposition = bias_and_variance(kept_models, run_config.data.as_dict()) if generated else None
    point = SweepPoint.of_draws(value, label, per_draw, trainer.global_step, trainer.current_epoch,
                                run_config.data.noise_std if generated else None, run_config.data.n_train,
                                run_config.model.degree + 1, decomposition)  # fmt: skip
    summary = {
        "value": value,
        "draws": len(per_draw),
        "optimizer_steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        **point.final_metrics(),
        "per_draw": per_draw,
    }
    return point, summary


def divergence(
    module: ManyRuns, run: int, model: PolynomialModel, train_x: torch.Tensor, loss_fn: nn.Module, options: dict
) -> str | None:
    """The run's TrainingDiverged line, as `fitquad fit` would print it, or None if it did not diverge."""
    if not module.frozen[run]:
        return None
    settings = OptimizerSettings(**{k: options[k] for k in SGD_OPTIONS})
    step, loss, first = module.diverged_step[run].item(), module.diverged_loss[run].item(), module.first_loss[run]
    return divergence_line(TrainingDiverged(step, loss, first.item(), settings.lr), model, train_x, loss_fn, settings)


def bias_and_variance(models: list[PolynomialModel], data_options: dict) -> Decomposition | None:
    """Bias² and variance of a value's trained draws (those that did not diverge; at least 2) against the true
    curve."""
    if len(models) < 2:
        return None
    x, truth = evaluation_points(data_options)
    with torch.no_grad():
        predictions = np.stack([model(x.double()).numpy() for model in models])
    return decompose(predictions, truth.numpy(), data_options["noise_std"] ** 2)
