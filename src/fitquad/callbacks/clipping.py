"""GradientClipping: gradient clipping as a callback (`trainer.callbacks`), through the module's
`configure_gradient_clipping` in `on_before_optimizer_step`, so it works under manual and automatic optimization,
after a gradient scaler's unscaling; `--trainer.gradient_clip_val` adds it for a manually optimized module.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch

from fitquad.checks.validation import InvalidInput


class GradientClipping(L.Callback):
    """Clip the gradients before every optimizer step.

    Args:
        gradient_clip_val: "norm": the largest total 2-norm of all gradients; "value": the largest
            absolute value of any gradient element. Must be > 0.
        gradient_clip_algorithm: "norm" rescales all gradients together (torch.nn.utils.clip_grad_norm_);
            "value" clamps each element (torch.nn.utils.clip_grad_value_).
    """

    def __init__(self, gradient_clip_val: float, gradient_clip_algorithm: Literal["norm", "value"] = "norm") -> None:
        if not gradient_clip_val > 0:
            raise InvalidInput(f"GradientClipping.gradient_clip_val must be > 0, got {gradient_clip_val!r}")
        if gradient_clip_algorithm not in ("norm", "value"):
            raise InvalidInput(
                f"GradientClipping.gradient_clip_algorithm must be norm or value, got {gradient_clip_algorithm!r}"
            )
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        pl_module.configure_gradient_clipping(optimizer, self.gradient_clip_val, self.gradient_clip_algorithm)
