"""fitquad's own callbacks: where a run lands and what it found, and where predictions go.

EarlyStopping, ModelCheckpoint, the progress bar and gradient clipping are Lightning's own and are
configured in configs/*.yaml; `RunSummary` and `PredictionsCSV` are always on (the CLI adds them).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tqdm import tqdm

from fitquad.callbacks.record import TrainingRecord
from fitquad.core.module import TrainingDiverged
from fitquad.theory.conditioning import SGD_OPTIONS
from fitquad.theory.passes import evaluate


def say(trainer: L.Trainer, message: str) -> None:
    """Print one of fitquad's lines on stdout (rank 0 only), always, in order, and never in the middle of a progress
    bar: tqdm.write clears the bars on screen, prints, and draws them again (with no bar, it just prints). Lightning's
    ProgressBar.print is not used: it prints nothing while no bar is active, as before and after training."""
    if trainer.is_global_zero:
        tqdm.write(message, file=sys.stdout)
        sys.stdout.flush()


def run_folder(trainer: L.Trainer) -> Path:
    """The run's own folder: the logger's version folder (runs/<config name>/version_N).

    Asked of the logger, as trainer.log_dir does, but without its broadcast from rank 0: under DDP only
    rank 0 writes here, and a broadcast that rank 0 alone joins would wait forever.
    """
    logger = trainer.logger
    if logger is None or logger.save_dir is None:  # no logger, or fast_dev_run's stand-in, which saves nothing
        return Path(trainer.default_root_dir)
    return Path(logger.log_dir if isinstance(logger, (TensorBoardLogger, CSVLogger)) else logger.save_dir)


class RunSummary(L.Callback):
    """Prints the run folder at the start and end of a fit, and leaves in it (`fitquad validate` and
    `fitquad test` leave validate_metrics.json and test_metrics.json beside the run they evaluate):

    - summary.json: the final coefficients (original units), training and validation MSE of the final
      model, optimizer steps, epochs, and the best checkpoint's path;
    - train_loss.csv: the training loss of every optimizer step (the loss before that step's update), as
      TrainingRecord recorded it;
    - the hyperparameters with the final metrics, for TensorBoard's HPARAMS tab.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        say(trainer, f"fitquad: run folder {run_folder(trainer)}")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):  # its CUSTOM SCALARS tab: the curves to read together
                logger.experiment.add_custom_scalars(TENSORBOARD_LAYOUT)
        data = trainer.datamodule
        # Where your own points came from (the config's generated-data options are then unused).
        if data is not None and data.hparams.get("file") is not None:
            sizes = f"{data.train_size} training and {len(data.val_x)} validation points"
            say(trainer, f"fitquad: data: {sizes} from {data.hparams.file} (the generated data's options are not used)")
        if data is not None and trainer.world_size > 1:
            each = f"each of {trainer.world_size} processes trains on its own {data.train_size // trainer.world_size}"
            say(trainer, f"fitquad: data: {data.train_size} training points; {each}")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write_summary(trainer, pl_module, what_ended(trainer))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # A diverged fit ends without on_fit_end: what it found is still written.
        if isinstance(exception, TrainingDiverged):
            self.write_summary(trainer, pl_module, f"the divergence guard, at step {exception.step}")

    def write_summary(self, trainer: L.Trainer, pl_module: L.LightningModule, ended_by: str) -> None:
        summary = {**self.summarize(trainer, pl_module), "ended_by": ended_by}
        if not trainer.is_global_zero:
            return
        folder = run_folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(json.dumps(_finite(summary), indent=2) + "\n")
        for record in (callback for callback in trainer.callbacks if isinstance(callback, TrainingRecord)):
            # Numbered as TensorBoard numbers them: a resumed fit carries on from its checkpoint's step.
            losses = enumerate(record.loss_history.tolist(), start=record.first_step + 1)
            (folder / "train_loss.csv").write_text("\n".join(["step,loss", *(f"{s},{v!r}" for s, v in losses)]) + "\n")
        metrics = {"final/train_mse": summary["train_mse"], "final/val_mse": summary["val_mse"]}
        metrics = {name: value for name, value in metrics.items() if value is not None}  # no validation points
        hparams = hparams_used(trainer, pl_module)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):  # its HPARAMS tab pairs the settings with these metrics
                logger.log_hyperparams(hparams, metrics)
            else:
                logger.log_hyperparams(hparams)
            logger.log_metrics(metrics, step=trainer.global_step)  # and at the last step, beside the curves
            logger.finalize("success")
        best = f"; best checkpoint {summary['best_checkpoint']}" if summary["best_checkpoint"] else ""
        say(trainer, f"fitquad: ended by {ended_by} after {trainer.global_step} steps{best}")
        say(trainer, f"fitquad: run finished in {folder}: {_one_line(summary)}")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":  # `fitquad validate`, not the validation inside a fit
            self._write_metrics(trainer, "validate")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write_metrics(trainer, "test")

    def _write_metrics(self, trainer: L.Trainer, command: str) -> None:
        # `fitquad validate` and `fitquad test`: the metrics beside the run they evaluate (config_adjustments.py).
        if not trainer.is_global_zero:
            return
        metrics = {name: value.item() for name, value in trainer.callback_metrics.items() if name != "step"}
        path = run_folder(trainer) / f"{command}_metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"ckpt_path": trainer.ckpt_path, **_finite(metrics)}, indent=2) + "\n")
        say(trainer, f"fitquad: {command} metrics written to {path}")

    @torch.no_grad()
    def summarize(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        datamodule = trainer.datamodule
        model = pl_module.model

        def mse(x: torch.Tensor, y: torch.Tensor) -> float | None:
            # In the run's own precision (what it logs), a chunk at a time on millions of points.
            return evaluate(model, x, y, torch.nn.MSELoss())[1] if len(x) else None

        checkpoint = trainer.checkpoint_callback
        # What other callbacks found (FitDiagnosis: the reference, the conditioning, the diagnosis), asked of them.
        found = {}
        for callback in trainer.callbacks:
            if callback is not self and callable(getattr(callback, "summary_entries", None)):
                found.update(callback.summary_entries())
        return {
            "coefficients": pl_module.coefficients(),
            "train_mse": mse(datamodule.train_x, datamodule.train_y),
            "val_mse": mse(datamodule.val_x, datamodule.val_y),
            "optimizer_steps": trainer.global_step,
            "epochs": trainer.current_epoch,
            "best_checkpoint": (checkpoint.best_model_path or None) if checkpoint is not None else None,
            "run_folder": str(run_folder(trainer)),
            **found,
        }


# TensorBoard's CUSTOM SCALARS tab: the curves a learner reads together, each chart one question.
TENSORBOARD_LAYOUT = {
    "fitquad": {
        "under- or overfitting? train/mse against val/mse (σ² is the floor)": ["Multiline", ["train/mse", "val/mse"]],
        "the loss: training (every step) and validation": ["Multiline", ["train/loss", "val/loss"]],
        "how far from the closed-form optimum (relative gap)": ["Multiline", ["reference/relative_gap"]],
        "the step: learning rate and gradient norm": ["Multiline", ["train/lr", "train/grad_norm"]],
    }
}


def what_ended(trainer: L.Trainer) -> str:
    """What ended a fit that finished, in words a learner can act on: a callback, or a limit of the Trainer."""
    for callback in trainer.callbacks:
        if isinstance(callback, EarlyStopping) and callback.stopped_epoch > 0:
            return (
                f"EarlyStopping: {callback.monitor} had not improved on its best, {callback.best_score.item():.4g}, "
                f"for {callback.patience} validations"
            )
    if 0 <= trainer.max_steps <= trainer.global_step:
        return f"trainer.max_steps ({trainer.max_steps})"
    if trainer.max_epochs is not None and 0 <= trainer.max_epochs <= trainer.current_epoch:
        return f"trainer.max_epochs ({trainer.max_epochs})"
    return "the Trainer: a callback asked it to stop, or trainer.max_time ran out"


# torch optimizers' options that choose an implementation, not the mathematics: left out of HPARAMS.
IMPLEMENTATION_FLAGS = ("foreach", "fused", "differentiable", "capturable")


def hparams_used(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | float | str | bool]:
    """The hyperparameters for TensorBoard's HPARAMS tab, as the run used them: the model's and the data's,
    with the optimizer's actual class and settings in place of the model's SGD options (`--optimizer`
    replaces that SGD), the schedulers and the precision."""
    given = {**pl_module.hparams, **trainer.datamodule.hparams}
    # Without LightningCLI's own bookkeeping (_instantiator).
    hparams = {k: v for k, v in given.items() if k not in SGD_OPTIONS and not k.startswith("_")}
    schedulers = [type(config.scheduler).__name__ for config in trainer.lr_scheduler_configs]
    hparams.update(optimizer_hparams(trainer.optimizers[0], schedulers, trainer.precision))
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}


