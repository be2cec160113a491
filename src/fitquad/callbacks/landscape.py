"""The loss landscape: the training loss over a 2-D slice of parameter space, with the optimizer's path on it.

Add the callback to a fit and it draws, at the end, the training loss over the coefficients in original
units (the article's (w, b) for a line; (a, b, c) for the quadratic) with the path the optimizer took:

    fitquad fit --config configs/sgd_article.yaml          # the config already lists LossLandscape
    fitquad fit --config configs/lesson3.yaml --trainer.callbacks+=fitquad.callbacks.landscape.LossLandscape

For two coefficients the picture is the whole surface. For three it is a slice through the optimum along
two of them (by default the two whose values ranged furthest along the path), the third held at its
optimum, and the path is projected onto the slice: the figure says so. The surface is the model's own
loss module evaluated with reduction='none' on every grid point and every training point at once (one
batched tensor pass, float64), averaged over the points. Contours are log-spaced; the start, the end and
the optimum of the loss are marked. The optimum is the loss's own minimum on the training set, from
fitquad.theory.reference (closed form in float64). With weight_decay > 0 SGD minimises loss + weight_decay/2·|θ|²
instead, so its path ends beside the loss's optimum: the optimum of loss + decay is marked too.

The parameters are recorded after every optimizer step by fitquad.callbacks.parameter_path.ParameterPath, which
this callback extends.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from fitquad.callbacks.parameter_path import ParameterPath
from fitquad.callbacks.summary import run_folder, say
from fitquad.checks.limits import check_landscape_grid
from fitquad.core.losses import loss_shape
from fitquad.core.model import polynomial_basis
from fitquad.theory import reference

if TYPE_CHECKING:  # matplotlib is imported only when a figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.contour import QuadContourSet
    from matplotlib.figure import Figure

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


def draw_landscape(ax: Axes, landscape: Landscape, levels: int = 20) -> QuadContourSet:
    """Log-spaced filled contours of the surface, the path, and start / end / optimum markers on `ax`.
    Returns the contour set (for a colour bar)."""
    from matplotlib.colors import LogNorm

    surface = landscape.surface
    positive = surface[np.isfinite(surface) & (surface > 0)]
    low, high = positive.min(), positive.max()
    if landscape.optimum_loss is not None and landscape.optimum_loss > 0:
        low = min(low, landscape.optimum_loss)  # the lowest level is the optimum's loss, the lowest there is
    if high <= low * (1 + 1e-9):
        high = low * 10  # a flat surface: still one legible band
    contour_levels = np.geomspace(low, high, levels + 1)
    u, v = landscape.axis_values
    filled = ax.contourf(u, v, surface, levels=contour_levels, norm=LogNorm(low, high), cmap="viridis", extend="both")
    ax.contour(u, v, surface, levels=contour_levels, colors="white", linewidths=0.3, alpha=0.5)
    path = landscape.path
    ax.plot(path[:, 0], path[:, 1], "-", color="orange", linewidth=1.2, marker=".", markersize=2.5, label="path")
    ax.plot(*landscape.optimum, "*", color="red", markeredgecolor="black", markersize=12, label="optimum")
    if landscape.decay_optimum is not None:
        marker = dict(color="red", markeredgecolor="white", markersize=8, label="optimum of loss + decay")
        ax.plot(*landscape.decay_optimum, "X", **marker)
    ax.plot(*path[0], "o", color="white", markeredgecolor="black", markersize=7, label="start")
    ax.plot(*path[-1], "s", color="orange", markeredgecolor="black", markersize=5, label="end")
    ax.set_xlim(u[0], u[-1])
    ax.set_ylim(v[0], v[-1])
    ax.set_xlabel(landscape.names[0])
    ax.set_ylabel(landscape.names[1])
    return filled


def add_colorbar(figure: Figure, ax: Axes, filled: QuadContourSet, label: str) -> None:
    """A colour bar for log-spaced levels, with a few readable ticks."""
    ticks = filled.levels[:: max(1, len(filled.levels) // 6)]
    figure.colorbar(filled, ax=ax, label=label).set_ticks(ticks, labels=[f"{v:.3g}" for v in ticks])


def add_marker_legend(figure: Figure) -> None:
    """The path's and markers' legend under the plot(s), where it hides nothing; each label once."""
    entries = {}
    for ax in figure.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    figure.legend(entries.values(), entries.keys(), loc="outside lower center", ncols=len(entries), fontsize="small")


def figure_pixels(figure: Figure) -> np.ndarray:
    """The figure rendered by Agg as an (height, width, 3) uint8 array, for TensorBoard."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class LossLandscape(ParameterPath):
    """At the end of a fit, draws the training loss surface with the optimizer's path on it.

    Writes loss_landscape.png to the run folder and logs the same picture to TensorBoard as
    `landscape/loss_surface` (IMAGES tab).

    Args:
        resolution: Grid points along each axis (101 × 101 = 10,201 loss evaluations, one batched pass).
        margin: The grid covers the path and the optimum, widened by this fraction of their span on each side.
        parameters: Two coefficient names to draw, horizontal first (e.g. [a, b]); null: for a line (w, b),
            for more coefficients the two that ranged furthest along the path.
        extent: Fixed axis limits [horizontal low, high, vertical low, high] in original units; null: from
            the path.
        levels: Log-spaced contour levels between the lowest and the highest loss on the grid.
    """

    def __init__(
        self,
        resolution: int = 101,
        margin: float = 0.1,
        parameters: list[str] | None = None,
        extent: list[float] | None = None,
        levels: int = 20,
    ) -> None:
        check_landscape_grid(resolution, levels, owner="LossLandscape.")
        if extent is not None and len(extent) != 4:
            raise ValueError(f"landscape extent must be [x low, x high, y low, y high]; got {extent}")
        super().__init__()
        self.resolution, self.margin, self.parameters = resolution, margin, parameters
        self.extent, self.levels = extent, levels

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Checked now, not after training: a misspelt name should cost nothing.
        names = pl_module.coefficient_names
        if len(names) < 2:
            raise ValueError("the loss landscape needs at least two coefficients: model.degree must be 1 or more")
        if self.parameters is not None:
            choose_axes(torch.zeros(1, len(names)), names, self.parameters)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_train_end, before on_fit_end, where RunSummary finalises the logger.
        super().on_train_end(trainer, pl_module)
        if len(self.rows) == 0:
            return
        if not trainer.is_global_zero:
            return
        landscape = self.landscape(trainer, pl_module)
        figure = self.draw(landscape, pl_module)
        folder = run_folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        figure.savefig(folder / "loss_landscape.png", dpi=120)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(
                    "landscape/loss_surface", figure_pixels(figure), trainer.global_step, dataformats="HWC"
                )
        say(trainer, f"fitquad: loss landscape in {folder / 'loss_landscape.png'} ({landscape.projection})")

    @torch.no_grad()
    def landscape(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Landscape:
        model = pl_module.model
        path = model.coefficients_of(self.path())
        datamodule = trainer.datamodule
        train = (datamodule.train_x, datamodule.train_y, pl_module.loss_fn)
        optimum = reference.optimum(model, *train).coefficients
        weight_decay = pl_module.hparams.weight_decay
        decay_optimum = None
        if weight_decay > 0:  # where SGD with weight decay converges instead
            decay_optimum = reference.optimum(model, *train, weight_decay).coefficients
        axes = choose_axes(path, pl_module.coefficient_names, self.parameters)
        marked = [optimum] if decay_optimum is None else [optimum, decay_optimum]
        if self.extent is not None:
            extent = (tuple(self.extent[:2]), tuple(self.extent[2:]))
        else:
            extent = path_extent(path, marked, axes, self.margin)
        names = pl_module.coefficient_names
        surface_x, surface_y = datamodule.training_sample(SURFACE_POINTS)
        landscape = build_landscape(
            pl_module.loss_fn,
            polynomial_basis(surface_x, model.degree),
            surface_y.double(),
            path,
            names,
            optimum,
            axes,
            extent,
            self.resolution,
            decay_optimum,
        )
        if datamodule.train_size > SURFACE_POINTS:
            points = f"{SURFACE_POINTS:,} of {datamodule.train_size:,}"
            landscape.projection += f"; loss on {points} training points, drawn uniformly"
        return landscape

    def draw(self, landscape: Landscape, pl_module: L.LightningModule) -> Figure:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(6.4, 5.2), layout="constrained")
        ax = figure.add_subplot()
        filled = draw_landscape(ax, landscape, self.levels)
        add_colorbar(figure, ax, filled, f"training loss ({type(pl_module.loss_fn).__name__}, log scale)")
        add_marker_legend(figure)
        steps = len(landscape.path) - 1
        optimizer = describe_optimizer(pl_module.trainer.optimizers[0])
        title = f"{steps} steps of {optimizer} on the training loss\n{landscape.projection}"
        ax.set_title(title, fontsize="medium")
        return figure


def describe_optimizer(optimizer: torch.optim.Optimizer) -> str:
    """ "SGD lr 0.1, momentum 0.9, Nesterov": the optimizer and the settings that shape its path (defaults left out)."""
    group = optimizer.param_groups[0]
    parts = [f"{type(optimizer).__name__} lr {group['lr']:g}"]
    parts += [f"{name} {group[name]:g}" for name in ("momentum", "dampening", "weight_decay") if group.get(name)]
    return ", ".join(parts + (["Nesterov"] if group.get("nesterov") else []))
