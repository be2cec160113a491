"""The closed-form reference against trusted solvers: numpy's least squares, brute force, plain PyTorch."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from conftest import lesson3_data, scaled_model
from fitquad.theory.passes import design_matrix
from fitquad.theory.reference import optimum, training_noise_floor


@pytest.mark.parametrize("scaling", ["none", "standardize", "whiten"])
@pytest.mark.parametrize("degree", [1, 2, 3])
def test_mse_optimum_is_numpy_least_squares(scaling: str, degree: int) -> None:
    data = lesson3_data()
    model = scaled_model(degree, scaling, data.train_x)
    reference = optimum(model, data.train_x, data.train_y, nn.MSELoss())
    x, y = data.train_x.double().numpy(), data.train_y.double().numpy()
    vandermonde = np.vander(x, degree + 1, increasing=True)
    expected, *_ = np.linalg.lstsq(vandermonde, y, rcond=None)
    np.testing.assert_allclose(reference.coefficients.numpy(), expected, rtol=1e-7, atol=1e-9)
    expected_mse = np.mean((vandermonde @ expected - y) ** 2)
    assert reference.train_loss == pytest.approx(expected_mse, rel=1e-10)


@pytest.mark.parametrize("scaling", ["none", "standardize"])
def test_weight_decay_optimum_is_where_plain_torch_sgd_converges(scaling: str) -> None:
    # torch's SGD adds weight_decay·θ to the gradient of the mean loss, bias included, in model units.
    data = lesson3_data()
    model = scaled_model(2, scaling, data.train_x).double()
    weight_decay, lr, steps = (0.5, 0.3, 3000) if scaling == "standardize" else (1e-3, 3e-5, 200_000)
    reference = optimum(model, data.train_x, data.train_y, nn.MSELoss(), weight_decay)
    # Normal equations in numpy: (2/n·AᵀA + wd·I)·θ = 2/n·Aᵀy.
    a, y = design_matrix(model, data.train_x).numpy(), data.train_y.double().numpy()
    n = len(y)
    normal = np.linalg.solve(2 / n * a.T @ a + weight_decay * np.eye(3), 2 / n * a.T @ y)
    np.testing.assert_allclose(reference.parameters.numpy(), normal, rtol=1e-8)
    if scaling == "none":
        return  # the plain loop below needs ~10⁷ steps on raw t; the standardized case checks the same rule
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    x, target = data.train_x.double(), data.train_y.double()
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), target).backward()
        optimizer.step()
    np.testing.assert_allclose(model.model_parameters().numpy(), reference.parameters.numpy(), rtol=1e-9)


@pytest.mark.parametrize(
    "loss_fn", [nn.HuberLoss(delta=2.0), nn.SmoothL1Loss(beta=0.5), nn.HuberLoss(delta=0.3)], ids=repr
)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_huber_and_smooth_l1_optimum_is_a_stationary_point(loss_fn: nn.Module, weight_decay: float) -> None:
    # Both losses are convex and differentiable: zero gradient (by torch's autograd) means the global optimum.
    data = lesson3_data()
    y = data.train_y.clone()
    y[::5] += 40.0  # outliers, so that some residuals sit in the linear zone
    model = scaled_model(2, "standardize", data.train_x).double()
    reference = optimum(model, data.train_x, y, loss_fn, weight_decay)
    theta = reference.parameters.clone().requires_grad_(True)
    a = design_matrix(model, data.train_x)
    objective = loss_fn(a @ theta, y.double()) + weight_decay / 2 * theta.square().sum()
    (gradient,) = torch.autograd.grad(objective, theta)
    assert gradient.abs().max().item() < 1e-10
    residuals = (a @ reference.parameters - y.double()).abs()
    threshold = loss_fn.delta if isinstance(loss_fn, nn.HuberLoss) else loss_fn.beta
    if weight_decay == 0:  # (a strong penalty shrinks the fit until every residual is in the linear zone)
        assert (residuals > threshold).any() and (residuals < threshold).any()  # both zones are in play


def brute_force_l1(a: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """The L1 optimum is a vertex: it interpolates p of the n points. Try every p-subset."""
    best, best_loss = None, np.inf
    for subset in itertools.combinations(range(len(y)), a.shape[1]):
        rows = list(subset)
        if np.linalg.matrix_rank(a[rows]) < a.shape[1]:
            continue
        theta = np.linalg.solve(a[rows], y[rows])
        loss = np.mean(np.abs(a @ theta - y))
        if loss < best_loss:
            best, best_loss = theta, loss
    return best, best_loss


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("loss_fn", [nn.L1Loss(), nn.SmoothL1Loss(beta=0.0)], ids=repr)
def test_l1_optimum_matches_brute_force_on_small_data(seed: int, loss_fn: nn.Module) -> None:
    generator = np.random.RandomState(seed)
    x = torch.from_numpy(generator.uniform(-2, 2, 11).astype(np.float32))
    y = torch.from_numpy((0.75 * x.numpy() ** 2 + x.numpy() + 2 + generator.standard_cauchy(11)).astype(np.float32))
    model = scaled_model(2, "standardize", x)
    reference = optimum(model, x, y, loss_fn)
    a = design_matrix(model, x).numpy()
    theta, loss = brute_force_l1(a, y.double().numpy())
    assert reference.train_loss == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(reference.parameters.numpy(), theta, rtol=1e-8, atol=1e-10)


def test_l1_optimum_with_weight_decay_is_not_improved_by_any_nearby_point() -> None:
    # Convex objective: a local minimum is the global one. Probe it in 2000 random directions.
    data = lesson3_data()
    model = scaled_model(2, "standardize", data.train_x)
    weight_decay = 0.2
    reference = optimum(model, data.train_x, data.train_y, nn.L1Loss(), weight_decay)
    a, y = design_matrix(model, data.train_x), data.train_y.double()

    def objective(theta: torch.Tensor) -> torch.Tensor:
        return (a @ theta.T - y.unsqueeze(1)).abs().mean(0) + weight_decay / 2 * theta.square().sum(-1)

    best = objective(reference.parameters.unsqueeze(0)).item()
    directions = torch.randn(2000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for size in (1e-6, 1e-3, 1e-1):
        assert objective(reference.parameters + size * directions).min().item() >= best - 1e-12


def test_training_noise_floor_is_the_mean_least_squares_mse_over_many_draws() -> None:
    # E[train MSE at the optimum] = σ²·(n − p)/n, checked by simulation: 4000 noise draws on the same x.
    generator = np.random.RandomState(0)
    n, sigma, degree = 20, 3.0, 2
    x = np.linspace(0, 19, n)
    vandermonde = np.vander(x, degree + 1, increasing=True)
    noise = sigma * generator.randn(4000, n)
    y = 0.75 * x**2 - 14.25 * x + 68.6875 + noise
    fitted, *_ = np.linalg.lstsq(vandermonde, y.T, rcond=None)
    mse = np.mean((vandermonde @ fitted - y.T) ** 2, axis=0)
    # the mean of 4000 draws has a standard error of about 0.4% here
    assert mse.mean() == pytest.approx(training_noise_floor(sigma, n, degree + 1), rel=0.02)
