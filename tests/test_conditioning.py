"""Conditioning: the Hessian against numpy, the largest stable lr against real runs on either side of it,
and the predicted steps to 1% against the steps a real run takes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import fit_in_process, lesson3_data, recorded_losses, scaled_model
from fitquad.core.data import QuadraticDataModule
from fitquad.core.fused import FusedQuadraticRegression
from fitquad.core.module import QuadraticRegression, TrainingDiverged
from fitquad.theory.conditioning import OptimizerSettings, conditioning, contraction_factors, predicted_steps_to_gap
from fitquad.theory.reference import optimum


def test_hessian_eigenvalues_are_numpys_for_raw_t() -> None:
    data = lesson3_data()
    model = scaled_model(2, "none", data.train_x)
    result = conditioning(model, data.train_x, nn.MSELoss(), OptimizerSettings(lr=1e-5))
    t = data.train_x.double().numpy()
    vandermonde = np.vander(t, 3, increasing=True)
    expected = np.linalg.eigvalsh(2 * vandermonde.T @ vandermonde / len(t))
    np.testing.assert_allclose(result.eigenvalues.numpy(), expected, rtol=1e-9)
    assert result.condition_number == pytest.approx(expected[-1] / expected[0], rel=1e-9)
    assert 1e5 < result.condition_number < 1e6  # the lesson's κ ≈ 2·10⁵
    assert result.largest_stable_lr_gd == pytest.approx(2 / expected[-1])


def test_whitened_features_have_identity_conditioning() -> None:
    data = lesson3_data()
    result = conditioning(
        scaled_model(2, "whiten", data.train_x), data.train_x, nn.MSELoss(), OptimizerSettings(lr=0.5)
    )
    np.testing.assert_allclose(result.eigenvalues.numpy(), 2.0, rtol=1e-5)


@pytest.mark.parametrize(
    "momentum, dampening, nesterov",
    [(0.0, 0.0, False), (0.9, 0.0, False), (0.5, 0.3, False), (0.9, 0.0, True)],
)
def test_stability_rule_is_where_the_contraction_factor_crosses_one(momentum, dampening, nesterov) -> None:
    data = lesson3_data()
    model = scaled_model(2, "standardize", data.train_x)
    settings = OptimizerSettings(lr=0.1, momentum=momentum, dampening=dampening, nesterov=nesterov)
    result = conditioning(model, data.train_x, nn.MSELoss(), settings)
    limit, lambda_max = result.largest_stable_lr, result.eigenvalues[-1:]
    for factor, stable in ((0.99, True), (1.01, False)):
        settings.lr = factor * limit
        assert (contraction_factors(lambda_max, settings).item() < 1) == stable


def lesson3_module(steps: int = 100, **model_options) -> tuple[QuadraticRegression, QuadraticDataModule]:
    """Lesson 3 by the fused module, `steps` optimizer steps per training_step and per epoch (thousands of steps)."""
    datamodule = lesson3_data()
    datamodule.hparams.update(steps_per_epoch=steps)
    options = dict(feature_scaling="standardize", init_seed=0)
    options.update(model_options)
    return FusedQuadraticRegression(fused_steps=steps, **options), datamodule


@pytest.mark.parametrize(
    "momentum, dampening, nesterov",
    [(0.0, 0.0, False), (0.9, 0.0, False), (0.5, 0.5, False), (0.9, 0.0, True)],
    ids=["gd", "momentum", "dampening", "nesterov"],
)
def test_largest_stable_lr_separates_real_runs_that_converge_from_runs_that_diverge(
    tmp_path, momentum, dampening, nesterov
) -> None:
    data = lesson3_data()
    settings = OptimizerSettings(lr=0.1, momentum=momentum, dampening=dampening, nesterov=nesterov)
    model = scaled_model(2, "standardize", data.train_x)
    limit = conditioning(model, data.train_x, nn.MSELoss(), settings).largest_stable_lr
    best = optimum(model, data.train_x, data.train_y, nn.MSELoss()).train_loss
    options = dict(momentum=momentum, dampening=dampening, nesterov=nesterov)

    module, datamodule = lesson3_module(lr=0.95 * limit, **options)
    fit_in_process(module, datamodule, tmp_path, max_steps=3000)
    with torch.no_grad():
        train_mse = nn.functional.mse_loss(module(datamodule.train_x), datamodule.train_y).item()
    assert train_mse == pytest.approx(best, rel=1e-4)

    module, datamodule = lesson3_module(lr=1.05 * limit, **options)
    with pytest.raises(TrainingDiverged):
        fit_in_process(module, datamodule, tmp_path, max_steps=3000)


@pytest.mark.parametrize("scaling, lr", [("standardize", 0.35), ("standardize", 0.1), ("whiten", 0.5)])
def test_predicted_steps_to_one_percent_are_the_steps_a_float64_run_takes(tmp_path, scaling, lr) -> None:
    # Start from the zero polynomial, θ = 0 in model units whatever the scaling.
    module, datamodule = lesson3_module(300, feature_scaling=scaling, lr=lr, init_coefficients=[0.0, 0.0, 0.0])
    trainer = fit_in_process(module, datamodule, tmp_path, max_steps=300, precision="64-true")
    model = scaled_model(2, scaling, datamodule.train_x)
    reference = optimum(model, datamodule.train_x, datamodule.train_y, nn.MSELoss())
    settings = OptimizerSettings(lr=lr)
    predicted = predicted_steps_to_gap(
        conditioning(model, datamodule.train_x, nn.MSELoss(), settings),
        torch.zeros(3, dtype=torch.float64),
        reference.parameters,
        reference.train_loss,
        settings,
    )
    losses = recorded_losses(trainer)  # losses[k]: the loss after k updates
    actual = int(torch.nonzero((losses - reference.train_loss) / reference.train_loss <= 0.01)[0])
    assert predicted == actual
