"""Whether float32 holds a fit back: how much of a float32 SGD update is rounding error, against the same step
computed in float64 (the diagnosis's `stalled_float32` verdict reads it).
"""

from __future__ import annotations

import copy
from dataclasses import asdict

import lightning as L
import torch

from fitquad.theory.conditioning import OptimizerSettings

# Steps probed: a fit stuck at float32's resolution cycles between a few points, so the median of several.
FLOAT32_PROBE_STEPS = 10


def float32_update_error(
    module: L.LightningModule, x: torch.Tensor, y: torch.Tensor, settings: OptimizerSettings
) -> float:
    """How much of a float32 update is rounding error: the median, over FLOAT32_PROBE_STEPS steps taken
    in float32 from the module's current parameters, of |step in float32 − exact step| / |exact step|,
    the exact step being the same SGD step computed in float64 from the same parameters.

    1 means the updates round to nothing (or to noise); near 0, float32 follows the exact path. The median
    over a few steps, because a fit stuck at float32 resolution cycles between a few points.
    """
    model = copy.deepcopy(module.model).to("cpu", torch.float32)
    features, target = model.features(x.float()), y.float()
    settings = OptimizerSettings(**{**asdict(settings), "momentum": 0.0, "nesterov": False})  # one clean step

    def step(model: torch.nn.Module, features: torch.Tensor, target: torch.Tensor) -> None:
        optimizer = torch.optim.SGD(model.parameters(), **asdict(settings))
        optimizer.zero_grad()
        module.loss_fn(model.forward_features(features), target).backward()
        optimizer.step()

    errors = []
    for _ in range(FLOAT32_PROBE_STEPS):
        exact = copy.deepcopy(model).double()
        start = exact.model_parameters()
        step(exact, exact.features(x.double()), y.double())
        step(model, features, target)
        exact_step = exact.model_parameters() - start
        errors.append(((model.model_parameters() - start) - exact_step).norm() / exact_step.norm().clamp_min(1e-300))
    return torch.stack(errors).median().item()
