"""`fitquad sweep`'s results: each value's point (with draws, their mean and spread), the table (sweep.csv,
sweep.md), and the figures (fitquad.commands.sweep_figures: sweep.png, and bias_variance.png with draws)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fitquad.commands.sweep_figures import draw_bias_variance, draw_figure, validation_minimum
from fitquad.theory.bias_variance import Decomposition
from fitquad.theory.reference import training_noise_floor

# The spread of the draws drawn and tabulated: the middle 80% (the mean can lie outside it when a few draws
# are far off, as overfit models' validation errors are).
BAND_PERCENTILES = (10, 90)


@dataclass
class SweepPoint:
    value: int | float | str
    train_mse: float
    val_mse: float
    noise_floor: float  # σ² = noise_std²: the expected MSE of the true curve on fresh data; nan: unknown (a file)
    optimum_train_mse: float  # the MSE of the loss's closed-form optimum (see fitquad.theory.reference)
    optimum_val_mse: float
    gap: float  # RMS difference between the trained model's and the optimum's predictions
    optimizer_steps: int
    epochs: int
    run: str
    diverged: str | None = None  # why the run diverged (its losses are then inf or nan), if it did
    # With sweep.draws > 1 the MSEs above are means over the draws that did not diverge, and:
    draws: int = 1
    train_mse_band: tuple[float, float] | None = None  # 10th and 90th percentile over the draws
    val_mse_band: tuple[float, float] | None = None
    val_mse_median: float = math.nan  # the middle draw's: robust where one draw's MSE is heavy-tailed (overfitting)
    # The training MSE's own floor, σ²(n − p)/n: the optimum's expected training MSE (p parameters fit some noise).
    train_floor: float = math.nan
    val_mse_error: float = math.nan  # standard error of the mean validation MSE (Monte-Carlo error)
    bias_squared: float = math.nan  # fitquad.theory.bias_variance, generated data only
    variance: float = math.nan

    @classmethod
    def of_draws(
        cls, value: int | float | str, label: str, per_draw: list[dict], steps: int, epochs: int,
        noise_std: float | None, n_train: int, n_parameters: int, decomposition: Decomposition | None = None,
    ) -> SweepPoint:  # fmt: skip
        """A value's point from its draws' results (dicts of train_mse, val_mse, optimum_*, gap, diverged): the
        means over the draws that did not diverge (over all of them if every one did)."""
        kept = [d for d in per_draw if not d["diverged"]] or per_draw

        def column(name: str) -> np.ndarray:
            return np.array([d[name] for d in kept], dtype=float)

        def band(name: str) -> tuple[float, float] | None:
            return tuple(np.percentile(column(name), BAND_PERCENTILES).tolist()) if len(kept) > 1 else None

        diverged = [(i, d["diverged"]) for i, d in enumerate(per_draw) if d["diverged"]]
        why = diverged[0][1] if diverged else None
        if diverged and len(per_draw) > 1:
            why = f"{len(diverged)} of {len(per_draw)} draws diverged (the first, draw {diverged[0][0]}: {why})"
        val = column("val_mse")
        return cls(
            value=value,
            train_mse=float(column("train_mse").mean()),
            val_mse=float(val.mean()),
            noise_floor=math.nan if noise_std is None else float(noise_std) ** 2,
            optimum_train_mse=float(column("optimum_train_mse").mean()),
            optimum_val_mse=float(column("optimum_val_mse").mean()),
            gap=float(column("gap").max()),  # the draw furthest from its optimum
            optimizer_steps=steps,
            epochs=epochs,
            run=label,
            diverged=why,
            draws=len(per_draw),
            train_mse_band=band("train_mse"),
            val_mse_band=band("val_mse"),
            val_mse_median=float(np.median(val)) if len(val) else math.nan,
            train_floor=math.nan if noise_std is None else training_noise_floor(noise_std, n_train, n_parameters),
            val_mse_error=float(val.std(ddof=1) / math.sqrt(len(val))) if len(val) > 1 else math.nan,
            bias_squared=decomposition.bias_squared if decomposition else math.nan,
            variance=decomposition.variance if decomposition else math.nan,
        )

    def final_metrics(self) -> dict[str, float]:
        """The value's results for TensorBoard's HPARAMS tab and its summary.json (finite ones only)."""
        metrics = {"final/train_mse": self.train_mse, "final/val_mse": self.val_mse}
        if self.draws > 1:
            metrics |= {f"final/{name}": getattr(self, name) for name in ("val_mse_error", "bias_squared", "variance")}
        return {name: value for name, value in metrics.items() if math.isfinite(value)}


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, inf (or nan) where the denominator is 0 (noise-free data: σ² = 0)."""
    return numerator / denominator if denominator else math.copysign(math.inf, numerator) if numerator else math.nan


