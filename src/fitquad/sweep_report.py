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

import numpy as np

from fitquad.bias_variance import Decomposition

# The spread of the draws drawn and tabulated: the middle 80% (the mean can lie outside it when a few draws
# are far off, as overfit models' validation errors are).
BAND_PERCENTILES = (10, 90)
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
    # With sweep.draws > 1 the MSEs above are means over the draws that did not diverge, and:
    draws: int = 1
    train_mse_band: tuple[float, float] | None = None  # 10th and 90th percentile over the draws
    val_mse_band: tuple[float, float] | None = None
    val_mse_error: float = math.nan  # standard error of the mean validation MSE (Monte-Carlo error)
    bias_squared: float = math.nan  # fitquad.bias_variance, generated data only
    variance: float = math.nan

    @classmethod
    def of_draws(
        cls, value: int | float, label: str, kept: list[dict], per_draw: list[dict], steps: int, epochs: int,
        noise_std: float | None, decomposition: Decomposition | None,
    ) -> SweepPoint:  # fmt: skip
        """A value's point from its draws' results (dicts of train_mse, val_mse, optimum_*, gap, diverged)."""

        def column(name: str) -> np.ndarray:
            return np.array([d[name] for d in kept], dtype=float)

        def band(name: str) -> tuple[float, float] | None:
            return tuple(np.percentile(column(name), BAND_PERCENTILES).tolist()) if len(kept) > 1 else None

        diverged = [(i, d) for i, d in enumerate(per_draw) if d["diverged"]]
        why = None
        if diverged:
            index, first = diverged[0]
            why = (
                first["diverged"]
                if len(per_draw) == 1
                else f"{len(diverged)} of {len(per_draw)} draws diverged (the first, draw {index}: {first['diverged']})"
            )
        val = column("val_mse")
        return cls(
            value=value,
            train_mse=float(column("train_mse").mean()),
            val_mse=float(val.mean()),
            noise_floor=math.nan if noise_std is None else float(noise_std) ** 2,
            optimum_train_mse=float(column("optimum_train_mse").mean()),
            optimum_val_mse=float(column("optimum_val_mse").mean()),
            gap=float(column("gap").max()),  # the draw furthest from its optimum
            optimizer_steps=steps,
            epochs=epochs,
            run=label,
            diverged=why,
            draws=len(per_draw),
            train_mse_band=band("train_mse"),
            val_mse_band=band("val_mse"),
            val_mse_error=float(val.std(ddof=1) / math.sqrt(len(val))) if len(val) > 1 else math.nan,
            bias_squared=decomposition.bias_squared if decomposition else math.nan,
            variance=decomposition.variance if decomposition else math.nan,
        )

    def final_metrics(self) -> dict[str, float]:
        """The value's results for TensorBoard's HPARAMS tab and its summary.json (finite ones only)."""
        metrics = {"final/train_mse": self.train_mse, "final/val_mse": self.val_mse}
        if self.draws > 1:
            metrics.update(
                {
                    "final/val_mse_error": self.val_mse_error,
                    "final/bias_squared": self.bias_squared,
                    "final/variance": self.variance,
                }
            )
        return {name: value for name, value in metrics.items() if math.isfinite(value)}


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, inf (or nan) where the denominator is 0 (noise-free data: σ² = 0)."""
    return numerator / denominator if denominator else math.copysign(math.inf, numerator) if numerator else math.nan


COLUMNS = ("train_mse", "val_mse", "noise_floor", "optimum_train_mse", "optimum_val_mse", "gap", "optimizer_steps")


DRAW_COLUMNS = ("train_mse_p10", "train_mse_p90", "val_mse_p10", "val_mse_p90", "val_mse_error", "bias_squared",
                "variance", "draws")  # fmt: skip


def write_csv(points: list[SweepPoint], name: str, path: Path) -> None:
    with_draws = points[0].draws > 1
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([name, *COLUMNS, "epochs", "run", *(DRAW_COLUMNS if with_draws else ())])
        for p in points:
            row = [getattr(p, column) for column in COLUMNS]
            if with_draws:
                row += [*p.train_mse_band, *p.val_mse_band, p.val_mse_error, p.bias_squared, p.variance]
            writer.writerow([p.value, *(repr(v) for v in row[: len(COLUMNS)]), p.epochs, p.run,
                             *(repr(v) for v in row[len(COLUMNS) :]), *([p.draws] if with_draws else [])])  # fmt: skip


def markdown_table(points: list[SweepPoint], parameter: str) -> str:
    if points[0].draws > 1:
        return markdown_table_of_draws(points, parameter)
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


def markdown_table_of_draws(points: list[SweepPoint], parameter: str) -> str:
    """The table of a sweep over data draws: means and spreads, and bias² + variance + σ² beside the measured mean."""
    name = parameter.rsplit(".", 1)[-1]
    best = validation_minimum(points)
    known = math.isfinite(points[0].noise_floor)
    floor = f"σ² = {points[0].noise_floor:.4g}" if known else "σ² unknown"
    lines = [
        f"Sweep of `{parameter}` over {points[0].draws} data draws per value (draw k: data.seed + k). {floor}. "
        f"Means over the draws; the spread is the middle 80% (10th–90th percentile); ± is the mean's standard "
        f"error. bias² + var + σ² is the expected validation MSE that the decomposition predicts."
        + (f" Lowest mean validation MSE at {name} = {best.value}." if best else ""),
        "",
        f"| {name} | train MSE | train 10–90% | val MSE ± s.e. | val 10–90% | bias² | variance | bias² + var + σ² "
        "| gap to optimum (max) | steps |",
        "|---:|---:|---|---:|---|---:|---:|---:|---:|---:|",
    ]

    def spread(band: tuple[float, float] | None) -> str:
        return f"{band[0]:.3g} – {band[1]:.3g}" if band else "n/a"

    for p in points:
        predicted = p.bias_squared + p.variance + p.noise_floor
        cells = [p.value, f"{p.train_mse:.4g}", spread(p.train_mse_band), f"{p.val_mse:.4g} ± {p.val_mse_error:.2g}",
                 spread(p.val_mse_band), f"{p.bias_squared:.3g}", f"{p.variance:.3g}", f"{predicted:.4g}",
                 f"{p.gap:.2g}", p.optimizer_steps]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [f"\n{name} = {p.value}: {p.diverged}" for p in points if p.diverged]
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
    draws = points[0].draws
    mean = " (mean of the draws)" if draws > 1 else ""
    axes.plot(x, [p.train_mse for p in points], "o-", color="C0", label=f"train MSE{mean}")
    axes.plot(x, [p.val_mse for p in points], "s-", color="C1", label=f"validation MSE{mean}")
    if draws > 1:  # each draw's own result spreads around the mean: the middle 80% of them, shaded
        for field, color, split in (("train_mse_band", "C0", "train"), ("val_mse_band", "C1", "validation")):
            bands = [getattr(p, field) or (math.nan, math.nan) for p in points]
            axes.fill_between(x, [b[0] for b in bands], [b[1] for b in bands], color=color, alpha=0.2,
                              label=f"{split}: 10–90% of {draws} draws")  # fmt: skip
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


def draw_bias_variance(points: list[SweepPoint], parameter: str, x_scale: str, title: str, path: Path) -> None:
    """bias², variance and σ² against the swept value, their sum beside the measured mean validation MSE."""
    from matplotlib.figure import Figure

    x = [p.value for p in points]
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    axes.plot(x, [p.bias_squared for p in points], "o-", label="bias²")
    axes.plot(x, [p.variance for p in points], "s-", label="variance")
    axes.plot(x, [p.noise_floor for p in points], "k--", label=f"σ² = {points[0].noise_floor:.3g}")
    axes.plot(x, [p.bias_squared + p.variance + p.noise_floor for p in points], "-", color="tab:purple", linewidth=2,
              label="bias² + variance + σ²")  # fmt: skip
    axes.errorbar(x, [p.val_mse for p in points], yerr=[2 * p.val_mse_error for p in points], fmt="D", color="tab:red",
                  markersize=5, capsize=3, label="measured mean validation MSE ± 2 s.e.")  # fmt: skip
    # The whole range, not sweep.png's frame: how far variance climbs with an overfit model is the point here.
    drawn = [v for p in points for v in (p.bias_squared, p.variance, p.noise_floor, p.val_mse) if math.isfinite(v)]
    axes.set_xscale(x_scale)
    axes.set_yscale("log")
    axes.set_ylim(0.5 * min(v for v in drawn if v > 0), 2 * max(drawn))
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
    draws = f" over {points[0].draws} draws" if points[0].draws > 1 else ""
    draw_figure(points, parameter, x_scale, f"{name}: {parameter}{draws}", folder / "sweep.png")
    written = ["sweep.csv", "sweep.md", "sweep.png"]
    if any(math.isfinite(p.bias_squared) for p in points):
        title = f"{name}: bias² + variance + σ² over {points[0].draws} draws"
        draw_bias_variance(points, parameter, x_scale, title, folder / "bias_variance.png")
        written.append("bias_variance.png")
    print(table, flush=True)
    print(f"fitquad sweep: wrote {', '.join(written)} in {folder}", flush=True)
