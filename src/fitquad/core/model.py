"""The parametric model: a polynomial of configurable degree in one input, with its own feature scaling.

    y_hat = bias + Σ_k weight_k · z^k,   z = (x − shift) / scale,   k = 1..degree

It is a `torch.nn.Linear(degree, 1)` over the features z, z², …, so degree 1 with no scaling is exactly
the SGD article's single neuron `torch.nn.Linear(1, 1)` (same parameters, same arithmetic, same bits).

Feature scaling belongs to the model, not the data: `standardize` sets shift and scale to the
training x's mean and standard deviation, which turns the badly conditioned raw problem (κ ≈ 2·10⁵ on
t = 0..19) into an easy one. `whiten` goes further: the features become polynomials in z that are
centred and orthonormal on the training set (mean 0, mean square 1, uncorrelated), so the MSE
Hessian is 2·I and full-batch gradient descent with lr = 0.5 lands on the optimum in one step.
Whatever the scaling, `coefficients()` reports the polynomial in the original units
of x: c0 + c1·x + c2·x² + … (for degree 2 that is c, b, a).
"""

from __future__ import annotations

import warnings
from math import comb
from typing import Literal

import torch
from torch import nn

from . import InvalidInput

FeatureScaling = Literal["none", "standardize", "whiten"]

# Points per chunk when fitting the scaling to millions of points: float64 temporaries of one chunk, not of all.
SCALING_CHUNK = 1 << 18


def coefficient_names(degree: int) -> list[str]:
    """Names of the coefficients of x⁰, x¹, …: the article's (b, w) for a line, (c, b, a) for the quadratic."""
    if degree == 1:
        return ["b", "w"]
    if degree == 2:
        return ["c", "b", "a"]
    return [f"c{k}" for k in range(degree + 1)]


def polynomial_basis(x: torch.Tensor, degree: int) -> torch.Tensor:
    """The (n, degree + 1) matrix [1, x, x², …] in original units, float64: predictions = basis @ coefficients."""
    return torch.stack([x.double() ** k for k in range(degree + 1)], dim=-1)


def evaluate_polynomial(coefficients: torch.Tensor | list[float], x: torch.Tensor) -> torch.Tensor:
    """c0 + c1·x + c2·x² + … at x, float64, from original-unit coefficients (c0 first)."""
    coefficients = torch.as_tensor(coefficients, dtype=torch.float64)
    return polynomial_basis(x, len(coefficients) - 1) @ coefficients


