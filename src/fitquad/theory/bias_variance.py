"""Bias² and variance: what models trained on independent draws of the data say about the expected error.

For a model f̂_D trained on a random training set D, and a fresh point (x, y = f(x) + ε):

    E[(f̂_D(x) − y)²] = bias²(x) + variance(x) + σ²,
    bias²(x) = (E_D f̂_D(x) − f(x))²,   variance(x) = Var_D f̂_D(x),

averaged over x from the data's own x distribution. Underfitting is bias (every draw misses the curve the same
way); overfitting is variance (each draw's model follows its own noise). From K draws, at evaluation points
that stand for the x distribution (`evaluation_points`):

    variance = mean over the points of the draws' sample variance (K − 1 in the denominator: unbiased)
    bias²    = mean over the points of (mean of the draws − f)², less variance/K

The mean of K draws scatters by variance/K around E_D f̂_D, so (mean − f)² alone is high by variance/K: a
model whose variance is huge (degree 12 on 15 points) would show that variance/K as a bias² of 10¹⁰. Less
variance/K, each is an unbiased estimate, and bias² + variance is still exactly the draws' mean squared distance
from the true curve. The corrected bias² can come out below 0 where the true bias² is 0 (its estimate is within
its own sampling error of 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fitquad.core.model import evaluate_polynomial

# Evaluation points for bias² and variance: enough that their own sampling error is small beside the draws'.
BIAS_VARIANCE_POINTS = 2000


@dataclass
class Decomposition:
    bias_squared: float
    variance: float
    noise: float  # σ², the true noise variance

    @property
    def expected_error(self) -> float:
        """bias² + variance + σ²: the expected MSE on fresh points that the decomposition predicts."""
        return self.bias_squared + self.variance + self.noise


def evaluation_points(data_options: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, f(x)): x values standing for the data's x distribution, float32 like every x, and the true curve at
    them in float64. Not random, so that they add no sampling error of their own: BIAS_VARIANCE_POINTS
    midpoints of equal-probability intervals for uniform and normal x; for grid x, the validation grid itself
    (every draw's validation points sit there)."""
    distribution, m = data_options["x_distribution"], BIAS_VARIANCE_POINTS
    if distribution == "grid":
        x = torch.from_numpy(np.linspace(data_options["x_min"], data_options["x_max"], max(data_options["n_val"], 2)))
    else:
        probabilities = (torch.arange(m, dtype=torch.float64) + 0.5) / m
        if distribution == "uniform":
            x = data_options["x_min"] + (data_options["x_max"] - data_options["x_min"]) * probabilities
        else:
            x = data_options["x_mean"] + data_options["x_std"] * torch.special.ndtri(probabilities)
    x = x.float()
    truth = evaluate_polynomial([data_options[k] for k in ("true_c", "true_b", "true_a")], x)
    return x, truth


def decompose(predictions: np.ndarray, truth: np.ndarray, noise_variance: float) -> Decomposition:
    """bias² and variance, unbiased, from the (draws, points) predictions of the draws' models at the evaluation
    points."""
    draws = len(predictions)
    variance = float(predictions.var(axis=0, ddof=1).mean()) if draws > 1 else 0.0
    bias_squared = float(((predictions.mean(axis=0) - truth) ** 2).mean()) - variance / draws
    return Decomposition(bias_squared, variance, noise_variance)
