"""`fitquad sweep`'s figures: sweep.png, and with data draws bias_variance.png.

sweep.png is the classic picture of the sweep: train and validation MSE against the swept value, the noise
floor σ² (with its value), and the validation minimum; with draws, their means with the middle 80% of the draws
shaded. Its y-axis is logarithmic (the MSEs span decades) but framed around the interesting part, from below the
floor to 30 times the best validation MSE: an overfit model whose validation error reaches 10⁷ is drawn as a
marker at the top with its value, instead of stretching the axis until the U of under- and overfitting is a
flat line with one spike. bias_variance.png shows the whole range: how far the variance climbs is its point.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # matplotlib is imported only when a figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from fitquad.commands.sweep_report import SweepPoint

# sweep.png's y-axis reaches this many times the best validation MSE (or σ², if larger).
FRAME_ABOVE_BEST = 30.0


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
    # σ² is the validation MSE's floor; the training MSE's is lower, σ²(n − p)/n: p parameters fit some of the noise.
    sigma2 = f"σ² = {points[0].noise_floor:.3g}" if len(floors) == 1 else "σ²"
    floor_label = f"validation MSE's floor: {sigma2}"
    best = validation_minimum(points)
    bottom, top = frame(points)
    figure = Figure(figsize=(10, 4.8), layout="constrained")
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
    if any(math.isfinite(p.train_floor) for p in points):
        axes.plot(x, [p.train_floor for p in points], ":", color="C0", label="training MSE's floor: σ²(n−p)/n")
    if best is not None:
        axes.plot([best.value], [best.val_mse], "r*", markersize=14, label="validation minimum")
    off_scale = [p for p in points if math.isfinite(p.val_mse) and p.val_mse > top]
    if off_scale:  # drawn at the frame's top, with their values, rather than stretching the axis
        axes.plot([p.value for p in off_scale], [top / 1.25] * len(off_scale), "^", color="tab:orange",
                  markersize=9, label="validation MSE above the frame")  # fmt: skip
        for p in off_scale:
            axes.annotate(f"{p.val_mse:.2g}", (p.value, top / 1.25), textcoords="offset points", xytext=(0, -8),
                          ha="center", va="top", rotation=90, fontsize="x-small", color="tab:orange")  # fmt: skip
    for p in points:
        if p.diverged:  # no finite MSE to plot: marked where it would be
            axes.axvline(p.value, color="red", alpha=0.3, linestyle=":")
    finish(figure, axes, points, parameter, x_scale, (bottom, top), title, path)


def draw_bias_variance(points: list[SweepPoint], parameter: str, x_scale: str, title: str, path: Path) -> None:
    """bias², variance and σ² against the swept value, their sum beside the measured validation MSE of the draws:
    its median and middle 80%, not its mean, which a few overfit draws dominate."""
    from matplotlib.figure import Figure

    x = [p.value for p in points]
    figure = Figure(figsize=(9, 5), layout="constrained")
    axes = figure.subplots()
    positive = [p.bias_squared if p.bias_squared > 0 else math.nan for p in points]  # see the note below
    axes.plot(x, positive, "o-", label="bias² (corrected for the scatter of the draws' mean)")
    axes.plot(x, [p.variance for p in points], "s-", label="variance")
    floors = {p.noise_floor for p in points}
    axes.plot(x, [p.noise_floor for p in points], "k--", label=f"σ² = {points[0].noise_floor:.3g}" if len(floors) == 1
              else "σ²")  # fmt: skip
    axes.plot(x, [p.bias_squared + p.variance + p.noise_floor for p in points], "-", color="tab:purple", linewidth=2,
              label="bias² + variance + σ² (the expected validation MSE)")  # fmt: skip
    bands = [p.val_mse_band or (math.nan, math.nan) for p in points]
    axes.fill_between(x, [b[0] for b in bands], [b[1] for b in bands], color="tab:red", alpha=0.15,
                      label=f"validation MSE: 10–90% of the {points[0].draws} draws")  # fmt: skip
    axes.plot(x, [p.val_mse_median for p in points], "D", color="tab:red", markersize=5,
              label="validation MSE: median of the draws")  # fmt: skip
    # The whole range, not sweep.png's frame: how far variance climbs with an overfit model is the point here.
    drawn = [v for p in points for v in (p.bias_squared, p.variance, p.noise_floor, *(p.val_mse_band or ())) if
             math.isfinite(v) and v > 0]  # fmt: skip
    finish(figure, axes, points, parameter, x_scale, (0.5 * min(drawn), 2 * max(drawn)), title, path, note=(
        f"What {points[0].draws} draws can tell: once a model can follow the noise, one draw's validation MSE is "
        "heavy-tailed\n(a few draws are off by orders of magnitude), so its mean over the draws is not a reliable "
        "number; the median and the middle 80%\nare shown. A bias² missing from the plot is below 0 after the "
        "correction: within its own sampling error of 0."
    ))  # fmt: skip


def finish(figure: Figure, axes: Axes, points: list[SweepPoint], parameter: str, x_scale: str,
           y_range: tuple[float, float], title: str, path: Path, note: str = "") -> None:  # fmt: skip
    """Both figures' axes: the swept value across, MSE up on a log scale (the MSEs span decades), the legend beside
    the plot (never on the data), a note under it, then saved."""
    if not any(isinstance(p.value, str) for p in points):  # names (model.loss) keep matplotlib's category axis
        axes.set_xscale(x_scale)
    axes.set_yscale("log")
    axes.set_ylim(*y_range)
    axes.set_xlabel(parameter)
    axes.set_ylabel("MSE (log scale)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    figure.legend(loc="outside right upper", fontsize="small")
    if note:
        figure.text(0.01, 0.01, note, fontsize="x-small", va="bottom", ha="left", color="dimgray")
        figure.get_layout_engine().set(rect=(0, 0.1, 1, 0.9))  # room for the note under the axes
    figure.savefig(path, dpi=120)
