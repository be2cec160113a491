"""The loss table: every loss fitquad trains with, one entry each, and all that the rest of fitquad knows of it.

An entry is torch's own module (what training calls) and the loss's shape. Every loss here is one member of a
family, ρ(r) = huber_δ(r)/scale with huber_δ(r) = r²/2 for |r| ≤ δ and δ·(|r| − δ/2) beyond:

    mse          r²             δ = ∞   scale = 1/2
    huber        huber_δ(r)     δ       scale = 1
    smooth_l1    huber_β(r)/β   δ = β   scale = β    (β = 0 is L1)
    l1           |r|            δ = 0   scale = 0    (the limit of huber_δ(r)/δ as δ → 0)

The shape is what the theory reads: the Hessian is at most AᵀA/(n·scale), exact where δ = ∞, a bound otherwise,
none where δ = 0; and which solver finds the optimum (least squares, Huber's IRLS, L1's). So a new loss of this
family is one entry here, and every layer above follows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn


@dataclass(frozen=True)
class LossShape:
    delta: float  # the quadratic zone's half-width: ∞ for a quadratic loss, 0 for L1
    scale: float  # ρ = huber_δ/scale

    @property
    def curvature(self) -> float:
        """c such that the loss's Hessian is at most c·AᵀA/n (exact when delta is ∞; 0: no curvature)."""
        return 0.0 if self.delta == 0 else 1.0 / self.scale

    @property
    def quadratic(self) -> bool:
        return self.delta == math.inf

    @property
    def absolute(self) -> bool:
        """L1: no quadratic zone at all."""
        return self.delta == 0


@dataclass(frozen=True)
class Loss:
    torch_class: type[nn.Module]
    # (huber_delta, smooth_l1_beta, reduction) -> the torch module; reduction "none" gives per-point losses
    build: Callable[[float, float, str], nn.Module]
    shape: Callable[[nn.Module], LossShape]  # of a module this entry built


LOSSES: dict[str, Loss] = {
    "mse": Loss(
        nn.MSELoss,
        lambda delta, beta, reduction: nn.MSELoss(reduction=reduction),
        lambda f: LossShape(math.inf, 0.5),
    ),
    "l1": Loss(
        nn.L1Loss,
        lambda delta, beta, reduction: nn.L1Loss(reduction=reduction),
        lambda f: LossShape(0.0, 0.0),
    ),
    "huber": Loss(
        nn.HuberLoss,
        lambda delta, beta, reduction: nn.HuberLoss(reduction=reduction, delta=delta),
        lambda f: LossShape(f.delta, 1.0),
    ),
    "smooth_l1": Loss(
        nn.SmoothL1Loss,
        lambda delta, beta, reduction: nn.SmoothL1Loss(reduction=reduction, beta=beta),
        lambda f: LossShape(f.beta, f.beta),
    ),
}
# The table's names, as a type: LightningCLI lists them in --help and refuses any other.
LossName = Literal[tuple(LOSSES)]  # type: ignore[valid-type]


def make_loss(
    name: LossName, huber_delta: float = 1.0, smooth_l1_beta: float = 1.0, reduction: str = "mean"
) -> nn.Module:
    """torch's own loss module, by name; mean reduction, as in the SGD article."""
    if name not in LOSSES:
        raise ValueError(f"model.loss must be one of {', '.join(LOSSES)}; got {name!r}")
    return LOSSES[name].build(huber_delta, smooth_l1_beta, reduction)


def loss_name(loss_fn: nn.Module) -> str:
    """The table's name of a torch loss module."""
    for name, entry in LOSSES.items():
        if type(loss_fn) is entry.torch_class:
            return name
    raise ValueError(f"{type(loss_fn).__name__} is not in fitquad's loss table (fitquad.core.losses.LOSSES)")


def loss_shape(loss_fn: nn.Module) -> LossShape:
    """Where a torch loss module sits in the family (its delta and scale)."""
    return LOSSES[loss_name(loss_fn)].shape(loss_fn)