class PolynomialModel(nn.Module):
    def __init__(self, degree: int = 2, feature_scaling: FeatureScaling = "none") -> None:
        super().__init__()
        self.degree = degree
        self.feature_scaling = feature_scaling
        with warnings.catch_warnings():  # degree 0 has no weights: torch warns that initialising them is a no-op
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
            self.linear = nn.Linear(degree, 1)
        # Buffers, so that a checkpoint carries the scaling the parameters were trained under. Kept in
        # float64 and cast where used: the scaling is fitted before Lightning converts the model for
        # 64-true precision, and a float32 copy would leave a float64 run badly whitened.
        float64 = torch.float64
        self.register_buffer("shift", torch.tensor(0.0, dtype=float64))
        self.register_buffer("scale", torch.tensor(1.0, dtype=float64))
        # whiten only: features = (powers of z − feature_mean) @ whitening.
        self.register_buffer("feature_mean", torch.zeros(degree, dtype=float64))
        self.register_buffer("whitening", torch.eye(degree, dtype=float64))

    def fit_feature_scaling(self, train_x: torch.Tensor) -> None:
        """Set the scaling from the training inputs (no-op for feature_scaling='none'), in float64: in one piece up
        to SCALING_CHUNK points, beyond that a chunk at a time (no float64 copy of millions of points)."""
        if self.feature_scaling == "none":
            return
        n, chunks = len(train_x), train_x.split(SCALING_CHUNK)
        if len(chunks) == 1:
            shift, scale = train_x.double().mean().item(), train_x.double().std(correction=0).item()
        else:
            shift = sum(part.double().sum().item() for part in chunks) / n
            scale = (sum((part.double() - shift).square().sum().item() for part in chunks) / n) ** 0.5
        self.shift.fill_(shift)
        self.scale.fill_(scale or 1.0)  # a constant x (std 0) keeps scale 1 rather than dividing by zero
        if self.feature_scaling == "whiten" and self.degree > 0:
            self._fit_whitening(train_x)

    def _fit_whitening(self, train_x: torch.Tensor) -> None:
        # QR of the centred powers P − mean = Q·R: Q·√n has orthonormal columns of mean square 1, so whitening is
        # R⁻¹·√n. Beyond one chunk R is built up a chunk at a time (the R of [R so far; next chunk] is the R of all
        # the rows so far, as stable as one QR of everything).
        n, chunks = len(train_x), train_x.split(SCALING_CHUNK)
        if len(chunks) == 1:
            powers = self.features_unwhitened(train_x.double())
            mean = powers.mean(dim=0)
            r = torch.linalg.qr(powers - mean).R
        else:
            mean = sum(self.features_unwhitened(part.double()).sum(dim=0) for part in chunks) / n
            r = torch.zeros(0, self.degree, dtype=torch.float64)
            for part in chunks:
                r = torch.linalg.qr(torch.cat([r, self.features_unwhitened(part.double()) - mean]), mode="r").R
        distinct = len(torch.unique(chunks[0]))  # the first chunk often settles it without sorting all the points
        if distinct <= self.degree and len(chunks) > 1:
            distinct = len(torch.unique(train_x))
        if distinct <= self.degree or not (r.diagonal().abs() > 0).all():  # the powers are linearly dependent
            raise InvalidInput(
                f"model.feature_scaling whiten needs at least model.degree + 1 = {self.degree + 1} distinct "
                f"training x values, and the training data has {distinct}: use standardize, a lower degree, "
                "or x spread wider"
            )
        # A QR fixes R only up to the sign of each row, and LAPACK's signs depend on how the rows were split: R with
        # a positive diagonal (the unique one) gives the same start from init_seed however the points are chunked.
        r = torch.where(r.diagonal() < 0, -1.0, 1.0).to(r.dtype).unsqueeze(-1) * r
        self.feature_mean.copy_(mean)
        self.whitening.copy_(torch.linalg.inv(r) * n**0.5)

    def features_unwhitened(self, x: torch.Tensor) -> torch.Tensor:
        """The (n, degree) powers z, z², …, z^degree, z = (x − shift)/scale, in x's dtype."""
        z = x if self.feature_scaling == "none" else (x - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        if self.degree == 0:  # a constant model has no features, only its bias
            return z.unsqueeze(-1)[..., :0]
        return torch.stack([z**k for k in range(1, self.degree + 1)], dim=-1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The (n, degree) matrix the linear layer sees: the powers of z, whitened under feature_scaling whiten."""
        powers = self.features_unwhitened(x)
        if self.feature_scaling == "whiten":
            return (powers - self.feature_mean.to(x.dtype)) @ self.whitening.to(x.dtype)
        return powers

    def forward_features(self, features: torch.Tensor) -> torch.Tensor:
        """Predictions from precomputed features: the training loop computes them once per batch."""
        return self.linear(features).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(self.features(x))

    def _basis_change(self) -> torch.Tensor:
        """Matrix M (float64) with original-unit coefficients = M @ [bias, weight_1, …, weight_d].

        Two steps. Model parameters to coefficients of 1, z, …, z^d: the identity, except under
        whiten, where bias + θ·((p − m) @ W) = (bias − m·Wθ) + (Wθ)·p. Then z = (x − s)/σ expanded by
        the binomial theorem: the coefficient of x^j in z^k is C(k, j)·(−s)^(k−j)/σ^k.
        """
        s, sigma = self.shift.double().item(), self.scale.double().item()
        d = self.degree
        z_to_x = torch.zeros(d + 1, d + 1, dtype=torch.float64)
        for k in range(d + 1):
            for j in range(k + 1):
                z_to_x[j, k] = comb(k, j) * (-s) ** (k - j) / sigma**k
        params_to_z = torch.eye(d + 1, dtype=torch.float64)
        if self.feature_scaling == "whiten" and d > 0:
            whitening = self.whitening.double()
            params_to_z[1:, 1:] = whitening
            params_to_z[0, 1:] = -self.feature_mean.double() @ whitening
        return z_to_x @ params_to_z

    def model_parameters(self) -> torch.Tensor:
        """[bias, weight_1, …, weight_d] in the model's own (scaled) units, float64."""
        return torch.cat([self.linear.bias.detach().double(), self.linear.weight.detach().double().flatten()])

    def coefficients(self) -> torch.Tensor:
        """[c0, c1, …, c_degree] of the fitted polynomial in the original units of x, float64."""
        return self.coefficients_of(self.model_parameters())

    def coefficients_of(self, parameters: torch.Tensor) -> torch.Tensor:
        """Original-unit coefficients of parameter vectors [bias, weight_1, …, weight_d], float64.

        `parameters` is one vector or a matrix with one vector per row (e.g. a recorded optimizer path);
        the current feature scaling is applied to all of them.
        """
        return parameters.double().cpu() @ self._basis_change().T

    @torch.no_grad()
    def set_coefficients(self, coefficients: list[float] | torch.Tensor) -> None:
        """Set the parameters so that the polynomial has these original-unit coefficients (c0 first)."""
        target = torch.as_tensor(coefficients, dtype=torch.float64)
        if target.shape != (self.degree + 1,):
            raise ValueError(
                f"model.init_coefficients needs {self.degree + 1} values (c0 first); got {target.tolist()}"
            )
        theta = torch.linalg.solve(self._basis_change(), target)
        self.linear.bias.copy_(theta[:1])
        self.linear.weight.copy_(theta[1:].view(1, -1))
