"""fitquad's training speed against hand-written PyTorch loops, measured in the same run.

    python benchmarks/speed.py                    # all three problems, 5 interleaved repeats
    python benchmarks/speed.py --only demo --repeats 3 --profile

small: lesson 3's 20 points, quadratic on standardised t, MSE, full-batch SGD (momentum 0.9), 20,000 steps,
  validation every 1,000 steps.
  plain: the textbook loop (features built once, nn.Linear, MSELoss, zero_grad/backward/step).
  textbook: fitquad's QuadraticRegression (automatic optimization, one step per training_step) +
  QuadraticDataModule in a Lightning Trainer with every feature on: TensorBoard logging every 50 steps,
  validation metrics, ModelCheckpoint (best and last), EarlyStopping, LossLandscape's per-step parameter path,
  TrainingRecord, FitDiagnosis and RunSummary.
  fused: the same with FusedQuadraticRegression, 1,000 optimizer steps per training_step.
large: 10 million points, batches of 65,536, one epoch, same model, data.shuffle blocks; textbook and fused
  (1,000 steps per training_step: the whole epoch in one).
  plain: data shuffled once, then each epoch only the order of the 65,536-point blocks is permuted.
demo: configs/lesson3.yaml's cadence (the textbook module), 2,000 steps: TensorBoard every step (loss, lr,
  grad norm, a, b, c, relative gap), and every 10 steps validation (loss, MSE, MAE, R², train MSE), EarlyStopping,
  and an atomic best and last checkpoint (model and optimizer state, fsync'd, renamed into place).
  plain: a hand-written loop doing that same work with the same libraries (SummaryWriter.add_scalar,
  torchmetrics, torch.save + os.replace). Progress bars are off in both.

fitquad is timed from on_train_start to on_train_end (the training loop; Trainer set-up, the sanity check,
the closed-form reference and the end-of-fit figures are excluded). Each repeat runs the variants
round-robin; the tables give medians and the median of per-repeat ratios, and every pair is checked to
end on identical parameters. The last line of each table is the fused module's speed over the textbook
one's. --profile adds the top of a cProfile of one fitquad demo run (of the small problem with
--only small).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics import MeanAbsoluteError, MeanSquaredError, R2Score

from fitquad.callbacks.diagnosis import FitDiagnosis
from fitquad.callbacks.landscape import LossLandscape
from fitquad.callbacks.record import TrainingRecord
from fitquad.callbacks.summary import RunSummary
from fitquad.checks.checkpoint_io import SafeCheckpointIO
from fitquad.core.data import QuadraticDataModule
from fitquad.core.fused import FusedQuadraticRegression
from fitquad.core.module import QuadraticRegression, initialize

LESSON3 = dict(true_a=0.75, true_b=-14.25, true_c=68.6875, noise_std=3.0, x_distribution="grid", x_min=0.0, x_max=19.0)
SGD = dict(lr=0.1, momentum=0.9)


class TrainTimer(L.Callback):
    """Seconds from on_train_start to on_train_end: the training loop alone."""

    def on_train_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.start


def features(x: torch.Tensor, model: QuadraticRegression) -> torch.Tensor:
    z = (x - model.model.shift.item()) / model.model.scale.item()
    return torch.stack([z, z**2], dim=-1)


def starting_linear(model: QuadraticRegression) -> torch.nn.Linear:
    """A plain nn.Linear with the Lightning model's starting parameters."""
    linear = torch.nn.Linear(2, 1)
    linear.load_state_dict(model.model.linear.state_dict())
    return linear


def starting_model(datamodule: QuadraticDataModule) -> QuadraticRegression:
    datamodule.setup("fit")
    model = QuadraticRegression(degree=2, feature_scaling="standardize", **SGD)
    initialize(model.model, datamodule.train_x, None, 0)  # what the fit will start from
    return model


def fitquad_fit(
    datamodule, steps: int, folder: str, log_every: int, landscape: bool, fused_steps: int | None = None
) -> tuple[float, torch.Tensor]:
    """One fit by the textbook module (fused_steps None) or the fused one; (training seconds, final weight)."""
    options = dict(degree=2, feature_scaling="standardize", **SGD)
    if fused_steps is None:
        model = QuadraticRegression(**options)
    else:
        model = FusedQuadraticRegression(fused_steps=fused_steps, **options)
    timer = TrainTimer()
    callbacks = [
        timer,  # first: its on_train_end runs before the end-of-fit figures
        ModelCheckpoint(monitor="val/loss", filename="best-step{step}", auto_insert_metric_name=False),
        ModelCheckpoint(filename="last", save_on_train_epoch_end=True),
        EarlyStopping(monitor="val/loss", patience=10**9, check_on_train_epoch_end=False),
        *([LossLandscape()] if landscape else []),
        TrainingRecord(),  # the CLI always adds these three
        FitDiagnosis(),
        RunSummary(),
    ]
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=TensorBoardLogger(folder, name="speed", default_hp_metric=False),
        log_every_n_steps=log_every,
        callbacks=callbacks,
        plugins=[SafeCheckpointIO()],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == steps
    return timer.seconds, model.model.linear.weight.detach().clone()


