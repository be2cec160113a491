"""LossLandscape: the training loss over two coefficients (original units), with the optimizer's path on it, drawn at
the end of a fit; what the figure shows (a slice through the optimum for three coefficients, the optimum with weight
decay): docs/how-it-works.md. The surface is fitquad.theory.surface's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from fitquad.callbacks.parameter_path import ParameterPath
from fitquad.callbacks.summary import run_folder, say
from fitquad.checks.limits import check_landscape_grid
from fitquad.core.model import polynomial_basis
from fitquad.theory import reference
from fitquad.theory.surface import SURFACE_POINTS, Landscape, build_landscape, choose_axes, path_extent

if TYPE_CHECKING:  # matplotlib is imported only when a figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.contour import QuadContourSet
    from matplotlib.figure import Figure


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
        from fitquad.callbacks import figures  # matplotlib only when drawing

        super().on_train_end(trainer, pl_module)
        if len(self.rows) == 0 or not trainer.is_global_zero:
            return
        landscape = self.landscape(trainer, pl_module)
        figure = self.draw(landscape, pl_module)
        folder = run_folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        image = figures.save_png(figure, folder / "loss_landscape.png")  # drawn once, for the file and TensorBoard
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("landscape/loss_surface", image, trainer.global_step, dataformats="HWC")
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

        figure = Figure(figsize=(6.4, 5.2), dpi=120, layout="constrained")
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
