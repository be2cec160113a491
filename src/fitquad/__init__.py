"""fitquad: fit a noisy quadratic by (stochastic) gradient descent with PyTorch Lightning."""

from fitquad.data import QuadraticDataModule
from fitquad.model import PolynomialModel
from fitquad.training import QuadraticRegression

__all__ = ["PolynomialModel", "QuadraticDataModule", "QuadraticRegression"]
