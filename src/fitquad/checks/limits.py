"""What a run may ask of this machine and of floating point, checked before anything is allocated or trained: memory
for its points, and overflow of x, y, the loss and the first step in the run's precision; each a line naming the
option. The bounds and why: docs/how-it-works.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import torch

from fitquad.checks.validation import InvalidInput
from fitquad.core.model import PolynomialModel
from fitquad.core.module import initialize

# Peak memory of a fit per data point: an upper bound of what benchmarks/footprint.py measures
# (benchmarks/README.md, "Many points"), growing with the design matrix's width.
BYTES_PER_POINT = 48
BYTES_PER_POINT_AND_PARAMETER = 16

# A normal draw beyond 8 standard deviations has probability 1e-15 a point: x is bounded by mean ± 8·std.
NORMAL_BOUND = 8.0

# The largest finite number of each dtype a run computes in.
LARGEST = {"float64": 1.7976931348623157e308, "float32": 3.4028234663852886e38, "float16": 65504.0}


def available_memory() -> int | None:
    """Bytes of memory available now (Linux's MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def check_fits_in_memory(what: str, needed: float, advice: str = "ask for less") -> None:
    """InvalidInput naming `what` if `needed` bytes exceed the memory available now."""
    available = available_memory()
    if available is not None and needed > available:
        raise InvalidInput(
            f"{what} would need about {_size(needed)} of memory, and {_size(available)} is available: {advice}"
        )


def check_data_size(data: Mapping[str, Any], degree: int) -> None:
    """The data's points and the model's parameters, against the memory available."""
    points = data["n_train"] + data["n_val"] + data["n_test"]
    parameters = degree + 1
    needed = points * (BYTES_PER_POINT + BYTES_PER_POINT_AND_PARAMETER * parameters) + 32 * parameters**2
    what = f"data.n_train {data['n_train']}, n_val {data['n_val']}, n_test {data['n_test']} at model.degree {degree}"
    check_fits_in_memory(what, needed)


def _size(n_bytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n_bytes < 1024 or unit == "TiB":
            return f"{n_bytes:.3g} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.3g} TiB"


def compute_dtypes(precision: Any) -> tuple[str, str]:
    """(dtype of the features and predictions, dtype of the loss and the parameters) under a Trainer precision."""
    name = str(precision if precision is not None else "32-true")
    if "64" in name or name == "double":
        return "float64", "float64"
    if name.startswith("bf16"):  # bfloat16 has float32's range
        return "float32", "float32"
    if name.startswith("16") or name == "half":
        return "float16", "float16" if "true" in name else "float32"
    return "float32", "float32"


def _product(*factors: float) -> float:
    """A product in float64 that gives inf rather than raising on overflow."""
    try:
        result = math.prod(factors)
    except OverflowError:
        return math.inf
    return result


def check_representable(data: Mapping[str, Any], model: Mapping[str, Any], precision: Any) -> None:
    """The data, and the loss's sum of squared targets, within the run's floating point, from the options alone;
    lr and weight decay themselves. What depends on the model's starting point and features (whose powers
    would turn a loose bound into a false refusal) is checked exactly on the drawn data: check_first_step."""
    feature_dtype, loss_dtype = compute_dtypes(precision)
    for name in ("lr", "weight_decay"):
        if not (model.get(name) or 0.0) < LARGEST[loss_dtype]:
            raise InvalidInput(
                f"model.{name} must be below {loss_dtype}'s largest number, {LARGEST[loss_dtype]:.3g}, "
                f"got {model[name]!r}"
            )
    if data.get("file") is not None:  # read from a file: its values are checked as it is read
        return
    if data["x_distribution"] == "normal":
        x_bound = abs(data["x_mean"]) + NORMAL_BOUND * data["x_std"]
        x_fields = "data.x_mean, data.x_std"
    else:
        x_bound = max(abs(data["x_min"]), abs(data["x_max"]))
        x_fields = "data.x_min, data.x_max"
    terms = {
        "data.true_a": _product(abs(data["true_a"]), x_bound, x_bound),
        "data.true_b": _product(abs(data["true_b"]), x_bound),
        "data.true_c": abs(data["true_c"]),
        "data.noise_std": NORMAL_BOUND * data["noise_std"],
    }
    y_bound = sum(terms.values())
    culprit = max(terms, key=terms.__getitem__)
    if culprit in ("data.true_a", "data.true_b") and x_bound > 1:
        culprit += f" (with x up to {x_bound:.3g}: {x_fields})"
    largest, largest_loss = LARGEST[feature_dtype], LARGEST[loss_dtype]
    if not x_bound < largest:
        raise InvalidInput(
            f"{x_fields} put x beyond {feature_dtype}'s largest number, {largest:.3g}: x reaches {x_bound:.3g}"
        )
    if not y_bound < largest:
        raise InvalidInput(
            f"{culprit} makes y reach about {y_bound:.3g}, beyond {feature_dtype}'s largest number, {largest:.3g}"
        )
    squares_sum = _product(data["n_train"], y_bound, y_bound)
    if not squares_sum < largest_loss:
        raise InvalidInput(
            f"{culprit} makes the loss overflow {loss_dtype}: |y| reaches about {y_bound:.3g}, and the loss adds up "
            f"{data['n_train']} squared residuals of that size (about {squares_sum:.3g}; largest {largest_loss:.3g})"
        )


# Rows of the data a pass of check_first_step holds at once (float64 features of them).
CHECK_CHUNK = 1_000_000


def check_first_step(
    model: Any, x: Any, y: Any, lr: float, weight_decay: float, precision: Any, init_coefficients: Any
) -> None:
    """The model at its starting point, on the drawn training data, computed in float64: its
    features, its predictions, the loss's sum of squares and the first SGD step must all be finite in the run's
    precision. `init_coefficients` (the model option; None: model.init_seed set the start) names the culprit."""
    start = "model.init_coefficients" if init_coefficients is not None else "model.init_seed"
    feature_dtype, loss_dtype = compute_dtypes(precision)
    largest, largest_loss = LARGEST[feature_dtype], LARGEST[loss_dtype]
    parameters = model.model_parameters()
    features_max = predictions_max = squares = 0.0
    gradient = torch.zeros_like(parameters)
    with torch.no_grad():
        for x_part, y_part in zip(x.split(CHECK_CHUNK), y.split(CHECK_CHUNK), strict=True):
            x_part = x_part.to(parameters.device, torch.float64)
            ones = torch.ones(len(x_part), 1, dtype=torch.float64, device=parameters.device)
            features = torch.cat([ones, model.features(x_part)], dim=1)
            residual = features @ parameters - y_part.to(parameters.device, torch.float64)
            features_max = max(features_max, features.abs().max().item())
            predictions_max = max(predictions_max, (features @ parameters).abs().max().item())
            squares += residual.square().sum().item()
            gradient += 2 * features.T @ residual
    degree, scaling = model.degree, model.feature_scaling
    # A feature whose square overflows the loss overflows it with any coefficient of order 1: the degree and the
    # scale of x are at fault, not the starting point.
    if not (features_max < largest and features_max**2 < largest_loss):
        raise InvalidInput(
            f"model.degree {degree} with model.feature_scaling {scaling}: the features (powers of x up to "
            f"x^{degree}) reach {features_max:.3g}, so the squared loss overflows {loss_dtype} (largest "
            f"{largest_loss:.3g}) whatever the coefficients; use model.feature_scaling standardize, or a lower "
            "model.degree"
        )
    if not (predictions_max < largest and squares < largest_loss):
        raise InvalidInput(
            f"{start} makes the loss overflow {loss_dtype} at the start: the predictions reach {predictions_max:.3g} "
            f"and the squared residuals add up to {squares:.3g} (largest {largest_loss:.3g}); start nearer the data"
        )
    step = (lr * (gradient / len(x) + weight_decay * parameters)).abs().max().item()
    if not step < largest_loss:
        raise InvalidInput(
            f"model.lr {lr:.3g} makes the first step overflow {loss_dtype}: lr × gradient reaches about {step:.3g} "
            f"(largest {largest_loss:.3g}); lower model.lr"
        )


def check_limits(config: Mapping[str, Any]) -> None:
    """A parsed fit config (data, model, trainer, optimizer) against memory and floating point."""
    data, model = config["data"], dict(config["model"])
    optimizer = config.get("optimizer")
    if optimizer and (optimizer.get("init_args") or {}).get("lr") is not None:
        model["lr"] = optimizer["init_args"]["lr"]  # --optimizer replaces the model's SGD
    if data.get("file") is None:  # a file's size and values are checked as it is read (fitquad.checks.data_files)
        check_data_size(data, model["degree"])
    check_representable(data, model, config["trainer"].get("precision"))


# Landscape grids: a figure panel is a few hundred pixels across, so a finer grid shows nothing more and costs
# resolution² loss evaluations over every training point, per panel.
MAX_RESOLUTION = 2001


def check_landscape_grid(resolution: int, levels: int, panels: int = 1, owner: str = "") -> None:
    """A loss landscape's grid and contour levels (owner: what the options belong to, e.g. "LossLandscape.")."""
    if not 2 <= resolution <= MAX_RESOLUTION:
        needed = float(resolution) ** 2 * 8 * 4 * panels  # the grid's coordinates and losses, float64
        raise InvalidInput(
            f"{owner}resolution must be in [2, {MAX_RESOLUTION}] (grid points along each axis of a figure), got "
            f"{resolution}" + (f" (its grid alone would need {_size(needed)})" if resolution > MAX_RESOLUTION else "")
        )
    if levels < 2:
        raise InvalidInput(f"{owner}levels must be ≥ 2 (filled contours need two), got {levels}")


def started_model(model_options: Mapping[str, Any], x: torch.Tensor) -> PolynomialModel:
    """The model that the options build, with its scaling and starting parameters from the training inputs `x`, as a
    fit starts it."""
    model = PolynomialModel(model_options["degree"], model_options["feature_scaling"])
    initialize(model, x, model_options["init_coefficients"], model_options["init_seed"])
    return model


def check_start(model_options: Mapping[str, Any], x: torch.Tensor, y: torch.Tensor, precision: Any) -> None:
    """check_first_step for the started_model of the options, on the training points: how `fitquad fit` and `fitquad
    sweep` check a run before its folder is made."""
    lr, weight_decay, start = model_options["lr"], model_options["weight_decay"], model_options["init_coefficients"]
    check_first_step(started_model(model_options, x), x, y, lr, weight_decay, precision, start)
