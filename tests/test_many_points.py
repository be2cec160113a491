"""Many points in little memory: the data drawn in chunks and the float64 passes (closed-form reference,
conditioning, loss resolution, evaluation) streamed in chunks give today's numbers. The chunk sizes are made
small here, so that a few thousand points take the streamed paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import fitquad.core.data
import fitquad.theory.passes
import fitquad.theory.reference
import fitquad.theory.streamed_optimum
from fitquad.checks.validation import InvalidInput
from fitquad.core.data import draw_quadratic
from fitquad.core.model import PolynomialModel
from fitquad.theory.conditioning import OptimizerSettings, conditioning
from fitquad.theory.passes import evaluate, float64_copy
from fitquad.theory.reference import loss_resolution, optimum


def whole_array_draw(rng, n, a, b, c, noise, distribution, low, high, mean, std):
    """The article's own order of operations on whole arrays: the reference the chunked draw must equal."""
    if distribution == "grid":
        x = np.linspace(low, high, n).astype(np.float32)
    elif distribution == "uniform":
        x = rng.uniform(low, high, n).astype(np.float32)
    else:
        x = (mean + std * rng.randn(n)).astype(np.float32)
    return x, (a * x**2 + b * x + c + noise * rng.randn(n)).astype(np.float32)


@pytest.mark.parametrize("distribution", ["grid", "uniform", "normal"])
def test_drawing_in_chunks_gives_the_same_points_bit_for_bit(monkeypatch, distribution):
    monkeypatch.setattr(fitquad.core.data, "DRAW_CHUNK", 1000)
    for n in (1, 999, 1000, 3507):
        args = (n, 0.75, -14.25, 68.6875, 3.0, distribution, 0.0, 19.0, 0.5, 1.5)
        chunked, whole = np.random.RandomState(20240215), np.random.RandomState(20240215)
        x, y = draw_quadratic(chunked, *args)
        expected_x, expected_y = whole_array_draw(whole, *args)
        assert x.dtype == y.dtype == np.float32
        assert np.array_equal(x, expected_x) and np.array_equal(y, expected_y), (distribution, n)
        assert np.array_equal(chunked.randn(4), whole.randn(4))  # the stream goes on where it would have


@pytest.fixture
def many_points():
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(5000, generator=generator) * 4 - 2
    y = 0.75 * x**2 + x + 2 + 0.3 * torch.randn(5000, generator=generator)
    return x.float(), y.float()


SETTINGS = [
    (2, "none", 0.0, nn.MSELoss()),
    (3, "standardize", 0.01, nn.MSELoss()),
    (8, "whiten", 0.0, nn.MSELoss()),
    # The robust losses' IRLS streams too: each iteration one weighted least-squares pass, then the exact step.
    (2, "standardize", 0.0, nn.HuberLoss(delta=0.2)),
    (2, "none", 0.01, nn.SmoothL1Loss(beta=0.3)),
    (2, "standardize", 0.0, nn.L1Loss()),
    (1, "none", 0.01, nn.L1Loss()),
]


@pytest.mark.parametrize("degree, scaling, weight_decay, loss_fn", SETTINGS)
def test_streamed_float64_passes_give_the_dense_numbers(
    monkeypatch, many_points, degree, scaling, weight_decay, loss_fn
):
    x, y = many_points
    model = PolynomialModel(degree, scaling)
    model.fit_feature_scaling(x)
    dense = optimum(model, x, y, loss_fn, weight_decay)
    dense_conditioning = conditioning(model, x, loss_fn, OptimizerSettings(lr=0.1, weight_decay=weight_decay))
    dense_resolution = loss_resolution(model, x, y, dense.parameters, torch.float32, l1=False)
    model64 = float64_copy(model)
    dense_evaluation = evaluate(model64, x, y, loss_fn)
    monkeypatch.setattr(fitquad.theory.passes, "CHUNK_POINTS", 700)
    streamed = optimum(model, x, y, loss_fn, weight_decay)
    torch.testing.assert_close(streamed.parameters, dense.parameters, rtol=1e-11, atol=1e-13)
    assert streamed.train_loss == pytest.approx(dense.train_loss, rel=1e-12)
    assert streamed.train_mse == pytest.approx(dense.train_mse, rel=1e-12)
    streamed_conditioning = conditioning(model, x, loss_fn, OptimizerSettings(lr=0.1, weight_decay=weight_decay))
    torch.testing.assert_close(streamed_conditioning.eigenvalues, dense_conditioning.eigenvalues, rtol=1e-11, atol=0)
    resolution = loss_resolution(model, x, y, dense.parameters, torch.float32, l1=False)
    assert resolution == pytest.approx(dense_resolution, rel=1e-12)
    assert evaluate(model64, x, y, loss_fn) == pytest.approx(dense_evaluation, rel=1e-12)


