"""How hard the training problem is for gradient descent: the Hessian, its condition number κ, the largest stable
learning rate (with momentum, dampening, Nesterov) and the full-batch steps to within 1% of the optimum. The
derivations: docs/how-it-works.md, "conditioning.py".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fitquad.core.losses import loss_shape
from fitquad.core.model import PolynomialModel
from fitquad.core.module import TrainingDiverged
from fitquad.theory.passes import design_chunks
from fitquad.theory.reference import gap_scale

# QuadraticRegression's SGD arguments: the fields of OptimizerSettings, and a param group's options.
SGD_OPTIONS = ("lr", "momentum", "dampening", "nesterov", "weight_decay")


@dataclass
class OptimizerSettings:
    """The torch.optim.SGD settings that the stability rule and the step prediction depend on."""

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    @classmethod
    def of(cls, optimizer: torch.optim.Optimizer) -> OptimizerSettings:
        group = optimizer.param_groups[0]
        return cls(
            lr=group["lr"],
            momentum=group.get("momentum", 0.0),
            dampening=group.get("dampening", 0.0),
            nesterov=group.get("nesterov", False),
            weight_decay=group.get("weight_decay", 0.0),
        )


@dataclass
class Conditioning:
    """The curvature of the training objective in the model's own units (after feature scaling)."""

    eigenvalues: torch.Tensor  # of the Hessian, ascending, float64
    eigenvectors: torch.Tensor  # columns, matching eigenvalues
    condition_number: float  # λmax/λmin (inf when λmin = 0)
    largest_stable_lr_gd: float  # 2/λmax: plain full-batch gradient descent (inf for L1)
    largest_stable_lr: float  # the same rule with this optimizer's momentum, dampening, Nesterov
    curvature: str  # where the Hessian comes from, in words
    # Predicted steps are a lower bound: Huber's and SmoothL1's Hessian is their curvature within delta (beta), the
    # largest they have; residuals beyond it contribute none, so the fit is slower than predicted.
    steps_are_a_bound: bool = False

    @property
    def why_a_bound(self) -> str:
        return "a lower bound: residuals beyond the loss's delta or beta pull with a constant force, more slowly"

    def as_dict(self) -> dict:
        return {
            "hessian_eigenvalues": self.eigenvalues.tolist(),
            "condition_number": self.condition_number,
            "largest_stable_lr_gd": self.largest_stable_lr_gd,
            "largest_stable_lr": self.largest_stable_lr,
            "curvature": self.curvature,
        }


def loss_curvature(loss_fn: nn.Module) -> tuple[float, str]:
    """c such that the Hessian of the loss is at most c·AᵀA/n, and how exact that is, in words (from the loss
    table's shape of the loss, fitquad.core.losses)."""
    shape, name = loss_shape(loss_fn), type(loss_fn).__name__.removesuffix("Loss")
    c = shape.curvature
    times = "" if c == 1 else f"{c:g}·"
    if shape.absolute:
        return 0.0, f"{name}: no curvature, no learning rate diverges"
    if shape.quadratic:
        return c, f"{name}: exact, {times}AᵀA/n"
    return c, f"{name}: upper bound {times}AᵀA/n (all residuals within {shape.delta:g})"


def largest_stable_lr(
    lambda_max: float, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False
) -> float:
    """The largest learning rate for which full-batch SGD (torch's update rule) does not diverge."""
    if lambda_max <= 0:
        return math.inf
    if nesterov:
        return 2 * (1 + momentum) / ((1 + 2 * momentum) * lambda_max)
    if momentum > 0:
        return 2 * (1 + momentum) / ((1 - dampening) * lambda_max) if dampening < 1 else math.inf
    return 2 / lambda_max


def conditioning(
    model: PolynomialModel,
    train_x: torch.Tensor,
    loss_fn: nn.Module,
    settings: OptimizerSettings,
) -> Conditioning:
    """The Hessian of the training objective (loss + weight_decay/2·|θ|²) on all the training points and what it
    implies for SGD."""
    curvature, description = loss_curvature(loss_fn)
    # AᵀA summed a chunk at a time (one chunk up to CHUNK_POINTS points): no float64 copy of millions of points.
    gram = sum(a.T @ a for a, _ in design_chunks(model, train_x))
    p = gram.shape[1]
    hessian = curvature * gram / len(train_x) + settings.weight_decay * torch.eye(p, dtype=torch.float64)
    eigenvalues, eigenvectors = torch.linalg.eigh(hessian)
    lambda_min, lambda_max = eigenvalues[0].item(), eigenvalues[-1].item()
    return Conditioning(
        eigenvalues=eigenvalues,
        eigenvectors=eigenvectors,
        condition_number=lambda_max / lambda_min if lambda_min > 0 else math.inf,
        largest_stable_lr_gd=2 / lambda_max if lambda_max > 0 else math.inf,
        largest_stable_lr=largest_stable_lr(lambda_max, settings.momentum, settings.dampening, settings.nesterov),
        curvature=description,
        steps_are_a_bound=not (loss_shape(loss_fn).quadratic or loss_shape(loss_fn).absolute),
    )


