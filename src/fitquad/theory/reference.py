"""The closed-form reference: the best the model can do on its training points, in float64 (least squares, IRLS for
Huber and SmoothL1, the simplex for L1; with weight decay in the model's own units, as SGD applies it), and the noise
floors. Why each, and why the model's basis: docs/how-it-works.md, "reference.py".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fitquad.core.losses import loss_shape
from fitquad.core.model import PolynomialModel
from fitquad.theory import streamed_optimum
from fitquad.theory.passes import design_chunks, design_matrix, evaluate, in_one_piece, with_parameters


@dataclass
class Reference:
    """The training-set optimum of one loss (with its weight decay) for one model's basis."""

    parameters: torch.Tensor  # θ* = [bias, weight_1, …] in the model's own units, float64
    coefficients: torch.Tensor  # the same polynomial in original units, c0 first, float64
    train_loss: float  # the loss (as torch computes it, no penalty) at θ*: what training can reach
    train_mse: float  # the MSE at θ*, comparable with the noise floor


def optimum(
    model: PolynomialModel,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: nn.Module,
    weight_decay: float = 0.0,
) -> Reference:
    """The minimizer of loss_fn(model(x), y) + weight_decay/2·|θ|² over the model's parameters θ, in float64, on
    all the points.

    loss_fn is one of torch's MSELoss, L1Loss, HuberLoss, SmoothL1Loss with mean reduction (the
    training module's own `loss_fn`); the value reported is computed by it, so it is what training sees.
    The solvers (fitquad.theory.streamed_optimum) pass over the points a chunk at a time beyond CHUNK_POINTS of them.
    """
    shape = loss_shape(loss_fn)  # which problem the optimum is: the loss table's shape of the loss
    if shape.quadratic:  # mean r²/(2·scale) + wd/2·|θ|²  ∝  |Aθ − y|² + n·scale·wd·|θ|² (MSE: scale 1/2)
        theta = streamed_optimum.least_squares(model, x, y, len(x) * shape.scale * weight_decay)
    elif shape.absolute:
        theta = streamed_optimum.l1(model, x, y, weight_decay)
    else:
        theta = streamed_optimum.huber(model, x, y, delta=shape.delta, scale=shape.scale, weight_decay=weight_decay)
    if not in_one_piece(x):
        reference_model = with_parameters(model, theta)
        train_loss, train_mse = evaluate(reference_model, x, y, loss_fn)
        return Reference(theta, reference_model.coefficients(), train_loss, train_mse)
    predictions, y = design_matrix(model, x) @ theta, y.detach().cpu().double()
    return Reference(
        parameters=theta,
        coefficients=with_parameters(model, theta).coefficients(),
        train_loss=loss_fn(predictions, y).item(),
        train_mse=nn.functional.mse_loss(predictions, y).item(),
    )


def against_optimum(
    model: PolynomialModel, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
    loss_fn: nn.Module, weight_decay: float, predictions: torch.Tensor | None = None,
) -> tuple[float, float, float]:  # fmt: skip
    """A trained run beside the closed-form optimum of its loss (with weight decay) on its training points: the
    optimum's train and validation MSE, and the RMS gap between the run's `predictions` (the training points then
    the validation points; None: the model's own, in float64) and the optimum's there (near 0 once converged)."""
    (train_x, train_y), (val_x, val_y) = train, val
    best = optimum(model, train_x, train_y, loss_fn, weight_decay)
    design = design_matrix(model, torch.cat([train_x, val_x]))
    at_optimum = design @ best.parameters
    if predictions is None:
        predictions = design @ model.model_parameters()
    errors = at_optimum - torch.cat([train_y, val_y]).double()
    n = len(train_x)
    val_mse = errors[n:].square().mean().item() if len(val_x) else math.nan
    gap = (predictions.double() - at_optimum).square().mean().sqrt().item()
    return errors[:n].square().mean().item(), val_mse, gap


# A prediction in a dtype is a sum of terms θₖ·φₖ(x), each rounded: its error is a few ulps of Σₖ|θₖ·φₖ(x)|,
# which for a polynomial whose large terms cancel is far more than an ulp of the prediction itself.
LOSS_ULPS = 4


def loss_resolution(
    model: PolynomialModel,
    x: torch.Tensor,
    y: torch.Tensor,
    parameters: torch.Tensor,
    dtype: torch.dtype,
    l1: bool,
) -> float:
    """The smallest loss distinguishable from 0 when the model with `parameters` (its own units, e.g. the
    optimum's) predicts `y` in `dtype`: the rounding of each prediction's terms, squared (or not, for L1), over
    all the points."""
    if in_one_piece(x):
        terms = design_matrix(model, x).abs() @ parameters.double().abs() + y.double().abs()
        rounding = LOSS_ULPS * torch.finfo(dtype).eps * terms
        return (rounding.mean() if l1 else rounding.square().mean()).item()
    total = 0.0
    for a, y_part in design_chunks(model, x, y):
        rounding = LOSS_ULPS * torch.finfo(dtype).eps * (a.abs() @ parameters.double().abs() + y_part.abs())
        total += (rounding.sum() if l1 else rounding.square().sum()).item()
    return total / len(x)


def relative_gap(loss: float, optimum_loss: float, resolution: float = 0.0) -> float:
    """(loss − optimum)/optimum: 0.01 means within 1% of the best the model can do on this data.

    An exact fit (noise-free data, or as many points as parameters) has an optimum of float64 rounding, ~1e-28:
    the caller then passes the `resolution` of the run's precision (loss_resolution), and the gap is measured
    against it, not against an optimum that would call a loss at float32's rounding floor "10¹⁷ times the
    optimum". A loss below the optimum, the minimum, is rounding: gap 0.
    """
    excess = max(loss - optimum_loss, 0.0)  # nan stays nan
    return excess / gap_scale(optimum_loss, resolution)


def gap_scale(optimum_loss: float, resolution: float = 0.0) -> float:
    """What relative_gap divides by: the optimum, or the resolution where the optimum is below it; 1 where both
    are 0 (an absolute gap)."""
    scale = max(optimum_loss, resolution)
    return scale if scale > 0 else 1.0


def training_noise_floor(noise_std: float, n_train: int, n_parameters: int) -> float:
    """Expected training MSE at the least-squares optimum: σ²·(n − p)/n (for a model containing the truth)."""
    return noise_std**2 * max(n_train - n_parameters, 0) / n_train


def validation_noise_floor(noise_std: float) -> float:
    """Expected MSE of the true curve on fresh points: σ²."""
    return noise_std**2


def estimated_noise_std(least_squares_mse: float, n: int, n_parameters: int) -> float | None:
    """σ estimated from the least-squares optimum's residuals (its training MSE, RSS/n), √(RSS/(n − p)): unbiased
    for σ² when the model contains the true curve (a model too simple for the data inflates it). None with no
    residual degrees of freedom (n ≤ p)."""
    if n <= n_parameters:
        return None
    return (least_squares_mse * n / (n - n_parameters)) ** 0.5
