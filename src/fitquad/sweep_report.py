"""`fitquad sweep`'s results: each run's point, the table (sweep.csv, sweep.md) and the figure (sweep.png).

The figure is the classic picture of the sweep: train and validation MSE against the swept value, the noise
floor σ² (with its value), and the validation minimum. Its y-axis is logarithmic (the MSEs span decades) but
framed around the interesting part, from below the floor to 30 times the best validation MSE: an overfit model
whose validation error reaches 10⁷ is drawn as a marker at the top with its value, instead of stretching the
axis until the U of under- and overfitting is a flat line with one spike.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

# The figure's y-axis reaches this many times the best validation MSE (or σ², if larger).
FRAME_ABOVE_BEST = 30.0


@dataclass
class SweepPoint:
    value: int | float
    train_mse: float
    val_mse: float
    noise_floor: float  # σ² = noise_std²: the expected MSE of the true curve on fresh data; nan: unknown (a file)
    optimum_train_mse: float  # the MSE of the loss's closed-form optimum (see fitquad.reference)
    optimum_val_mse: float
    gap: float  # RMS difference between the trained model's and the optimum's predictions
    optimizer_steps: int
    epochs: int
    run: str
    diverged: str | None = None  # why the run diverged (its losses are then inf or nan), if it did


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, inf (or nan) where the denominator is 0 (noise-free data: σ² = 0)."""
    return numerator / denominator if denominator else math.copysign(math.inf, numerator) if numerator else math.nan


COLUMNS = ("train_mse", "val_mse", "noise_floor", "optimum_train_mse", "optimum_val_mse", "gap", "optimizer_steps")


def write_csv(points: list[SweepPoint], name: str, path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([name, *COLUMNS, "epochs", "run"])
        for p in points:
            row = [getattr(p, column) for column in COLUMNS]
            writer.writerow([p.value, *(repr(v) for v in row), p.epochs, p.run])


def markdown_table(points: list[SweepPoint], parameter: str) -> str:
    name = parameter.rsplit(".", 1)[-1]
    best = validation_minimum(points)

    def number(v: float) -> str:
        return f"{v:.4g}"

    known = math.isfinite(points[0].noise_floor)
    floor = (
        f"Noise floor σ² = {number(points[0].noise_floor)}"
        + ("" if len({p.noise_floor for p in points}) == 1 else " (first run; see the column)")
        if known
        else "Noise floor σ² unknown (your own data: compare the runs' validation MSE)"
    )
    lines = [
        f"Sweep of `{parameter}`. {floor}"
        + (
            f". Validation minimum at {name} = {best.value}: val MSE {number(best.val_mse)}"
            + (f" = {ratio(best.val_mse, best.noise_floor):.2f}·σ²." if known else ".")
            if best
            else ". No run has a finite validation MSE."
        ),
        "",
        f"| {name} | train MSE | val MSE | val / σ² | optimum train MSE | optimum val MSE | gap to optimum | steps |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        over_floor = f"{ratio(p.val_mse, p.noise_floor):.3g}" if known else "n/a"
        cells = [p.value, number(p.train_mse), number(p.val_mse), over_floor]
        cells += [number(p.optimum_train_mse), number(p.optimum_val_mse), number(p.gap), p.optimizer_steps]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [f"\n{name} = {p.value} diverged: {p.diverged}" for p in points if p.diverged]
    return "\n".join(lines) + "\n"


def validation_minimum(points: list[SweepPoint]) -> SweepPoint | None:
    """The run with the lowest finite validation MSE (None if none has one: all diverged)."""
    finite = [p for p in points if math.isfinite(p.val_mse) and not p.diverged]
    return min(finite, key=lambda p: p.val_mse) if finite else None


def frame(points: list[SweepPoint]) -> tuple[float, float]:
    """The figure's y-range: from half the smallest MSE (or σ²) to FRAME_ABOVE_BEST × the best validation MSE."""
    best = validation_minimum(points)
    finite = [v for p in points for v in (p.train_mse, p.val_mse, p.noise_floor) if math.isfinite(v) and v > 0]
    floor = points[0].noise_floor if math.isfinite(points[0].noise_floor) else 0.0
    top = FRAME_ABOVE_BEST * max(best.val_mse if best else 0.0, floor, 1e-300)
    return 0.5 * min(finite, default=top / 1e3), top


def draw_figure(points: list[SweepPoint], parameter: str, x_scale: str, title: str, path: Path) -> None:
    from matplotlib.figure import Figure  # lazily: only the sweep draws figures; no pyplot, no backend chosen

    x = [p.value for p in points]
    floors = {p.noise_floor for p in points}
    floor_label = f"noise floor σ² = {points[0].noise_floor:.3g}" if len(floors) == 1 else "noise floor σ²"
    best = validation_minimum(points)
    bottom, top = frame(points)
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    axes.plot(x, [p.train_mse for p in points], "o-", label="train MSE")
    axes.plot(x, [p.val_mse for p in points], "s-", label="validation MSE")
    if math.isfinite(points[0].noise_floor):  # unknown for your own data
        axes.plot(x, [p.noise_floor for p in points], "k--", label=floor_label)
    if best is not None:
        axes.plot([best.value], [best.val_mse], "r*", markersize=14, label="validation minimum")
    off_scale = [p for p in points if math.isfinite(p.val_mse) and p.val_mse > top]
    if off_scale:  # drawn at the frame's top, with their values, rather than stretching the axis
        axes.plot([p.value for p in off_scale], [top / 1.25] * len(off_scale), "^", color="tab:orange",
                  markersize=9, label="validation MSE above the frame")  # fmt: skip
        for p in off_scale:
            axes.annotate(f"{p.val_mse:.2g}", (p.value, top / 1.25), textcoords="offset points", xytext=(0, -14),
                          ha="center", fontsize="x-small", color="tab:orange")  # fmt: skip
    for p in points:
        if p.diverged:  # no finite MSE to plot: marked where it would be
            axes.axvline(p.value, color="red", alpha=0.3, linestyle=":")
    axes.set_xscale(x_scale)
    axes.set_yscale("log")  # the MSEs span decades: σ² below, overfit validation errors far above
    axes.set_ylim(bottom, top)
    axes.set_xlabel(parameter)
    axes.set_ylabel("MSE (log scale)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def write_results(points: list[SweepPoint], parameter: str, x_scale: str, name: str, folder: Path) -> None:
    write_csv(points, parameter.rsplit(".", 1)[-1], folder / "sweep.csv")
    table = markdown_table(points, parameter)
    (folder / "sweep.md").write_text(table)
    draw_figure(points, parameter, x_scale, f"{name}: {parameter}", folder / "sweep.png")
    print(table, flush=True)
    print(f"fitquad sweep: wrote sweep.csv, sweep.md, sweep.png in {folder}", flush=True)