def divergence_line(
    diverged: TrainingDiverged, model: PolynomialModel, x: torch.Tensor, loss_fn: nn.Module, settings: OptimizerSettings
) -> str:
    """A divergence's one line as `fitquad fit` prints it, with the largest stable lr of this model, data, loss and
    SGD: the one divergence rule for a sweep's or a comparison's run (a fit's diagnosis fills the lr in from the
    conditioning it took at the start)."""
    diverged.largest_stable_lr = conditioning(model, x, loss_fn, settings).largest_stable_lr
    return str(diverged)


def contraction_factors(eigenvalues: torch.Tensor, settings: OptimizerSettings) -> torch.Tensor:
    """Per eigen-direction, how much the error shrinks per step (spectral radius of torch's SGD recurrence).

    With momentum the state per direction is (error, momentum buffer) and one step multiplies it by
    a 2×2 matrix; without momentum that is just |1 − lr·λ|.
    """
    lr, beta, d = settings.lr, settings.momentum, settings.dampening
    if beta == 0:
        return (1 - lr * eigenvalues).abs()
    lam = eigenvalues
    if settings.nesterov:  # e' = e − lr·(λe + β·buf'), buf' = β·buf + λe
        top = torch.stack([1 - lr * lam * (1 + beta), torch.full_like(lam, -lr * beta**2)], dim=-1)
        bottom = torch.stack([lam, torch.full_like(lam, beta)], dim=-1)
    else:  # e' = e − lr·buf', buf' = β·buf + (1 − d)·λe
        top = torch.stack([1 - lr * (1 - d) * lam, torch.full_like(lam, -lr * beta)], dim=-1)
        bottom = torch.stack([(1 - d) * lam, torch.full_like(lam, beta)], dim=-1)
    matrices = torch.stack([top, bottom], dim=-2)
    return torch.linalg.eigvals(matrices).abs().amax(dim=-1)


def predicted_steps_to_gap(
    conditioning: Conditioning,
    theta: torch.Tensor,
    optimum_theta: torch.Tensor,
    optimum_loss: float,
    settings: OptimizerSettings,
    target_gap: float = 0.01,
    resolution: float = 0.0,
) -> float | None:
    """Full-batch steps until (loss − optimum)/optimum ≤ target_gap, starting from theta (the gap measured as
    fitquad.theory.reference.relative_gap does, against `resolution` where the optimum is below it).

    The objective's excess over the optimum is ½·Σ λᵢ·eᵢ² along the Hessian's eigenvectors, and each
    step multiplies eᵢ by its contraction factor ρᵢ, so the excess after t steps is ½·Σ λᵢ·eᵢ²·ρᵢ^(2t):
    exact for MSE with plain gradient descent, the asymptotic rate with momentum, the local quadratic
    model for Huber/SmoothL1. Returns 0 if already there, inf if some direction does not contract, and
    None for L1 (no curvature, no rate).
    """
    if conditioning.largest_stable_lr_gd == math.inf:
        return None
    error = conditioning.eigenvectors.T @ (theta.double().cpu() - optimum_theta)
    excess = 0.5 * conditioning.eigenvalues * error.square()
    target = target_gap * gap_scale(optimum_loss, resolution)
    if excess.sum().item() <= target:
        return 0
    rho = contraction_factors(conditioning.eigenvalues, settings)
    moving = excess > 0
    if (rho[moving] >= 1).any():
        return math.inf

    def excess_after(steps: float) -> float:
        return (excess[moving] * rho[moving] ** (2 * steps)).sum().item()

    high = 1.0
    while excess_after(high) > target:
        high *= 2
        if high > 1e18:
            return math.inf
    low = high / 2 if high > 1 else 0.0
    while high - low > 1:  # the excess falls monotonically in t: bisect for the first whole step
        middle = math.floor((low + high) / 2)
        low, high = (middle, high) if excess_after(middle) > target else (low, middle)
    return high