COLUMNS = ("train_mse", "val_mse", "noise_floor", "optimum_train_mse", "optimum_val_mse", "gap", "optimizer_steps",
           "epochs", "run")  # fmt: skip
DRAW_COLUMNS = ("train_mse_p10", "train_mse_p90", "val_mse_p10", "val_mse_p90", "val_mse_median", "val_mse_error",
                "bias_squared", "variance", "draws")  # fmt: skip


def draw_cells(p: SweepPoint) -> list:
    """A point's DRAW_COLUMNS (a band is nan where fewer than two draws were kept)."""
    bands = [*(p.train_mse_band or (math.nan,) * 2), *(p.val_mse_band or (math.nan,) * 2)]
    return [*bands, p.val_mse_median, p.val_mse_error, p.bias_squared, p.variance, p.draws]


def write_csv(points: list[SweepPoint], name: str, path: Path) -> None:
    """sweep.csv: a row per value (with draws, DRAW_COLUMNS too); floats as repr, so that they read back exactly."""
    draws = points[0].draws > 1
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([name, *COLUMNS, *(DRAW_COLUMNS if draws else ())])
        for p in points:
            cells = [getattr(p, column) for column in COLUMNS] + (draw_cells(p) if draws else [])
            writer.writerow([p.value, *(repr(v) if isinstance(v, float) else v for v in cells)])