def plain_steps(linear: torch.nn.Linear, batches, steps: int) -> float:
    """The textbook loop over `steps` (features, targets) pairs; seconds."""
    optimizer = torch.optim.SGD(linear.parameters(), **SGD)
    loss_fn = torch.nn.MSELoss()
    started = time.perf_counter()
    for _, (x, y) in zip(range(steps), batches, strict=False):
        optimizer.zero_grad()
        loss = loss_fn(linear(x).squeeze(-1), y)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def small_problem(repeats: int, steps: int = 20_000) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"plain": [], "textbook": [], "fused": []}
    for _ in range(repeats):
        datamodule = QuadraticDataModule(**LESSON3, n_train=20, n_val=20, seed=42, steps_per_epoch=1000)
        start = starting_model(datamodule)
        linear = starting_linear(start)
        full_batch = (features(datamodule.train_x, start), datamodule.train_y)
        plain_seconds = plain_steps(linear, itertools.repeat(full_batch), steps)
        results["plain"].append(steps / plain_seconds)
        for name, fused_steps in (("textbook", None), ("fused", 1000)):
            with tempfile.TemporaryDirectory() as folder:
                seconds, weight = fitquad_fit(datamodule, steps, folder, 50, landscape=True, fused_steps=fused_steps)
            assert torch.equal(linear.weight, weight), f"fitquad ({name}) and the plain loop disagree"
            results[name].append(steps / seconds)
    return results


def large_problem(repeats: int, n: int = 10_000_000, batch_size: int = 65_536) -> dict[str, list[float]]:
    datamodule = QuadraticDataModule(
        **LESSON3, n_train=n, n_val=10_000, seed=7, batch_size=batch_size, shuffle="blocks"
    )
    results: dict[str, list[float]] = {"plain": [], "textbook": [], "fused": []}
    for _ in range(repeats):
        start = starting_model(datamodule)
        # The plain loop gets the data shuffled once exactly as fitquad's "blocks" mode does, and the same
        # block order, so both must end on the same parameters.
        loader = datamodule.train_dataloader()
        linear = starting_linear(start)
        order = torch.randperm(len(loader.blocks_x), generator=loader.generator).tolist()
        batches = ((features(loader.blocks_x[j], start), loader.blocks_y[j]) for j in order)
        plain_seconds = plain_steps(linear, batches, len(order))
        results["plain"].append(n / plain_seconds / 1e6)
        for name, fused_steps in (("textbook", None), ("fused", 1000)):
            with tempfile.TemporaryDirectory() as folder:
                seconds, weight = fitquad_fit(
                    datamodule, len(order), folder, 50, landscape=False, fused_steps=fused_steps
                )
            assert torch.equal(linear.weight, weight), f"fitquad ({name}) and the plain loop disagree"
            results[name].append(n / seconds / 1e6)
    return results


def atomic_save(state: dict, path: Path) -> None:
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


