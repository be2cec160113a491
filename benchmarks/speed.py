"""fitquad's training speed against plain PyTorch loops, measured in the same run.

    python benchmarks/speed.py                 # both problems, 5 interleaved repeats
    python benchmarks/speed.py --small-only --repeats 3

Small problem: lesson 3's 20 points, quadratic on standardised t, MSE, full-batch SGD (momentum 0.9).
  plain: the hand-written loop (features built once, nn.Linear, MSELoss, zero_grad/backward/step).
  fitquad: QuadraticRegression + QuadraticDataModule in a Lightning Trainer with every feature on:
  TensorBoard logging, validation metrics, ModelCheckpoint (best and last), EarlyStopping, progress
  bar, per-step loss and parameter-path recording (LossLandscape), FitDiagnosis and RunSummary.
  Timed from on_train_start to on_train_end; "incl. set-up" times the whole Trainer.fit call (set-up,
  sanity check, conditioning and reference, end-of-fit figures and summary).
Large problem: 10 million points, batch 65,536, one epoch, same model.
  plain: the fastest plain loop measured here: data shuffled once, then each epoch only the order of
  the 65,536-point blocks is permuted; features per block; zero_grad/backward/step.
  fitquad: the same with data.shuffle=blocks.

Each repeat runs the variants round-robin; the table gives medians and the median of per-repeat
ratios. Both paths are checked to end with identical parameters.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from fitquad.callbacks import RunSummary
from fitquad.data import QuadraticDataModule
from fitquad.diagnosis import FitDiagnosis
from fitquad.landscape import LossLandscape
from fitquad.training import QuadraticRegression

LESSON3 = dict(true_a=0.75, true_b=-14.25, true_c=68.6875, noise_std=3.0, x_distribution="grid", x_min=0.0, x_max=19.0)


class TrainTimer(L.Callback):
    """Seconds from on_train_start to on_train_end: the training loop alone."""

    def on_train_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.start


def standardized_features(x: torch.Tensor, shift: float, scale: float) -> torch.Tensor:
    z = (x - shift) / scale
    return torch.stack([z**1, z**2], dim=-1)


def initial_linear(model: QuadraticRegression) -> torch.nn.Linear:
    """A plain nn.Linear with the Lightning model's starting parameters."""
    linear = torch.nn.Linear(2, 1)
    linear.load_state_dict(model.model.linear.state_dict())
    return linear


def fitquad_run(
    datamodule: QuadraticDataModule, steps: int, folder: str, **model_options
) -> tuple[float, float, QuadraticRegression]:
    model = QuadraticRegression(degree=2, feature_scaling="standardize", **model_options)
    timer = TrainTimer()
    started = time.perf_counter()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=TensorBoardLogger(folder, name="speed"),
        log_every_n_steps=50,
        callbacks=[
            timer,  # first: its on_train_end runs before the end-of-fit figures (counted in "incl. set-up")
            ModelCheckpoint(monitor="val/loss", save_last=True),
            EarlyStopping(monitor="val/loss", patience=10**9),
            TQDMProgressBar(refresh_rate=100),
            LossLandscape(),  # records the parameters at every step
            FitDiagnosis(),  # the CLI always adds these two
            RunSummary(),
        ],
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == steps
    return timer.seconds, time.perf_counter() - started, model


def plain_full_batch(
    model: QuadraticRegression, x: torch.Tensor, y: torch.Tensor, steps: int, **sgd
) -> tuple[float, torch.nn.Linear]:
    linear = initial_linear(model)
    features = standardized_features(x, model.model.shift.item(), model.model.scale.item())
    optimizer = torch.optim.SGD(linear.parameters(), **sgd)
    loss_fn = torch.nn.MSELoss()
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(linear(features).squeeze(-1), y)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started, linear


