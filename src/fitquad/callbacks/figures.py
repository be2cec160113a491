"""The figures of a fit (fit.png, residuals.png), built as matplotlib Figures without pyplot; fitquad imports this
module only when it draws. What each shows a beginner: docs/how-it-works.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fitquad.core.data import uniform_sample
from fitquad.core.model import evaluate_polynomial

# Scatter plots draw at most this many points of each split: a seeded uniform sample of larger data.
SCATTER_POINTS = 2_000
# Pixels per inch of the PNGs: 750 × 480 for the fit, readable on a laptop screen and small on disk.
FIGURE_DPI = 100
# Room above and below the data's range of y, as a fraction of it.
Y_MARGIN = 0.25


@dataclass
class FitPicture:
    """What the fit figures draw: the splits, and three polynomials in original units (constant term first)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    true_coefficients: list[float] | None  # None: unknown (your own data), not drawn
    fitted_coefficients: torch.Tensor
    optimum_coefficients: torch.Tensor
    noise_std: float | None  # None: unknown, no noise bands
    noise_estimated: bool = False  # σ estimated from the optimum's residuals (your own data)
    train_size: int | None = None  # how many training points there are, when train_x is a sample of them
    optimizer: str = "SGD"  # the optimizer that trained the fit (`--optimizer X` replaces the model's SGD)
    x_label: str = "x (input)"  # the axes, named after your own data's columns where it names them
    y_label: str = "y (target)"


def sample(
    x: torch.Tensor, y: torch.Tensor, seed: int = 0, size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """At most SCATTER_POINTS of the points, drawn uniformly (not the first ones, which on a sorted grid would all
    sit at one end), in float64 on the CPU, and a note for the title when it is a sample (of `size` points, when
    x is already a sample of them). Only the sample is copied, never all the points."""
    shown_x, shown_y = uniform_sample(x, y, SCATTER_POINTS, seed)
    size = len(x) if size is None else size
    note = "" if size <= SCATTER_POINTS else f" ({len(shown_x):,} of {size:,} points shown)"
    return shown_x.double().cpu(), shown_y.double().cpu(), note


def save_png(figure: Figure, path: Path) -> np.ndarray:
    """Render the figure once, write it as a PNG, and return its pixels (height, width, RGB) for TensorBoard's
    add_image: drawing it again there (add_figure) cost as much as the first drawing."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())
    matplotlib.image.imsave(path, pixels, dpi=figure.dpi)
    return pixels[..., :3]


def fit_figures(picture: FitPicture) -> dict[str, Figure]:
    """{"fit": data and curves, "residuals": residuals with the noise bands, and SGD's distance to the optimum}."""
    train_x, train_y, shown = sample(picture.train_x, picture.train_y, size=picture.train_size)
    val_x, val_y, _ = sample(picture.val_x, picture.val_y, seed=1)
    all_x, all_y = torch.cat([train_x, val_x]), torch.cat([train_y, val_y])
    grid = torch.linspace(all_x.min().item(), all_x.max().item(), 400, dtype=torch.float64)
    fitted = evaluate_polynomial(picture.fitted_coefficients, grid)
    optimum = evaluate_polynomial(picture.optimum_coefficients, grid)
    low, high = all_y.min().item(), all_y.max().item()
    margin = Y_MARGIN * (high - low or 1.0)
    low, high = low - margin, high + margin

    def leaves(curve: torch.Tensor) -> str:
        return " (leaves the plot)" if bool(((curve < low) | (curve > high)).any()) else ""

    fit = Figure(figsize=(9.5, 4.8), dpi=FIGURE_DPI, layout="constrained")
    axes = fit.subplots()
    if picture.true_coefficients is not None:
        axes.plot(grid, evaluate_polynomial(picture.true_coefficients, grid), color="tab:green", label="true curve")
    axes.plot(
        grid, fitted, color="tab:red", linewidth=5, alpha=0.4, label=f"fitted by {picture.optimizer}{leaves(fitted)}"
    )
    axes.plot(
        grid, optimum, color="black", linestyle="--", linewidth=1.2, label=f"closed-form optimum{leaves(optimum)}"
    )
    axes.scatter(train_x, train_y, s=16, color="black", label="training points", zorder=3)
    if len(val_x):
        axes.scatter(val_x, val_y, s=22, facecolors="none", edgecolors="tab:orange", label="validation points")
    axes.set_ylim(low, high)
    axes.set(xlabel=picture.x_label, ylabel=picture.y_label, title=f"The data and the fitted curve{shown}")
    fit.legend(loc="outside right upper", fontsize="small")  # beside the data, never on it
    return {"fit": fit, "residuals": residual_figure(picture, train_x, train_y, val_x, val_y, grid, fitted - optimum)}


def residual_figure(
    picture: FitPicture,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    grid: torch.Tensor,
    fitted_minus_optimum: torch.Tensor,
) -> Figure:
    figure = Figure(figsize=(9.5, 5.5), dpi=FIGURE_DPI, layout="constrained")
    above, below = figure.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    sigma = picture.noise_std
    if sigma:
        s = "σ̂" if picture.noise_estimated else "σ"
        estimated = ", estimated" if picture.noise_estimated else ""
        above.axhspan(-2 * sigma, 2 * sigma, color="tab:green", alpha=0.08, label=f"±2{s} (95% of the noise)")
        label = f"±{s} = ±{sigma:.3g} (68% of the noise{estimated})"
        above.axhspan(-sigma, sigma, color="tab:green", alpha=0.18, label=label)
    above.axhline(0.0, color="gray", linewidth=1)
    fitted, name = picture.fitted_coefficients, picture.optimizer
    above.scatter(train_x, train_y - evaluate_polynomial(fitted, train_x), s=16, color="black", label="training")
    if len(val_x):
        val_residuals = val_y - evaluate_polynomial(fitted, val_x)
        above.scatter(val_x, val_residuals, s=22, facecolors="none", edgecolors="tab:orange", label="validation")
    above.set(
        ylabel=f"y − {name}'s prediction", title=f"Residuals of the {name} fit, and the noise they should look like"
    )
    figure.legend(loc="outside right upper", fontsize="small")  # beside the residuals, never on them
    below.axhline(0.0, color="gray", linewidth=1)
    below.plot(grid, fitted_minus_optimum, color="tab:red")
    # On a scale a reader can compare: at least ±5% of σ (or of y's range), so that a converged fit's float32
    # rounding (1e-6) reads as the flat line it is, not as a miss as large as a stalled fit's.
    y_range = (torch.cat([train_y, val_y]).max() - torch.cat([train_y, val_y]).min()).item() if len(train_y) else 1.0
    floor = 0.05 * (sigma or y_range or 1.0)
    scale = max(fitted_minus_optimum.abs().max().item(), floor)
    below.set_ylim(-1.1 * scale, 1.1 * scale)
    below.ticklabel_format(axis="y", useOffset=False)
    below.set(
        xlabel=picture.x_label,
        ylabel=f"{name} − optimum",
        title=f"How far {name}'s curve is from the closed-form optimum",
    )
    return figure
