"""fitquad: fit a noisy quadratic by (stochastic) gradient descent with PyTorch Lightning.

From Python (fitquad.commands.api): `fitquad.fit`, `fitquad.sweep` and `fitquad.compare` run the commands and return
what they made; bad input raises `fitquad.InvalidInput` with the line the command would print.

Everything is imported when first used, so that `fitquad` (fitquad.commands.entry) can speak before PyTorch and
Lightning have loaded, and `import fitquad` costs nothing until a name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "fit": "fitquad.commands.api",
    "sweep": "fitquad.commands.api",
    "compare": "fitquad.commands.api",
    "FitResult": "fitquad.commands.api",
    "TableResult": "fitquad.commands.api",
    "InvalidInput": "fitquad.core",
    "TrainingDiverged": "fitquad.core.module",
    "PolynomialModel": "fitquad.core.model",
    "QuadraticDataModule": "fitquad.core.data",
    "QuadraticRegression": "fitquad.core.module",
    "FusedQuadraticRegression": "fitquad.core.fused",
    "FileDataModule": "fitquad.checks.file_data",
}

__all__ = list(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'fitquad' has no attribute {name!r}")