def markdown_table(points: list[SweepPoint], parameter: str) -> str:
    if points[0].draws > 1:
        return markdown_table_of_draws(points, parameter)
    name = parameter.rsplit(".", 1)[-1]
    best = validation_minimum(points)

    number = "{:.4g}".format
    known = math.isfinite(points[0].noise_floor)
    floor = (
        f"Noise floor σ² = {number(points[0].noise_floor)}"
        + ("" if len({p.noise_floor for p in points}) == 1 else " (first run; see the column)")
        if known
        else "Noise floor σ² unknown (your own data: compare the runs' validation MSE)"
    )
    lines = [
        f"Sweep of `{parameter}`. {floor}"
        + (
            f". Validation minimum at {name} = {best.value}: val MSE {number(best.val_mse)}"
            + (f" = {ratio(best.val_mse, best.noise_floor):.2f}·σ²." if known else ".")
            if best
            else ". No run has a finite validation MSE."
        ),
        "",
        f"| {name} | train MSE | val MSE | val / σ² | optimum train MSE | optimum val MSE | gap to optimum | steps |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        over_floor = f"{ratio(p.val_mse, p.noise_floor):.3g}" if known else "n/a"
        cells = [p.value, number(p.train_mse), number(p.val_mse), over_floor]
        cells += [number(p.optimum_train_mse), number(p.optimum_val_mse), number(p.gap), p.optimizer_steps]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [f"\n{name} = {p.value} diverged: {p.diverged}" for p in points if p.diverged]
    return "\n".join(lines) + "\n"


def markdown_table_of_draws(points: list[SweepPoint], parameter: str) -> str:
    """The table of a sweep over data draws: means and spreads, and bias² + variance + σ² beside the measured mean."""
    name = parameter.rsplit(".", 1)[-1]
    best = validation_minimum(points)
    floors = sorted({p.noise_floor for p in points})
    floor = f"σ² = {floors[0]:.4g}" if len(floors) == 1 else f"σ² from {floors[0]:.4g} to {floors[-1]:.4g}"
    lines = [
        f"Sweep of `{parameter}` over {points[0].draws} data draws per value (draw k: data.seed + k). {floor}. "
        f"Means over the draws; the spread is the middle 80% (10th–90th percentile); ± is the mean's standard "
        f"error; once one draw's MSE is heavy-tailed (overfitting) the median says more than the mean. bias² is "
        f"corrected for the scatter of the draws' mean (below 0: within its sampling error of 0); bias² + var + σ² is "
        f"the expected validation MSE that the decomposition predicts."
        + (f" Lowest mean validation MSE at {name} = {best.value}." if best else ""),
        "",
        f"| {name} | train MSE | train 10–90% | val MSE ± s.e. | val median | val 10–90% | bias² | variance "
        "| bias² + var + σ² | gap to optimum (max) | steps |",
        "|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]

    def spread(band: tuple[float, float] | None) -> str:
        return f"{band[0]:.3g} – {band[1]:.3g}" if band else "n/a"

    for p in points:
        predicted = p.bias_squared + p.variance + p.noise_floor
        cells = [p.value, f"{p.train_mse:.4g}", spread(p.train_mse_band), f"{p.val_mse:.4g} ± {p.val_mse_error:.2g}",
                 f"{p.val_mse_median:.3g}", spread(p.val_mse_band), f"{p.bias_squared:.3g}", f"{p.variance:.3g}",
                 f"{predicted:.4g}", f"{p.gap:.2g}", p.optimizer_steps]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [f"\n{name} = {p.value}: {p.diverged}" for p in points if p.diverged]
    return "\n".join(lines) + "\n"


def write_results(
    points: list[SweepPoint], parameter: str, x_scale: str, name: str, folder: Path, interrupted: str = ""
) -> None:
    """The table, the figures and the TensorBoard curve; `interrupted` says what stopped the sweep short (at the top
    of sweep.md and in the figure's title)."""
    write_csv(points, parameter.rsplit(".", 1)[-1], folder / "sweep.csv")
    table = (f"**{interrupted}**\n\n" if interrupted else "") + markdown_table(points, parameter)
    (folder / "sweep.md").write_text(table)
    draws = f" over {points[0].draws} draws" if points[0].draws > 1 else ""
    short = f" ({interrupted})" if interrupted else ""
    draw_figure(points, parameter, x_scale, f"{name}: {parameter}{draws}{short}", folder / "sweep.png")
    written = ["sweep.csv", "sweep.md", "sweep.png"]
    if any(math.isfinite(p.bias_squared) for p in points):
        title = f"{name}: bias² + variance + σ² over {points[0].draws} draws"
        draw_bias_variance(points, parameter, x_scale, title, folder / "bias_variance.png")
        written.append("bias_variance.png")
    write_tensorboard_curve(points, parameter, folder / "sweep")
    written.append("sweep/ (TensorBoard: the curves over the swept value)")
    print(table, flush=True)
    print(f"fitquad sweep: wrote {', '.join(written)} in {folder}", flush=True)


def write_tensorboard_curve(points: list[SweepPoint], parameter: str, folder: Path) -> None:
    """The sweep as TensorBoard draws it best: one run, "sweep", whose x-axis is the swept value (its position among
    the values when they are not whole numbers), so SCALARS shows the curves of sweep.png, not one short line per
    value."""
    from torch.utils.tensorboard import SummaryWriter  # only when a sweep ends: TensorBoard's writer is heavy

    whole = all(isinstance(p.value, int) and not isinstance(p.value, bool) and p.value >= 0 for p in points)
    writer = SummaryWriter(str(folder))
    for index, p in enumerate(points):
        step = p.value if whole else index
        scalars = {"train_mse": p.train_mse, "val_mse": p.val_mse, "noise_floor": p.noise_floor}
        if p.draws > 1:
            scalars.update(val_mse_median=p.val_mse_median, bias_squared=p.bias_squared, variance=p.variance)
        for tag, value in scalars.items():
            if math.isfinite(value):
                writer.add_scalar(f"sweep/{tag}", value, step)
    axis = parameter if whole else f"the position of {parameter} among " + ", ".join(str(p.value) for p in points)
    writer.add_text("sweep", f"x-axis: {axis}")
    writer.close()