def optimizer_hparams(optimizer: torch.optim.Optimizer, schedulers: list[str], precision: object) -> dict:
    """The optimizer's class and settings, the schedulers and the precision, as HPARAMS columns: every run of every
    command has the same ones (TensorBoard shows the columns of the first run it reads)."""
    settings = {k: v for k, v in optimizer.defaults.items() if v is not None and k not in IMPLEMENTATION_FLAGS}
    return {
        "optimizer": type(optimizer).__name__,
        **{f"optimizer.{k}": v for k, v in settings.items()},
        "lr_scheduler": ", ".join(schedulers) or "none",
        "precision": str(precision),
    }


def _finite(value):
    """The summary with NaN and ±inf (a diverged fit) as null, so that summary.json is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _one_line(summary: dict) -> str:
    coefficients = ", ".join(f"{k}={v:.6g}" for k, v in summary["coefficients"].items())
    val = f"{summary['val_mse']:.6g}" if summary["val_mse"] is not None else "n/a"
    return f"{coefficients}; train MSE {summary['train_mse']:.6g}, val MSE {val}, {summary['optimizer_steps']} steps"


class PredictionsCSV(L.Callback):
    """`fitquad predict` writes predictions.csv (x, prediction) into its run folder.

    A plain callback over `on_predict_batch_end`'s outputs, rather than Lightning's BasePredictionWriter,
    which also wants batch indices that only a torch DataLoader's sampler can give (fitquad's batches
    are slices of in-memory tensors, see fitquad.core.data).
    """

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows: list[str] = []

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, *args) -> None:
        pairs = zip(outputs["x"].tolist(), outputs["prediction"].tolist(), strict=True)
        self.rows.extend(f"{x!r},{p!r}" for x, p in pairs)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        folder = run_folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "predictions.csv").write_text("\n".join(["x,prediction", *self.rows]) + "\n")
        say(trainer, f"fitquad: predictions written to {folder / 'predictions.csv'}")
