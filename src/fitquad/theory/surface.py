"""The loss surface over two coefficients, with a path on it, everything in original units: what
fitquad.callbacks.landscape.LossLandscape and `fitquad compare` draw.

The surface is the model's own torch loss module with reduction='none', evaluated on every grid point and training
point in one batched float64 pass (in chunks), averaged over the points; for MSE with more than two coefficients, the
profile in closed form (`mse_profile`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fitquad.core.losses import loss_shape

# Points × grid points evaluated per chunk of the surface: about 32 MiB of float64, so 101×101 on
# thousands of points still fits in memory; the article's 50 points take a single pass.
SURFACE_CHUNK_ELEMENTS = 2**22


# The surface is evaluated on at most this many training points: a 101×101 grid over 10⁷ points would
# be 10¹¹ loss terms. The points are i.i.d. draws, so the leading ones give an unbiased picture; the
# figure says when it is a sample. (The optimum marked on it is always computed on every point.)
SURFACE_POINTS = 20_000


def per_point_loss(loss_fn: nn.Module) -> nn.Module:
    """A copy of one of torch's loss modules that returns the loss of every element (reduction='none')."""
    unreduced = copy.copy(loss_fn)
    unreduced.reduction = "none"
    return unreduced


def loss_at(loss_fn: nn.Module, basis: torch.Tensor, y: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """The loss (mean over the points, as training computes it) at each row of `coefficients`, float64.

    One batched pass: predictions for all rows and all points at once, in chunks of rows bounded by
    SURFACE_CHUNK_ELEMENTS so that a fine grid on many points does not run out of memory.
    """
    unreduced = per_point_loss(loss_fn)
    y = y.double()
    rows_per_chunk = max(1, SURFACE_CHUNK_ELEMENTS // max(1, len(y)))
    losses = []
    for chunk in coefficients.double().split(rows_per_chunk):
        predictions = chunk @ basis.T  # (rows, points)
        losses.append(unreduced(predictions, y.expand_as(predictions)).mean(dim=-1))
    return torch.cat(losses)


@dataclass
class Landscape:
    """A loss surface over two coefficients and a path on it, everything in original units."""

    names: tuple[str, str]  # the coefficients on the horizontal and vertical axes
    axis_values: tuple[np.ndarray, np.ndarray]  # grid coordinates along each axis
    surface: np.ndarray  # loss[vertical index, horizontal index]
    path: np.ndarray  # (steps + 1, 2): the path's coordinates on the two axes
    optimum: np.ndarray  # (2,)
    decay_optimum: np.ndarray | None  # (2,): the optimum of loss + weight decay, where SGD then converges
    projection: str  # what the picture is: the whole surface, or which slice
    optimum_loss: float | None = None  # the loss at the optimum: the lowest contour level, not the grid's minimum


def path_extent(
    path: torch.Tensor, marked: list[torch.Tensor], axes: tuple[int, int], margin: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(low, high) along each of the two axes covering every finite point of the path and the marked points,
    widened by `margin` × the span on each side."""
    extent = []
    for i in axes:
        values = torch.cat([path[:, i].double()] + [m[i : i + 1].double() for m in marked])
        values = values[torch.isfinite(values)]
        low, high = values.min().item(), values.max().item()
        pad = margin * (high - low) or margin * max(abs(low), 1.0)  # a point: some room around it
        extent.append((low - pad, high + pad))
    return tuple(extent)


def choose_axes(path: torch.Tensor, names: list[str], chosen: list[str] | None) -> tuple[int, int]:
    """Indices (horizontal, vertical) of the two coefficients to draw: the chosen names, or the two whose
    values ranged furthest along the path; the higher power goes on the horizontal axis (w before b)."""
    if len(names) == 2 and chosen is None:
        return 1, 0
    if chosen is not None:
        unknown = [name for name in chosen if name not in names]
        if len(chosen) != 2 or unknown or chosen[0] == chosen[1]:
            raise ValueError(f"landscape parameters must be two different names among {names}; got {chosen}")
        return names.index(chosen[0]), names.index(chosen[1])
    finite = path[torch.isfinite(path).all(dim=1)]
    ranges = finite.max(dim=0).values - finite.min(dim=0).values
    first, second = sorted(ranges.topk(2).indices.tolist(), reverse=True)
    return first, second


def build_landscape(
    loss_fn: nn.Module,
    basis: torch.Tensor,
    y: torch.Tensor,
    path: torch.Tensor,
    names: list[str],
    optimum: torch.Tensor,
    axes: tuple[int, int],
    extent: tuple[tuple[float, float], tuple[float, float]],
    resolution: int,
    decay_optimum: torch.Tensor | None = None,
) -> Landscape:
    """The loss over a resolution × resolution grid of the two `axes` coefficients within `extent`; the path
    (original-unit coefficients, one row per step) projected onto those two.

    With more than two coefficients, what a flat picture can honestly show depends on the loss. For MSE it is
    the profile: at each point the loss with the other coefficients at their best for it (closed form), the
    lowest loss any path through that point can have, so the path's projection never sits below its contour.
    For the other losses (no closed form per point) it is the slice through the optimum, which the path
    only reaches at its end; the title says which."""
    across, up = axes
    u = torch.linspace(*extent[0], resolution, dtype=torch.float64)
    v = torch.linspace(*extent[1], resolution, dtype=torch.float64)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    held = [i for i in range(len(names)) if i not in axes]
    pair = f"({names[across]}, {names[up]})"
    shape = loss_shape(loss_fn)
    if held and shape.quadratic:  # the loss is the MSE/(2·scale): its profile is the MSE's, scaled
        surface = mse_profile(basis.double(), y.double(), across, up, held, uu, vv) / (2 * shape.scale)
        others = ", ".join(names[i] for i in held)
        best = "its best" if len(held) == 1 else "their best"
        projection = f"profile over {pair}: at each point the MSE with {others} at {best}; path projected"
    else:
        grid = optimum.double().repeat(resolution * resolution, 1)
        grid[:, across], grid[:, up] = uu.reshape(-1), vv.reshape(-1)
        surface = loss_at(loss_fn, basis, y, grid).view(resolution, resolution)
        fixed = ", ".join(f"{names[i]} = {optimum[i].item():.4g}" for i in held)
        projection = f"slice through the optimum at {fixed}; path projected onto {pair}" if held else ""
        projection = projection or f"whole surface over {pair}"
    return Landscape(
        names=(names[across], names[up]),
        axis_values=(u.numpy(), v.numpy()),
        surface=surface.numpy(),
        path=path[:, [across, up]].double().numpy(),
        optimum=optimum[[across, up]].double().numpy(),
        decay_optimum=None if decay_optimum is None else decay_optimum[[across, up]].double().numpy(),
        projection=projection,
        optimum_loss=loss_at(loss_fn, basis, y, optimum.double().unsqueeze(0)).item(),
    )


def mse_profile(
    basis: torch.Tensor, y: torch.Tensor, across: int, up: int, held: list[int], uu: torch.Tensor, vv: torch.Tensor
) -> torch.Tensor:
    """min over the held coefficients of the MSE, at each (uu, vv): with P the projection off the held columns'
    span, the residual is P(y − u·a_u − v·a_v), a quadratic in (u, v) evaluated from five inner products."""
    held_columns = basis[:, held]
    coefficients = torch.linalg.lstsq(held_columns, torch.stack([y, basis[:, across], basis[:, up]], dim=1)).solution
    r_y, r_u, r_v = (torch.stack([y, basis[:, across], basis[:, up]], dim=1) - held_columns @ coefficients).T
    n = len(y)
    return (
        r_y @ r_y - 2 * uu * (r_u @ r_y) - 2 * vv * (r_v @ r_y)
        + uu**2 * (r_u @ r_u) + 2 * uu * vv * (r_u @ r_v) + vv**2 * (r_v @ r_v)
    ) / n  # fmt: skip
