"""The fit figures show their lesson: both curves visible, validation points drawn, the frame set by the data
(not by an overfit curve's swings), the noise bands at ±σ, and large data sampled across its whole range."""

from __future__ import annotations

import torch

from fitquad.callbacks.figures import SCATTER_POINTS, FitPicture, fit_figures, sample


def picture(optimum: list[float], n: int = 20) -> FitPicture:
    x = torch.linspace(-1, 1, n, dtype=torch.float64)
    y = 0.75 * x**2 + x + 2 + 0.3 * torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return FitPicture(
        train_x=x, train_y=y, val_x=x + 0.01, val_y=y + 0.1, true_coefficients=[2.0, 1.0, 0.75],
        fitted_coefficients=torch.tensor([2.0, 1.0, 0.75]), optimum_coefficients=torch.tensor(optimum),
        noise_std=0.3,
    )  # fmt: skip


def legend_labels(figure) -> list[str]:
    """The labels of a figure's legend, which sits beside its axes (never on the data)."""
    (legend,) = figure.legends
    assert not any(axes.get_legend() for axes in figure.axes)  # no legend inside a plot
    return [text.get_text() for text in legend.get_texts()]


def test_the_frame_is_set_by_the_data_and_a_curve_that_leaves_it_says_so() -> None:
    wild = picture([2.0, 1.0, 0.75, 0.0, 0.0, 0.0, -900.0])  # an overfit optimum swinging to -900
    drawn = fit_figures(wild)
    axes = drawn["fit"].axes[0]
    low, high = axes.get_ylim()
    y = torch.cat([wild.train_y, wild.val_y])
    assert low < y.min().item() and high > y.max().item()
    assert high - low < 2 * (y.max() - y.min()).item()  # not stretched to the curve's -900
    labels = legend_labels(drawn["fit"])
    assert "closed-form optimum (leaves the plot)" in labels and "fitted by SGD" in labels
    assert "validation points" in labels and axes.get_xlabel() == "x (input)"


def test_residuals_show_the_noise_bands_and_the_distance_to_the_optimum() -> None:
    drawn = fit_figures(picture([2.0, 1.0, 0.75]))
    above, below = drawn["residuals"].axes
    labels = legend_labels(drawn["residuals"])
    assert "±σ = ±0.3 (68% of the noise)" in labels and "±2σ (95% of the noise)" in labels
    (difference,) = below.get_lines()[1:]
    assert abs(difference.get_ydata()).max() == 0  # SGD's curve is the optimum here


def test_large_data_is_sampled_across_its_whole_range() -> None:
    x = torch.linspace(0, 1, 100_000)
    shown_x, shown_y, note = sample(x, x)
    assert len(shown_x) == SCATTER_POINTS and "2,000 of 100,000 points shown" in note
    assert shown_x.min() < 0.01 and shown_x.max() > 0.99  # not the first 2,000 points of a sorted grid


def test_your_own_data_has_no_true_curve_and_an_estimated_noise_band() -> None:
    unknown = picture([2.0, 1.0, 0.75])
    unknown.true_coefficients, unknown.noise_std, unknown.noise_estimated = None, 0.25, True
    drawn = fit_figures(unknown)
    fit_labels = legend_labels(drawn["fit"])
    assert "true curve" not in fit_labels and "training points" in fit_labels
    residual_labels = legend_labels(drawn["residuals"])
    assert "±σ̂ = ±0.25 (68% of the noise, estimated)" in residual_labels


def test_the_figures_name_the_optimizer_and_your_columns_and_a_converged_fit_reads_flat() -> None:
    adam = picture([2.0, 1.0, 0.75])
    adam.fitted_coefficients = torch.tensor([2.0, 1.0, 0.75 + 1e-7])  # float32 rounding away from the optimum
    adam.optimizer, adam.x_label, adam.y_label = "Adam", "speed_kmh", "distance_m"
    drawn = fit_figures(adam)
    assert "fitted by Adam" in legend_labels(drawn["fit"])
    assert (drawn["fit"].axes[0].get_xlabel(), drawn["fit"].axes[0].get_ylabel()) == ("speed_kmh", "distance_m")
    above, below = drawn["residuals"].axes
    assert above.get_ylabel() == "y − Adam's prediction" and below.get_xlabel() == "speed_kmh"
    # The distance to the optimum on the noise's scale (±5% of σ at least), not blown up to the rounding's 1e-7.
    low, high = below.get_ylim()
    assert high >= 0.05 * adam.noise_std and low <= -0.05 * adam.noise_std
