"""The closed-form optimum (fitquad.theory.reference) of points that are not passed over in one piece: millions of them,
a chunk at a time.

The same solvers as the dense ones in fitquad.theory.reference, on the same float64 design matrix A, without ever
holding A whole:

- least squares (weighted, with a ridge) by a QR built up one chunk at a time: the R of [R so far; next chunk] and
  Qᵀy with it, as stable as a QR of all of A;
- Huber and SmoothL1: IRLS, each iteration one weighted least-squares pass, then the exact Newton step on the final
  split between inliers and outliers, its gradient and Hessian summed over the chunks;
- L1: IRLS with weights 1/|r|, then the exact vertex through the p points closest to the IRLS fit, found by keeping
  each chunk's p closest.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from fitquad.core.model import PolynomialModel
from fitquad.theory.passes import design_chunks

# IRLS stops when no parameter moves by more than this, relative to the parameters' size.
IRLS_TOLERANCE = 1e-13
IRLS_MAX_ITERATIONS = 500

Weights = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (A, y) of a chunk → each row's weight


def least_squares(
    model: PolynomialModel,
    x: torch.Tensor,
    y: torch.Tensor,
    ridge: float,
    weights: Weights | None = None,
) -> torch.Tensor:
    """argmin_θ Σ wᵢ(aᵢθ − yᵢ)² + ridge·|θ|² over all the points, streamed: R·θ = Qᵀy is then solved as
    reference's dense solver solves the whole system, with the same rank threshold (machine epsilon × rows)."""
    p = model.degree + 1
    r, z = torch.zeros(0, p, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    for a, y_part in design_chunks(model, x, y):
        if weights is not None:
            root = weights(a, y_part).sqrt()
            a, y_part = a * root.unsqueeze(1), y_part * root
        q, r = torch.linalg.qr(torch.cat([r, a]))
        z = q.T @ torch.cat([z, y_part])
    rows = len(x)
    if ridge > 0:
        q, r = torch.linalg.qr(torch.cat([r, math.sqrt(ridge) * torch.eye(p, dtype=r.dtype)]))
        z = q.T @ torch.cat([z, torch.zeros(p, dtype=z.dtype)])
    rcond = torch.finfo(torch.float64).eps * max(rows + (p if ridge > 0 else 0), p)
    return torch.linalg.lstsq(r, z.unsqueeze(1), rcond=rcond, driver="gelsd").solution.squeeze(1)


def irls(
    solve: Callable[[Weights | None], torch.Tensor], weights_at: Callable[[torch.Tensor], Weights]
) -> torch.Tensor:
    """Iteratively reweighted least squares from the unweighted fit: solve(weights) is the weighted least-squares
    solution (dense or streamed), weights_at(θ) the weights around θ."""
    theta = solve(None)
    for _ in range(IRLS_MAX_ITERATIONS):
        new_theta = solve(weights_at(theta))
        converged = (new_theta - theta).abs().max() <= IRLS_TOLERANCE * (1 + theta.abs().max())
        theta = new_theta
        if converged:
            break
    return theta


def huber_weights_at(delta: float) -> Callable[[torch.Tensor], Weights]:
    """Huber's IRLS weights around θ: 1 inside the quadratic zone, δ/|r| outside (a majorizer of the loss, so every
    iteration lowers it)."""

    def at(theta: torch.Tensor) -> Weights:
        def weights(a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            residuals = (a @ theta - y).abs()
            return torch.where(residuals <= delta, 1.0, delta / residuals.clamp_min(1e-300))

        return weights

    return at


def l1_weights_at(floor: float) -> Callable[[torch.Tensor], Weights]:
    """L1's IRLS weights around θ: 1/|r|, with |r| kept above `floor` where a residual reaches 0."""
    return lambda theta: lambda a, y: 1 / (a @ theta - y).abs().clamp_min(floor)


def huber(
    model: PolynomialModel,
    x: torch.Tensor,
    y: torch.Tensor,
    delta: float,
    scale: float,
    weight_decay: float,
) -> torch.Tensor:
    """Minimize mean(huber_δ(r))/scale + wd/2·|θ|² (scale = 1: HuberLoss; scale = β = δ: SmoothL1Loss), as
    reference's dense solver does."""
    n, p = len(x), model.degree + 1
    ridge = n * scale * weight_decay
    theta = irls(lambda weights: least_squares(model, x, y, ridge, weights), huber_weights_at(delta))
    # Newton on the final split: inliers contribute r²/2, outliers δ·|r| (a constant gradient δ·sign(r)).
    gradient, hessian = torch.zeros(p, dtype=torch.float64), torch.zeros(p, p, dtype=torch.float64)
    for a, y_part in design_chunks(model, x, y):
        residuals = a @ theta - y_part
        inside = residuals.abs() <= delta
        gradient += a[inside].T @ residuals[inside] + delta * a[~inside].T @ residuals[~inside].sign()
        hessian += a[inside].T @ a[inside]
    gradient = gradient / (n * scale) + weight_decay * theta
    hessian = hessian / (n * scale) + weight_decay * torch.eye(p, dtype=torch.float64)
    if torch.linalg.matrix_rank(hessian) < p:
        return theta
    polished = theta - torch.linalg.solve(hessian, gradient)
    moved = sum(
        int((((a @ polished - y_part).abs() <= delta) != ((a @ theta - y_part).abs() <= delta)).sum())
        for a, y_part in design_chunks(model, x, y)
    )
    return polished if moved == 0 else theta  # the split held: the step is exact


def l1(model: PolynomialModel, x: torch.Tensor, y: torch.Tensor, weight_decay: float) -> torch.Tensor:
    """Minimize mean|r| + wd/2·|θ|² by IRLS (weights 1/|r|), then, without weight decay, the exact vertex, as
    reference's dense solver does."""
    n, p = len(x), model.degree + 1
    floor = 1e-12 * (1 + (y.abs().max().item() if len(y) else 0.0))
    theta = irls(lambda weights: least_squares(model, x, y, n * weight_decay, weights), l1_weights_at(floor))
    if weight_decay > 0 or n < p:
        return theta
    a_closest, y_closest = _closest_points(model, x, y, theta, p)
    if torch.linalg.matrix_rank(a_closest) < p:
        return theta
    vertex = torch.linalg.solve(a_closest, y_closest)
    at_vertex = at_theta = 0.0
    for a, y_part in design_chunks(model, x, y):
        at_vertex += (a @ vertex - y_part).abs().sum().item()
        at_theta += (a @ theta - y_part).abs().sum().item()
    return vertex if at_vertex <= at_theta else theta


def _closest_points(
    model: PolynomialModel, x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, y) of the `count` points with the smallest |aθ − y|: each chunk's closest, merged."""
    p = model.degree + 1
    residuals = torch.zeros(0, dtype=torch.float64)
    rows, targets = torch.zeros(0, p, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    for a, y_part in design_chunks(model, x, y):
        residuals = torch.cat([residuals, (a @ theta - y_part).abs()])
        rows, targets = torch.cat([rows, a]), torch.cat([targets, y_part])
        closest = residuals.argsort()[:count]
        residuals, rows, targets = residuals[closest], rows[closest], targets[closest]
    return rows, targets
