"""The closed-form reference: the best the model can do on the training set, computed in float64.

The polynomial model is linear in its parameters θ = [bias, weight_1, …, weight_d]: its predictions are
A·θ with A = [1, features(x)] (`design_matrix`). So the optimum of each of torch's regression losses
is a classical problem with a trusted solver:

- MSE: least squares, solved with `torch.linalg.lstsq` (ridge regression when weight_decay > 0);
- Huber and SmoothL1: iteratively reweighted least squares (IRLS), then an exact Newton step on the
  final split between points inside and outside the quadratic zone;
- L1: IRLS with weights 1/|r|, then the exact vertex: an L1 optimum interpolates p of the points.

Weight decay: torch.optim.SGD adds weight_decay·θ to the gradient of the MEAN loss, for every
parameter in the model's own units (bias included), so the point SGD converges to minimizes
loss(θ) + weight_decay/2·|θ|² in model units. The reference is solved in the model's basis for that
reason; with weight_decay = 0 the basis does not matter and the result is the plain least-squares fit.

The noise floors: with noise of known standard deviation σ and a model that contains the true curve,
the expected training MSE at the least-squares optimum is σ²·(n − p)/n (p parameters absorb part of
the noise) and the expected MSE on fresh points is σ² (plus a term that vanishes as n grows).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fitquad.core.losses import loss_shape
from fitquad.core.model import PolynomialModel
from fitquad.theory import streamed_optimum
from fitquad.theory.passes import design_chunks, design_matrix, evaluate, with_parameters
from fitquad.theory.streamed_optimum import Weights, huber_weights_at, irls, l1_vertex, l1_weights_at
from fitquad.theory.streaming import in_one_piece


@dataclass
class Reference:
    """The training-set optimum of one loss (with its weight decay) for one model's basis."""

    parameters: torch.Tensor  # θ* = [bias, weight_1, …] in the model's own units, float64
    coefficients: torch.Tensor  # the same polynomial in original units, c0 first, float64
    train_loss: float  # the loss (as torch computes it, no penalty) at θ*: what training can reach
    train_mse: float  # the MSE at θ*, comparable with the noise floor


def _ridge(a: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None, ridge: float) -> torch.Tensor:
    """argmin_θ  Σ wᵢ(aᵢθ − yᵢ)² + ridge·|θ|², by least squares on the stacked system (no normal equations)."""
    if weights is not None:
        root = weights.sqrt().unsqueeze(1)
        a, y = a * root, y * root.squeeze(1)
    if ridge > 0:
        p = a.shape[1]
        a = torch.cat([a, math.sqrt(ridge) * torch.eye(p, dtype=a.dtype)])
        y = torch.cat([y, torch.zeros(p, dtype=y.dtype)])
    return torch.linalg.lstsq(a, y.unsqueeze(1), driver="gelsd").solution.squeeze(1)


def _weighted_ridge(a: torch.Tensor, y: torch.Tensor, ridge: float) -> Callable[[Weights | None], torch.Tensor]:
    """_ridge on the whole system as streamed_optimum.irls asks for it: weights given as a function of (A, y)."""
    return lambda weights: _ridge(a, y, None if weights is None else weights(a, y), ridge)


def _huber_optimum(a: torch.Tensor, y: torch.Tensor, delta: float, scale: float, weight_decay: float) -> torch.Tensor:
    """Minimize mean(huber_δ(r))/scale + wd/2·|θ|² (scale = 1: HuberLoss; scale = β = δ: SmoothL1Loss).

    IRLS: the weight of a residual is 1 inside the quadratic zone and δ/|r| outside, which majorizes
    the loss, so every iteration lowers it. Once the split into inliers and outliers is right the
    problem is exactly quadratic, and one Newton step from there lands on the optimum.
    """
    n = len(y)
    ridge = n * scale * weight_decay  # the penalty, in the units of Σ wᵢ rᵢ²/2 … times 2/n
    theta = irls(_weighted_ridge(a, y, ridge), huber_weights_at(delta))
    # Newton on the final split: inliers contribute r²/2, outliers δ·|r| (a constant gradient δ·sign(r)).
    residuals = a @ theta - y
    inside = residuals.abs() <= delta
    gradient = (a[inside].T @ residuals[inside] + delta * a[~inside].T @ residuals[~inside].sign()) / (n * scale)
    gradient = gradient + weight_decay * theta
    hessian = a[inside].T @ a[inside] / (n * scale) + weight_decay * torch.eye(a.shape[1], dtype=a.dtype)
    if torch.linalg.matrix_rank(hessian) == a.shape[1]:
        polished = theta - torch.linalg.solve(hessian, gradient)
        if ((a @ polished - y).abs() <= delta).equal(inside):  # the split held: the step is exact
            theta = polished
    return theta


def _l1_optimum(a: torch.Tensor, y: torch.Tensor, weight_decay: float) -> torch.Tensor:
    """Minimize mean|r| + wd/2·|θ|²: without weight decay the exact vertex (an L1 fit is a linear program whose
    optimum interpolates p of the points: streamed_optimum.l1_vertex, proven optimal), with it IRLS (weights 1/|r|).
    """
    n, p = a.shape
    floor = 1e-12 * (1 + y.abs().max().item())  # keeps the weights finite where a residual reaches 0
    solve = _weighted_ridge(a, y, n * weight_decay)
    if weight_decay > 0 or n < p:
        return irls(solve, l1_weights_at(floor))
    return l1_vertex(solve, lambda: iter([(a, y)]), p, floor)


def _solver(loss_fn: nn.Module) -> tuple[str, dict[str, float]]:
    """Which problem the loss's optimum is, from its shape in the loss table (fitquad.core.losses): ("mse" |
    "huber" | "l1", the Huber solver's delta and scale)."""
    shape = loss_shape(loss_fn)
    if shape.quadratic:
        return "mse", {"scale": shape.scale}
    if shape.absolute:
        return "l1", {}
    return "huber", {"delta": shape.delta, "scale": shape.scale}


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
    Beyond CHUNK_POINTS points, or under DDP, the same solvers stream over the data (fitquad.theory.streamed_optimum).
    """
    solver, options = _solver(loss_fn)
    if not in_one_piece(x):
        theta = {
            # mean r²/(2·scale) + wd/2·|θ|²  ∝  |Aθ − y|² + n·scale·wd·|θ|² (MSE: scale 1/2), as below
            "mse": lambda: streamed_optimum.least_squares(model, x, y, len(x) * options["scale"] * weight_decay),
            "huber": lambda: streamed_optimum.huber(model, x, y, **options, weight_decay=weight_decay),
            "l1": lambda: streamed_optimum.l1(model, x, y, weight_decay),
        }[solver]()
        reference_model = with_parameters(model, theta)
        train_loss, train_mse = evaluate(reference_model, x, y, loss_fn)
        return Reference(theta, reference_model.coefficients(), train_loss, train_mse)
    a = design_matrix(model, x)
    y = y.detach().cpu().double()
    theta = {
        # mean r²/(2·scale) + wd/2·|θ|²  ∝  |Aθ − y|² + n·scale·wd·|θ|² (MSE: scale 1/2)
        "mse": lambda: _ridge(a, y, None, len(y) * options["scale"] * weight_decay),
        "huber": lambda: _huber_optimum(a, y, **options, weight_decay=weight_decay),
        "l1": lambda: _l1_optimum(a, y, weight_decay),
    }[solver]()
    predictions = a @ theta
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