@pytest.mark.parametrize("degree", [1, 4, 8])
def test_streamed_feature_scaling_gives_the_dense_scaling(monkeypatch, many_points, degree):
    x, _ = many_points
    dense = {kind: PolynomialModel(degree, kind) for kind in ("standardize", "whiten")}
    for model in dense.values():
        model.fit_feature_scaling(x)
    monkeypatch.setattr(fitquad.theory.passes, "CHUNK_POINTS", 700)
    for kind, reference in dense.items():
        model = PolynomialModel(degree, kind)
        model.fit_feature_scaling(x)
        assert model.shift.item() == pytest.approx(reference.shift.item(), rel=1e-12, abs=1e-15)
        assert model.scale.item() == pytest.approx(reference.scale.item(), rel=1e-12)
        features, expected = float64_copy(model).features(x.double()), float64_copy(reference).features(x.double())
        if kind == "whiten":  # orthonormal on the points
            identity = torch.eye(degree, dtype=torch.float64)
            torch.testing.assert_close(features.mean(dim=0), torch.zeros_like(identity[0]), atol=1e-9, rtol=0)
            torch.testing.assert_close(features.T @ features / len(x), identity, atol=1e-8, rtol=0)
        # The same features, whiten's column signs included (R's diagonal positive either way).
        torch.testing.assert_close(features, expected, rtol=1e-8, atol=1e-8)


def test_too_few_distinct_values_are_counted_on_many_points(monkeypatch):
    monkeypatch.setattr(fitquad.theory.passes, "CHUNK_POINTS", 700)
    x = torch.tensor([0.0, 1.0, 2.0]).repeat(2000)  # 6,000 points, 3 distinct
    with pytest.raises(InvalidInput, match="training x values, and the training data has 3"):
        PolynomialModel(4, "whiten").fit_feature_scaling(x)


@pytest.mark.parametrize("noise", ["normal", "cauchy"])
def test_streamed_l1_optimum_is_exact_in_about_as_many_passes_as_huber(monkeypatch, noise):
    # The L1 optimum is a vertex of a linear program: IRLS alone creeps to it over hundreds of passes; the simplex
    # from IRLS's start gets there exactly in about as many passes as Huber's IRLS and Newton step.
    generator = np.random.RandomState(7)
    x = torch.from_numpy(generator.uniform(-2, 2, 20000).astype(np.float32))
    draw = generator.standard_cauchy if noise == "cauchy" else generator.standard_normal
    y = torch.from_numpy((0.75 * x.numpy() ** 2 + x.numpy() + 2 + 0.3 * draw(20000)).astype(np.float32))
    model = PolynomialModel(2, "standardize")
    model.fit_feature_scaling(x)
    monkeypatch.setattr(fitquad.theory.passes, "CHUNK_POINTS", 3000)
    calls = []  # one entry per pass over the data
    chunks = fitquad.theory.streamed_optimum.design_chunks
    monkeypatch.setattr(fitquad.theory.streamed_optimum, "design_chunks", lambda *a: calls.append(1) or chunks(*a))
    optimum(model, x, y, nn.HuberLoss())
    huber_passes = len(calls)
    best = optimum(model, x, y, nn.L1Loss())
    assert len(calls) - huber_passes <= 3 * huber_passes, (len(calls) - huber_passes, huber_passes)
    # Exact: convex, so no point nearby does better (probed in 2000 random directions at three distances).
    a, y64 = fitquad.theory.reference.design_matrix(model, x), y.double()
    directions = torch.randn(2000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    at_optimum = (a @ best.parameters - y64).abs().mean().item()
    for size in (1e-9, 1e-6, 1e-3):
        around = (a @ (best.parameters + size * directions).T - y64.unsqueeze(1)).abs().mean(0)
        assert around.min().item() >= at_optimum - 1e-14, size