def small_problem(repeats: int, steps: int) -> dict[str, list[float]]:
    sgd = dict(lr=0.1, momentum=0.9)
    results: dict[str, list[float]] = {"plain": [], "fitquad": [], "fitquad incl. set-up": []}
    for _ in range(repeats):
        datamodule = QuadraticDataModule(
            **LESSON3, n_train=20, n_val=20, seed=42, steps_per_epoch=1000, fused_steps=1000
        )
        datamodule.setup("fit")
        start = QuadraticRegression(degree=2, feature_scaling="standardize", **sgd)
        start.initialize_parameters(datamodule.train_x)  # what the fit will start from
        plain_seconds, linear = plain_full_batch(start, datamodule.train_x, datamodule.train_y, steps, **sgd)
        with tempfile.TemporaryDirectory() as folder:
            train_seconds, total_seconds, model = fitquad_run(datamodule, steps, folder, **sgd)
        assert torch.equal(linear.weight, model.model.linear.weight), "fitquad and the plain loop disagree"
        results["plain"].append(steps / plain_seconds)
        results["fitquad"].append(steps / train_seconds)
        results["fitquad incl. set-up"].append(steps / total_seconds)
    return results


def plain_block_shuffle(model, x, y, batch_size, generator, **sgd) -> tuple[float, torch.nn.Linear]:
    """One epoch of the fastest plain loop: data shuffled once beforehand; the epoch permutes the blocks."""
    linear = initial_linear(model)
    optimizer = torch.optim.SGD(linear.parameters(), **sgd)
    loss_fn = torch.nn.MSELoss()
    shift, scale = model.model.shift.item(), model.model.scale.item()
    started = time.perf_counter()
    blocks_x, blocks_y = x.split(batch_size), y.split(batch_size)
    order = torch.randperm(len(blocks_x), generator=generator).tolist()
    for j in order:
        optimizer.zero_grad()
        loss = loss_fn(linear(standardized_features(blocks_x[j], shift, scale)).squeeze(-1), blocks_y[j])
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started, linear


def large_problem(repeats: int, n: int, batch_size: int) -> dict[str, list[float]]:
    sgd = dict(lr=0.1, momentum=0.9)
    datamodule = QuadraticDataModule(
        **LESSON3, n_train=n, n_val=10_000, seed=7, batch_size=batch_size, fused_steps=1000, shuffle="blocks"
    )
    datamodule.setup("fit")
    results: dict[str, list[float]] = {"plain": [], "fitquad": []}
    for _ in range(repeats):
        start = QuadraticRegression(degree=2, feature_scaling="standardize", **sgd)
        start.initialize_parameters(datamodule.train_x)
        # The plain loop gets the data shuffled once, exactly as fitquad's "blocks" mode shuffles it,
        # and the same block order, so both must end on the same parameters.
        loader = datamodule.train_dataloader()
        shuffled_x, shuffled_y = torch.cat(loader.blocks_x), torch.cat(loader.blocks_y)
        plain_seconds, linear = plain_block_shuffle(start, shuffled_x, shuffled_y, batch_size, loader.generator, **sgd)
        with tempfile.TemporaryDirectory() as folder:
            steps = len(loader.blocks_x)
            train_seconds, _, model = fitquad_run(datamodule, steps, folder, **sgd)
        assert torch.equal(linear.weight, model.model.linear.weight), "fitquad and the plain loop disagree"
        results["plain"].append(n / plain_seconds / 1e6)
        results["fitquad"].append(n / train_seconds / 1e6)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--small-steps", type=int, default=20_000)
    parser.add_argument("--large-points", type=int, default=10_000_000)
    parser.add_argument("--large-batch", type=int, default=65_536)
    parser.add_argument("--only", choices=["small", "large"])
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.only != "large":
        report("small: 20 points, full batch (steps/s)", small_problem(args.repeats, args.small_steps))
    if args.only != "small":
        title = f"large: {args.large_points:,} points, batch {args.large_batch:,}, one epoch (M samples/s)"
        report(title, large_problem(args.repeats, args.large_points, args.large_batch))


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
    sys.stdout.flush()


if __name__ == "__main__":
    main()
