"""Ctrl-C (SIGINT) or SIGTERM during a fit: finish the training step, save a checkpoint, stop cleanly.

Left to itself, Lightning turns Ctrl-C into a KeyboardInterrupt wherever it lands (possibly between
an optimizer step and its bookkeeping) and exits with status 1 and no checkpoint. So while training,
Ctrl-C only raises a flag here. SIGTERM keeps Lightning's own handler, which notes it
(`trainer.received_sigterm`, shared across DDP processes) and raises SIGTERMException after the
training_step in progress. Either way, at the end of that training_step the flag is shared across DDP
processes (a scheduler may signal rank 0 alone), every process saves, and `fitquad` exits with the
shell's status for the signal (130 for SIGINT, 143 for SIGTERM). The checkpoint is taken where Lightning takes its own
step checkpoints (on_train_batch_end), with the dataloader's position in it (data.InMemoryBatches),
so `fitquad fit --ckpt_path .../interrupted.ckpt` carries on bit for bit as if never stopped. A second
Ctrl-C stops at once, the usual way.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fitquad.callbacks import run_folder, say


class CheckpointOnSignal(L.Callback):
    """Always on (the CLI adds it): Ctrl-C or SIGTERM during a fit saves a checkpoint and stops cleanly.

    Args:
        filename: The checkpoint's file name, beside ModelCheckpoint's files (run folder/checkpoints/ without one).
    """

    def __init__(self, filename: str = "interrupted.ckpt") -> None:
        self.filename = filename
        self.received: signal.Signals | None = None  # the signal that stopped the fit, if one did
        self.checkpoint_path: Path | None = None
        self._previous_sigint_handler: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received = None
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self._previous_sigint_handler = signal.signal(signal.SIGINT, self._note_signal)
        say(trainer, "fitquad: training (Ctrl-C or SIGTERM saves a checkpoint and stops)")

    def _note_signal(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts at once

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.received_sigterm:
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
        directory = Path(trainer.checkpoint_callback.dirpath) if trainer.checkpoint_callback else None
        self.checkpoint_path = (directory or run_folder(trainer) / "checkpoints") / self.filename
        trainer.save_checkpoint(self.checkpoint_path)
        say(
            trainer,
            f"fitquad: {self.received.name} at step {trainer.global_step}: checkpoint saved to "
            f"{self.checkpoint_path}; resume with --ckpt_path {self.checkpoint_path}",
        )

    def _restore_handlers(self) -> None:
        if self._previous_sigint_handler is not None:
            signal.signal(signal.SIGINT, self._previous_sigint_handler)
            self._previous_sigint_handler = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()
        # SIGTERM that arrived after on_train_batch_end (during validation, say): Lightning raises
        # SIGTERMException at the end of that training_step, still a consistent place to save.
        if isinstance(exception, SIGTERMException) and self.received is None:
            self.received = signal.SIGTERM
            self._save(trainer)
