"""fitquad: fit a noisy quadratic by (stochastic) gradient descent with PyTorch Lightning.

The classes are imported when first used, so that `fitquad` (fitquad.entry) can speak before PyTorch and
Lightning have loaded.
"""

from __future__ import annotations

import importlib
from typing import Any

_CLASSES = {
    "PolynomialModel": "fitquad.model",
    "QuadraticDataModule": "fitquad.data",
    "QuadraticRegression": "fitquad.training",
}

__all__ = list(_CLASSES)


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        return getattr(importlib.import_module(_CLASSES[name]), name)
    raise AttributeError(f"module 'fitquad' has no attribute {name!r}")
