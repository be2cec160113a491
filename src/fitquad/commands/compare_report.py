"""`fitquad compare`'s results: compare.csv and compare.md, a row per loss × setting (final loss and coefficients,
the loss's optimum, the steps to within 1% of it, and why a run diverged, if one did), and compare.png, the grid of
loss landscapes."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fitquad.callbacks.landscape import add_colorbar, add_marker_legend, draw_landscape
from fitquad.core.losses import make_loss
from fitquad.theory.surface import build_landscape, choose_axes, path_extent

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from fitquad.commands.compare_grid import RunResult


def write_tables(results: list[RunResult], names: list[str], folder: Path, interrupted: str = "") -> str:
    """compare.csv and compare.md; returns the Markdown table. `interrupted` says what stopped the grid short (at the
    top of compare.md)."""
    csv_header = ["loss", "setting", "lr", "momentum", "dampening", "nesterov", "weight_decay", "final_loss"]
    csv_header += [f"final_{n}" for n in names] + ["optimum_loss"] + [f"optimum_{n}" for n in names]
    csv_header += ["steps_to_within_1pct", "diverged"]
    csv_rows = [csv_header]
    shown = list(reversed(names))  # w before b, a before b before c
    md_header = ["loss", "setting", "final loss", *[f"final {n}" for n in shown], "optimum loss", "steps to within 1%"]
    md_lines = [f"**{interrupted}**\n"] if interrupted else []
    md_lines += ["| " + " | ".join(md_header) + " |", "|" + "---|" * len(md_header)]
    for r in results:
        s, steps = r.setting, r.steps_to_within
        final = r.path[-1].tolist()
        row = [r.loss, s.name, "" if s.lr is None else s.lr, s.momentum, s.dampening, s.nesterov, s.weight_decay]
        row += [repr(r.path_loss[-1].item()), *map(repr, final), repr(r.optimum_loss)]
        row += [*map(repr, r.optimum.tolist()), "" if steps is None or r.diverged else steps, r.diverged or ""]
        csv_rows.append(row)
        final_shown = [f"{final[names.index(n)]:.4f}" for n in shown]
        md_row = [r.loss, s.name, f"{r.path_loss[-1].item():.4f}", *final_shown, f"{r.optimum_loss:.4f}"]
        md_row.append("diverged (below)" if r.diverged else "never" if steps is None else str(steps))
        md_lines.append("| " + " | ".join(md_row) + " |")
    md_lines += [f"\n{r.loss}, {r.setting.name}: {r.diverged}" for r in results if r.diverged]
    with (folder / "compare.csv").open("w", newline="") as file:  # csv quotes a name with a comma or a quote in it
        csv.writer(file, lineterminator="\n").writerows(csv_rows)
    markdown = "\n".join(md_lines) + "\n"
    (folder / "compare.md").write_text(markdown)
    return markdown


def draw_grid(config, results: list[RunResult], names: list[str], basis: torch.Tensor, y: torch.Tensor) -> Figure:
    """Small multiples: a panel per loss (row) and setting (column), shared axes, each on its loss's surface."""
    from matplotlib.figure import Figure

    all_paths = torch.cat([r.path for r in results])
    axes = choose_axes(all_paths, names, config.parameters)
    marked = [r.optimum for r in results] + [r.decay_optimum for r in results if r.decay_optimum is not None]
    extent = path_extent(all_paths, marked, axes, config.margin)
    rows, columns = len(config.losses), len(config.settings)
    figure = Figure(figsize=(2.9 * columns, 2.7 * rows + 0.9), layout="constrained")
    panels = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    projection = ""
    for index, (result, ax) in enumerate(zip(results, panels.flat, strict=True)):
        loss_fn = make_loss(result.loss, config.model.huber_delta, config.model.smooth_l1_beta)
        landscape = build_landscape(
            loss_fn, basis, y, result.path, names, result.optimum, axes, extent, config.resolution, result.decay_optimum
        )
        projection = landscape.projection.replace("the optimum", "each loss's optimum")
        filled = draw_landscape(ax, landscape, config.levels)
        row, column = divmod(index, columns)
        if column == columns - 1:  # a row's panels share a loss, its surface and its levels: one colour bar
            add_colorbar(figure, panels[row].tolist(), filled, f"{result.loss} loss")
        steps = result.steps_to_within
        arrived = f"from step {steps} on" if steps is not None else "not at the end"
        note = f"final {result.path_loss[-1].item():.4g}\nwithin 1%: {arrived}"
        if result.diverged:
            note = f"diverged\nlast good loss {result.path_loss[-1].item():.4g}"
        ax.text(0.03, 0.97, note, transform=ax.transAxes, va="top", fontsize="x-small", color="white")
        ax.label_outer()
    for ax, setting in zip(panels[0], config.settings, strict=True):
        ax.set_title(setting.name, fontsize="small")
    for ax, loss in zip(panels[:, 0], config.losses, strict=True):
        ax.set_ylabel(f"{loss}\n{ax.get_ylabel()}")
    lr = config.model.lr
    figure.suptitle(
        f"Training loss (row) under SGD settings (column), {config.max_steps} steps, lr {lr:g} unless named; "
        f"log-spaced contours, one colour scale per row (loss)\n{projection}",
        fontsize="medium",
    )
    add_marker_legend(figure)
    return figure
