"""Many runs in one Trainer against one Lightning Trainer per run, and the batched sweep's memory.

    python benchmarks/many_runs.py                 # the article's grid, capacity.yaml, memory (draws 25..200)
    python benchmarks/many_runs.py --repeats 5 --skip-memory

The article's grid: `fitquad compare`'s 20 runs (4 losses × 5 SGD settings, 100 steps) as one batched model
(fitquad.commands.many_runs, which `compare` does not use: its matrix products add in another order) against one
Trainer per run (what `compare` does), in this process after a warm-up; the final (w, b) of every run compared bit
for bit with the run alone.

Speed: `fitquad sweep --config configs/capacity.yaml` (degrees 0-12, one draw, 3 steps each) in this process,
batched and with `--sweep.batched false`, after one warm-up of each (imports and first-call costs excluded, the
shared Python start-up with them), interleaved; the median of the repeats and their ratio. The numbers are the
same either way (tests/test_many_runs.py).

Memory: peak RSS of the whole `fitquad sweep --config configs/capacity_draws.yaml` process at 25, 50, 100 and
200 draws (325 to 2,600 runs), each in a fresh process; the slope of a least-squares line through them is the
memory per run, printed beside one run's own data and parameters (float64 training and validation designs).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CAPACITY = str(REPO / "configs" / "capacity.yaml")
DRAWS_CONFIG = str(REPO / "configs" / "capacity_draws.yaml")
GRID_CONFIG = str(REPO / "configs" / "sgd_article_grid.yaml")


def time_sweep(args: list[str]) -> float:
    from fitquad.commands.sweep_runs import sweep

    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
        previous = os.getcwd()
        os.chdir(folder)
        try:
            start = time.perf_counter()
            sweep(args)
            return time.perf_counter() - start
        finally:
            os.chdir(previous)


def speed(repeats: int) -> None:
    modes = {"batched": ["--sweep.batched", "true"], "one Trainer per run": ["--sweep.batched", "false"]}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for extra in modes.values():  # warm-up
        time_sweep(["--config", CAPACITY, *extra])
    for _ in range(repeats):
        for mode, extra in modes.items():
            times[mode].append(time_sweep(["--config", CAPACITY, *extra]))
    medians = {mode: statistics.median(t) for mode, t in times.items()}
    for mode, median in medians.items():
        each = ", ".join(f"{t:.2f}" for t in times[mode])
        print(f"capacity.yaml, 13 runs, {mode}: median {median:.2f} s (runs: {each})")
    print(f"batched is {medians['one Trainer per run'] / medians['batched']:.1f}x faster", flush=True)


def grid_runs(mode: str) -> list:
    """The article's 20-run grid (configs/sgd_article_grid.yaml, 100 steps each): as one batched model
    (fitquad.commands.many_runs, each run a group of one draw, as `fitquad sweep` batches its values), which `compare`
    does not use, or one Trainer per run, as `fitquad compare` trains it. Returns each run's final parameters."""
    import lightning as L
    import torch

    from fitquad.callbacks.parameter_path import ParameterPath
    from fitquad.checks.file_data import FileDataModule
    from fitquad.commands.compare_grid import build_parser, run_options
    from fitquad.commands.many_runs import ManyRuns, ManyRunsData
    from fitquad.core.module import QuadraticRegression

    config = build_parser().parse_args(["--config", GRID_CONFIG])
    data = FileDataModule(**config.data)
    data.setup("fit")
    runs = [run_options(config, loss, setting) for loss in config.losses for setting in config.settings]
    quiet = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                 enable_model_summary=False, max_steps=config.max_steps)  # fmt: skip
    if mode == "batched":
        batched = ManyRuns(runs, draws=1)
        train, val = [(data.train_x, data.train_y)] * len(runs), [(data.val_x, data.val_y)] * len(runs)
        points = ManyRunsData(train, val, steps_per_epoch=config.max_steps, fused_steps=config.max_steps)
        L.Trainer(**quiet, num_sanity_val_steps=0, limit_val_batches=0).fit(batched, datamodule=points)
        trained = [batched.trained_model(run) for run in range(len(runs))]
        return [torch.cat([m.linear.bias.detach(), m.linear.weight.detach().view(-1)]).float() for m in trained]
    finals = []
    for options in runs:  # as `fitquad compare` trains its grid
        recorder = ParameterPath()
        trainer = L.Trainer(**quiet, callbacks=[recorder], num_sanity_val_steps=0, limit_val_batches=0)
        trainer.fit(QuadraticRegression(**options), datamodule=data)
        finals.append(recorder.path()[-1])
    return finals


def grid(repeats: int) -> None:
    import torch

    from fitquad.commands.parsing import lightning_quiet

    modes = ("batched", "one Trainer per run")
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    with lightning_quiet():
        finals = {mode: grid_runs(mode) for mode in modes}  # warm-up, and the results compared
        for _ in range(repeats):
            for mode in modes:
                start = time.perf_counter()
                grid_runs(mode)
                times[mode].append(time.perf_counter() - start)
    apart = statistics.median(times["one Trainer per run"])
    alone = finals["one Trainer per run"]
    print(f"article grid, 20 runs × 100 steps, medians of {repeats} (the grid's config parsed in each):")
    for mode in modes[:1]:
        together = statistics.median(times[mode])
        same = sum(torch.equal(a, b) for a, b in zip(finals[mode], alone, strict=True))
        gap = max((a - b).abs().max().item() for a, b in zip(finals[mode], alone, strict=True))
        print(
            f"  {mode}: {together:.3f} s against one Trainer per run {apart:.3f} s: {apart / together:.1f}x; "
            f"final (w, b) identical to the run alone in {same} of 20 runs, largest difference {gap:.2g}"
        )


def peak_rss(draws: int) -> int:
    """Peak RSS in bytes of one whole sweep process."""
    fitquad = Path(sys.executable).with_name("fitquad")
    with tempfile.TemporaryDirectory() as folder:
        command = [str(fitquad), "sweep", "--config", DRAWS_CONFIG, "--sweep.draws", str(draws)]
        process = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        if status:
            raise SystemExit(f"{' '.join(command)} failed")
        return usage.ru_maxrss * 1024


def memory() -> None:
    draws = [25, 50, 100, 200]
    peaks = [peak_rss(d) for d in draws]
    runs = [13 * d for d in draws]
    slope, intercept = np.polyfit(runs, peaks, 1)
    for d, r, p in zip(draws, runs, peaks, strict=True):
        print(f"capacity_draws.yaml, {d} draws ({r} runs): peak RSS {p / 2**20:.0f} MiB")
    # One run: 15 training and 200 validation points, a (points, 13) float64 design each, x and y in float32.
    one_run = (15 + 200) * (13 * 8 + 8)
    print(
        f"per run: {slope / 1024:.1f} KiB (least-squares slope; constant {intercept / 2**20:.0f} MiB); "
        f"one run's designs, points and parameters: {one_run / 1024:.1f} KiB",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    from fitquad.commands.parsing import settle_warnings_and_yaml

    settle_warnings_and_yaml()  # as every fitquad command starts: Lightning's known warnings off, by message
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
    grid(args.repeats)
    speed(args.repeats)
    if not args.skip_memory:
        memory()
    print(f"this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
