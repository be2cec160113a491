"""The polynomial model: its arithmetic, its feature scalings and its original-unit coefficients."""

import numpy as np
import pytest
import torch

from fitquad.core.model import PolynomialModel, coefficient_names


def test_degree_one_without_scaling_is_the_articles_linear_neuron():
    x = torch.randn(50)
    reference = torch.nn.Linear(1, 1)
    model = PolynomialModel(degree=1)
    model.linear.load_state_dict(reference.state_dict())
    assert torch.equal(model(x), reference(x.unsqueeze(1)).squeeze(1))


@pytest.mark.parametrize("scaling", ["none", "standardize", "whiten"])
@pytest.mark.parametrize("degree", [0, 1, 2, 5])
def test_coefficients_in_original_units(scaling, degree):
    # float64 throughout, so the check is of the algebra, not of float32 rounding.
    x = torch.linspace(0.0, 19.0, 20, dtype=torch.float64)
    model = PolynomialModel(degree, scaling).double()
    model.fit_feature_scaling(x)
    target = torch.randn(degree + 1, dtype=torch.float64)
    model.set_coefficients(target)
    torch.testing.assert_close(model.coefficients(), target, rtol=1e-9, atol=1e-9)
    # The model's own prediction is the polynomial with those coefficients.
    expected = np.polynomial.polynomial.polyval(x.numpy(), target.numpy())
    torch.testing.assert_close(model(x), torch.from_numpy(expected), rtol=1e-9, atol=1e-7)


def test_standardize_and_whiten_condition_the_features():
    x = torch.linspace(0.0, 19.0, 20, dtype=torch.float64)
    for scaling, worst_condition in (("none", 1e4), ("standardize", 20.0), ("whiten", 1.0 + 1e-9)):
        model = PolynomialModel(2, scaling).double()
        model.fit_feature_scaling(x)
        design = torch.cat([torch.ones(20, 1, dtype=torch.float64), model.features(x)], dim=1)
        condition = torch.linalg.cond(design.T @ design / 20).item()
        assert (condition > worst_condition) if scaling == "none" else (condition <= worst_condition)
    # Whitened features: mean 0, mean square 1, uncorrelated on the training set.
    model = PolynomialModel(4, "whiten").double()
    model.fit_feature_scaling(x)
    features = model.features(x)
    torch.testing.assert_close(features.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(features.T @ features / 20, torch.eye(4, dtype=torch.float64), atol=1e-9, rtol=0)


def test_coefficient_names():
    assert coefficient_names(1) == ["b", "w"]
    assert coefficient_names(2) == ["c", "b", "a"]
    assert coefficient_names(3) == ["c0", "c1", "c2", "c3"]


def test_wrong_number_of_initial_coefficients_is_refused():
    with pytest.raises(ValueError, match="init_coefficients needs 3 values"):
        PolynomialModel(2).set_coefficients([1.0, 2.0])
