"""Ctrl-C (SIGINT) or SIGTERM during a fit: finish the training step, save a checkpoint, stop cleanly, exit 130 or
143; and fitquad's SIGTERM handler for the rest of a command. Why Lightning's own behaviour is not enough, and how
the two fit together: docs/how-it-works.md, "interrupts.py".
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fitquad.callbacks.summary import run_folder, say


class _Sigterm:
    received = False  # SIGTERM arrived during this command
    deferred = 0  # Trainers running with a CheckpointOnSignal: they stop at a safe point themselves


def sigterm_received() -> bool:
    """Whether SIGTERM arrived since `sigterm_handler` was installed."""
    return _Sigterm.received


@contextlib.contextmanager
def sigterm_handler() -> Iterator[None]:
    """fitquad's SIGTERM handler for the duration of a command (docs/how-it-works.md); the previous one
    after."""
    _Sigterm.received, _Sigterm.deferred = False, 0
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _note_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _note_sigterm(signum: int, frame: Any) -> None:
    _Sigterm.received = True
    if not _Sigterm.deferred:
        raise SIGTERMException


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped one of the Trainers of a command that runs several (sweep, compare)."""

    def __init__(self, signum: int) -> None:
        self.signum = signal.Signals(signum)
        super().__init__(f"stopped by {self.signum.name}")


def stopped_by(stopped: BaseException) -> str:
    """What stopped a command that runs several Trainers short (a signal, or an error), in words."""
    if isinstance(stopped, Interrupted):
        return str(stopped)
    if isinstance(stopped, SIGTERMException):
        return "stopped by SIGTERM"
    if isinstance(stopped, KeyboardInterrupt):
        return "stopped by Ctrl-C"
    return f"stopped by an error ({type(stopped).__name__})"


class CheckpointOnSignal(L.Callback):
    """Always on (the CLI adds it): Ctrl-C or SIGTERM during a fit saves a checkpoint and stops cleanly.

    Args:
        filename: The checkpoint's file name, beside ModelCheckpoint's files (run folder/checkpoints/ without one);
            null: stop without saving (`fitquad compare`'s runs, which keep only their paths).
    """

    def __init__(self, filename: str | None = "interrupted.ckpt") -> None:
        self.filename = filename
        self.received: signal.Signals | None = None  # the signal that stopped the fit, if one did
        self.checkpoint_path: Path | None = None
        self._previous_sigint_handler: Any = None
        self._deferring = False
        self._training = False  # between on_train_start and the end of the fit

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # From here to teardown (sanity check and evaluation included) SIGTERM is noted, not raised.
        self.received, self._training = None, False
        self._stop_deferring()  # a Trainer reused for another stage
        self._deferring = True
        _Sigterm.deferred += 1

    def _note_sigint(self) -> None:
        # Set after Lightning registers its own handlers (it puts back, at the end of a fit, those it found
        # then), and only from the main thread (the only one that may set a handler).
        if self._previous_sigint_handler is None and threading.current_thread() is threading.main_thread():
            self._previous_sigint_handler = signal.signal(signal.SIGINT, self._note_signal)

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._note_sigint()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._training = True
        self._note_sigint()
        if self.filename is not None:  # (compare's runs stop without a word: they are 20 at a time)
            say(trainer, "fitquad: training (Ctrl-C or SIGTERM saves a checkpoint and stops)")

    def _note_signal(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts at once

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.received_sigterm or _Sigterm.received:
            self.received = signal.SIGTERM
        received = self.received is not None
        if trainer.world_size > 1:  # stop together if any process was signalled
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        if not received:
            return
        self.received = self.received or signal.SIGTERM  # signalled through another process
        self._save(trainer)
        trainer.should_stop = True

    def _save(self, trainer: L.Trainer) -> None:
        if self.filename is None:
            say(trainer, f"fitquad: {self.received.name} at step {trainer.global_step}: stopping")
            return
        directory = Path(trainer.checkpoint_callback.dirpath) if trainer.checkpoint_callback else None
        self.checkpoint_path = (directory or run_folder(trainer) / "checkpoints") / self.filename
        trainer.save_checkpoint(self.checkpoint_path, weights_only=False)  # everything, to resume from
        say(
            trainer,
            f"fitquad: {self.received.name} at step {trainer.global_step}: checkpoint saved to "
            f"{self.checkpoint_path}; resume with --ckpt_path {self.checkpoint_path}",
        )

    def _restore_handlers(self) -> None:
        if self._previous_sigint_handler is not None:
            signal.signal(signal.SIGINT, self._previous_sigint_handler)
            self._previous_sigint_handler = None

    def _stop_deferring(self) -> None:
        if self._deferring:
            self._deferring = False
            _Sigterm.deferred -= 1

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handlers()
        self._stop_deferring()
        if _Sigterm.received and self.received is None:  # arrived after the last training step, or not in a fit
            self.received = signal.SIGTERM

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()
        self._stop_deferring()
        # SIGTERM that arrived after on_train_batch_end (during validation, say): Lightning raises
        # SIGTERMException at the end of that training_step, still a consistent place to save.
        if isinstance(exception, SIGTERMException) and self.received is None:
            self.received = signal.SIGTERM
            if self._training:  # before training there is nothing new to save
                self._save(trainer)
