"""A callback the tests pass to the real `fitquad` command: it registers an atexit handler, as a logger with a final
upload (W&B, MLflow) does, so a test can see that a finished command lets Python run it."""

from __future__ import annotations

import atexit
from pathlib import Path

import lightning as L


class WriteAtExit(L.Callback):
    """When the fit ends, registers an atexit handler that writes `path`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        atexit.register(Path(self.path).write_text, "written at exit\n")
