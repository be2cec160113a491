"""Bias² and variance of models trained on independent draws of the data, against the true curve: E[(f̂ − y)²] =
bias² + variance + σ². The estimators (variance unbiased, bias² corrected by variance/K): docs/how-it-works.md.
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
