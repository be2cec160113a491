"""Float64 passes over the training points, a chunk at a time beyond CHUNK_POINTS of them: the design matrix
A = [1, features(x)] of the polynomial model (its predictions are A·θ), and the model's loss on all the points.

Up to CHUNK_POINTS points a pass is one dense computation, exactly as before streaming existed; beyond, float64 rows
of A exist one chunk at a time, so millions of points cost no float64 copy of the data (benchmarks/README.md, "Many
points"). Every pass here and in streamed_optimum reads CHUNK_POINTS at call time: tests shrink it in one place.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from fitquad.core.model import PolynomialModel


def float64_copy(model: PolynomialModel) -> PolynomialModel:
    """A float64 copy of the model on the CPU (same scaling buffers), so nothing below rounds to float32."""
    # A new model loaded with the state, not copy.deepcopy, which is far slower: sweeps copy thousands of models.
    copied = PolynomialModel(model.degree, model.feature_scaling).to(torch.float64)
    copied.load_state_dict(model.state_dict())
    return copied


def with_parameters(model: PolynomialModel, theta: torch.Tensor) -> PolynomialModel:
    """A float64 copy of the model (same scaling) with parameters θ."""
    copied = float64_copy(model)
    with torch.no_grad():
        copied.linear.bias.copy_(theta[:1])
        copied.linear.weight.copy_(theta[1:].view(1, -1))
    return copied


def design_matrix(model: PolynomialModel, x: torch.Tensor) -> torch.Tensor:
    """A = [1, features(x)] in float64, so that the model's predictions are A @ model.model_parameters()."""
    with torch.no_grad():
        features = float64_copy(model).features(x.detach().cpu().double())
    return torch.cat([torch.ones(len(x), 1, dtype=torch.float64), features], dim=1)


# Points per chunk: float64 temporaries of at most CHUNK_POINTS × (degree + 1) numbers.
CHUNK_POINTS = 1 << 18


def in_one_piece(x: torch.Tensor) -> bool:
    """Whether a pass over x is one dense computation: at most CHUNK_POINTS points."""
    return len(x) <= CHUNK_POINTS


Chunk = tuple[torch.Tensor, torch.Tensor | None]


def design_chunks(model: PolynomialModel, x: torch.Tensor, y: torch.Tensor | None = None) -> Iterator[Chunk]:
    """(A, y) of CHUNK_POINTS consecutive points at a time, float64 on the CPU (A as design_matrix makes it; y None
    without targets)."""
    model64 = float64_copy(model)
    chunk = CHUNK_POINTS
    y_parts = y.split(chunk) if y is not None else [None] * math.ceil(len(x) / chunk)
    with torch.no_grad():
        for x_part, y_part in zip(x.split(chunk), y_parts, strict=True):
            features = model64.features(x_part.detach().cpu().double())
            ones = torch.ones(len(x_part), 1, dtype=torch.float64)
            yield torch.cat([ones, features], dim=1), None if y_part is None else y_part.detach().cpu().double()


def evaluate(model: PolynomialModel, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module) -> tuple[float, float]:
    """(loss, MSE) of the model (its own dtype and parameters, or float64 for float64_copy's) on the points,
    computed a chunk at a time; in one piece exactly loss_fn(model(x), y) and mse_loss."""
    dtype, device = next(model.parameters()).dtype, next(model.parameters()).device
    loss = squares = 0.0
    chunk = CHUNK_POINTS
    with torch.no_grad():
        for x_part, y_part in zip(x.split(chunk), y.split(chunk), strict=True):
            x_part, y_part = x_part.to(device, dtype), y_part.to(device, dtype)
            prediction = model(x_part)
            if in_one_piece(x):  # torch's own means, exactly
                return loss_fn(prediction, y_part).item(), nn.functional.mse_loss(prediction, y_part).item()
            loss += loss_fn(prediction, y_part).item() * len(x_part)
            squares += (prediction - y_part).double().square().sum().item()  # summed in float64 across chunks
    return loss / len(x), squares / len(x)