def plain_demo(start: QuadraticRegression, datamodule, steps: int, folder: str) -> tuple[float, torch.Tensor]:
    """A hand-written loop doing the lesson3 demo's work: the same scalars, metrics and checkpoints."""
    from torch.utils.tensorboard import SummaryWriter

    linear = starting_linear(start)
    optimizer = torch.optim.SGD(linear.parameters(), **SGD)
    loss_fn = torch.nn.MSELoss()
    x, y = features(datamodule.train_x, start), datamodule.train_y
    val_x, val_y = features(datamodule.val_x, start), datamodule.val_y
    metrics = {"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()}
    writer = SummaryWriter(folder)
    optimum = 4.887  # the reference loss, for the relative gap (fitquad computes it before training)
    best = float("inf")
    Path(folder, "checkpoints").mkdir()
    started = time.perf_counter()
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        loss = loss_fn(linear(x).squeeze(-1), y)
        loss.backward()
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in linear.parameters()])
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scalars = {"train/loss": loss.item(), "train/lr": lr, "train/grad_norm": grad_norm.item()}
        coefficients = [linear.bias.item(), *linear.weight[0].tolist()]
        scalars.update({f"params/{k}": v for k, v in zip("cba", coefficients, strict=True)})
        scalars["reference/relative_gap"] = (scalars["train/loss"] - optimum) / optimum
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)
        if step % 10:
            continue
        with torch.no_grad():
            prediction = linear(val_x).squeeze(-1)
            val_loss = loss_fn(prediction, val_y)
            train_mse = loss_fn(linear(x).squeeze(-1), y)
        values = {"val/loss": val_loss.item(), "train/mse": train_mse.item()}
        for name, metric in metrics.items():
            values[f"val/{name}"] = metric(prediction, val_y).item()
            metric.reset()
        for tag, value in values.items():
            writer.add_scalar(tag, value, step)
        state = {"state_dict": linear.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
        if values["val/loss"] < best:  # EarlyStopping's and the best checkpoint's comparison
            best = values["val/loss"]
            atomic_save(state, Path(folder, "checkpoints", "best.ckpt"))
        atomic_save(state, Path(folder, "checkpoints", "last.ckpt"))
    seconds = time.perf_counter() - started
    writer.close()
    return seconds, linear.weight.detach().clone()


def demo_problem(repeats: int, steps: int = 2000) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"plain": [], "fitquad": []}
    for _ in range(repeats):
        datamodule = QuadraticDataModule(**LESSON3, n_train=20, n_val=20, seed=42, steps_per_epoch=10)
        start = starting_model(datamodule)
        with tempfile.TemporaryDirectory() as folder:
            plain_seconds, plain_weight = plain_demo(start, datamodule, steps, folder)
        with tempfile.TemporaryDirectory() as folder:
            seconds, weight = fitquad_fit(datamodule, steps, folder, log_every=1, landscape=False)
        assert torch.equal(plain_weight, weight), "fitquad and the plain loop disagree"
        results["plain"].append(steps / plain_seconds)
        results["fitquad"].append(steps / seconds)
    return results


def profile(problem: str, lines: int = 25) -> None:
    """A cProfile of one fitquad run of the small problem or of the demo, as timed above."""
    if problem == "small":
        fused, steps, log_every, landscape = 1000, 20_000, 50, True
    else:
        fused, steps, log_every, landscape = None, 2000, 1, False
    datamodule = QuadraticDataModule(**LESSON3, n_train=20, n_val=20, seed=42, steps_per_epoch=fused or 10)
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as folder:
        profiler.enable()
        fitquad_fit(datamodule, steps, folder, log_every=log_every, landscape=landscape, fused_steps=fused)
        profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(lines)
    print(f"\n{problem} profile (cProfile, {steps} steps, whole Trainer.fit, sorted by cumulative time):")
    print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[:6000])


def report(title: str, results: dict[str, list[float]]) -> None:
    plain = results["plain"]
    versions = f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads"
    print(f"\n{title}, {len(plain)} repeats, {versions}")
    print("| variant | median | ratio to plain (median of per-repeat ratios) | lowest–highest ratio |")
    print("|---|---|---|---|")
    for name, values in results.items():
        ratios = [v / p for v, p in zip(values, plain, strict=True)]
        spread = f"{min(ratios):.3f}–{max(ratios):.3f}"
        print(f"| {name} | {statistics.median(values):,.2f} | {statistics.median(ratios):.3f} | {spread} |")
    if "fused" in results and "textbook" in results:
        ratios = [f / t for f, t in zip(results["fused"], results["textbook"], strict=True)]
        print(
            f"fused / textbook: {statistics.median(ratios):.2f}× (lowest–highest {min(ratios):.2f}–{max(ratios):.2f})"
        )
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=["small", "large", "demo"])
    parser.add_argument(
        "--profile", action="store_true", help="also print a cProfile of one fitquad demo run (small with --only small)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.only in (None, "small"):
        report("small: 20 points, full batch, validation every 1,000 steps (steps/s)", small_problem(args.repeats))
    if args.only in (None, "large"):
        report("large: 10,000,000 points, batch 65,536, one epoch (M samples/s)", large_problem(args.repeats))
    if args.only in (None, "demo"):
        report("demo: lesson3's cadence, 2,000 steps (steps/s)", demo_problem(args.repeats))
    if args.profile:
        profile("small" if args.only == "small" else "demo")


if __name__ == "__main__":
    main()
