"""A callback that sends its own process a signal from a chosen hook: `fitquad` runs it through
--trainer.callbacks (tests/helpers on PYTHONPATH), to signal a real command at a moment a test chooses."""

from __future__ import annotations

import os
import signal

import lightning as L


class SignalAt(L.Callback):
    """Sends `signal_name` (SIGTERM, SIGINT) to this process when `hook` runs for the (skip + 1)-th time in
    this process, counted across instances (a sweep builds one per run)."""

    calls = 0

    def __init__(self, hook: str = "on_sanity_check_start", signal_name: str = "SIGTERM", skip: int = 0) -> None:
        self.hook, self.signum, self.skip = hook, signal.Signals[signal_name], skip

    def __getattribute__(self, name: str):
        if name == object.__getattribute__(self, "hook") and hasattr(L.Callback, name):
            return object.__getattribute__(self, "_send")
        return object.__getattribute__(self, name)

    def _send(self, *args, **kwargs) -> None:
        SignalAt.calls += 1
        if SignalAt.calls == self.skip + 1:
            os.kill(os.getpid(), self.signum)
