"""The figures of a fit: the data with the true, fitted and closed-form curves, and the residuals.

matplotlib is imported here and only here, with the Agg backend (files, no display), and fitquad
imports this module only when it draws: `fitquad --help` and figure-less runs never pay for it.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fitquad.model import evaluate_polynomial  # noqa: E402

# Scatter plots draw at most this many training points.
SCATTER_POINTS = 2_000


def fit_figures(
    x: torch.Tensor,
    y: torch.Tensor,
    true_coefficients: list[float],
    fitted_coefficients: torch.Tensor,
    reference_coefficients: torch.Tensor,
) -> dict[str, Figure]:
    """{"fit": data and curves, "residuals": y − fitted against x}, coefficients in original units, c0 first.

    At most SCATTER_POINTS points are drawn (the leading ones: i.i.d. draws), so millions stay readable
    and quick; the title says when the points shown are a sample.
    """
    grid = torch.linspace(x.min().item(), x.max().item(), 200, dtype=torch.float64)
    shown = "" if len(x) <= SCATTER_POINTS else f" ({SCATTER_POINTS:,} of {len(x):,} points shown)"
    x, y = x[:SCATTER_POINTS], y[:SCATTER_POINTS]
    fit, axes = plt.subplots(figsize=(7, 4.5))
    axes.scatter(x, y, s=14, color="black", label="training data", zorder=3)
    axes.plot(grid, evaluate_polynomial(true_coefficients, grid), color="tab:green", label="true curve")
    axes.plot(
        grid,
        evaluate_polynomial(reference_coefficients, grid),
        color="tab:blue",
        linestyle="--",
        label="closed-form optimum",
    )
    axes.plot(grid, evaluate_polynomial(fitted_coefficients, grid), color="tab:red", label="fitted by SGD")
    axes.set(xlabel="x", ylabel="y", title=f"Fit on the training set{shown}")
    axes.legend()
    fit.tight_layout()

    residuals, axes = plt.subplots(figsize=(7, 3))
    axes.axhline(0.0, color="gray", linewidth=1)
    axes.scatter(x, y - evaluate_polynomial(fitted_coefficients, x), s=14, color="tab:red", label="fitted by SGD")
    axes.scatter(
        x,
        y - evaluate_polynomial(reference_coefficients, x),
        s=8,
        color="tab:blue",
        marker="x",
        label="closed-form optimum",
    )
    axes.set(xlabel="x", ylabel="y − prediction", title=f"Residuals on the training set{shown}")
    axes.legend()
    residuals.tight_layout()
    return {"fit": fit, "residuals": residuals}


def close(figures: dict[str, Figure]) -> None:
    for figure in figures.values():
        plt.close(figure)
