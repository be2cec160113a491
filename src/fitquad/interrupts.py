"""Ctrl-C (SIGINT) or SIGTERM during a fit: finish the training step, save a checkpoint, stop cleanly.

Left to itself, Lightning turns Ctrl-C into a KeyboardInterrupt wherever it lands (possibly between
an optimizer step and its bookkeeping) and exits with status 1 and no checkpoint; in a single process
it notes SIGTERM and trains on. Here both signals only raise a flag while training. At the end of the
training_step in progress the flag is shared across DDP processes (a scheduler may signal rank 0
alone), every process saves and stops together, and `fitquad` exits with the shell's status for the
signal (130 for SIGINT, 143 for SIGTERM). The checkpoint is taken where Lightning takes its own
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

from fitquad.callbacks import run_folder

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class CheckpointOnSignal(L.Callback):
    def __init__(self, filename: str = "interrupted.ckpt") -> None:
        # Saved beside ModelCheckpoint's files (run folder/checkpoints/ without one).
        self.filename = filename
        self.received: signal.Signals | None = None  # the signal that stopped the fit, if one did
        self.checkpoint_path: Path | None = None
        self._previous_handlers: dict[signal.Signals, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning has installed its own SIGTERM handler (which this one replaces while training).
        self.received = None
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self._previous_handlers = {signum: signal.getsignal(signum) for signum in SIGNALS}
        for signum in SIGNALS:
            signal.signal(signum, self._note_signal)
        if trainer.is_global_zero:
            print("fitquad: training (Ctrl-C or SIGTERM saves a checkpoint and stops)", flush=True)

    def _note_signal(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts at once

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        received = self.received is not None
        if trainer.world_size > 1:  # stop together if any process was signalled
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        if not received:
            return
        self.received = self.received or signal.SIGTERM  # signalled through another process
        directory = Path(trainer.checkpoint_callback.dirpath) if trainer.checkpoint_callback else None
        self.checkpoint_path = (directory or run_folder(trainer) / "checkpoints") / self.filename
        trainer.save_checkpoint(self.checkpoint_path)
        trainer.should_stop = True
        if trainer.is_global_zero:
            print(
                f"fitquad: {self.received.name} at step {trainer.global_step}: checkpoint saved to "
                f"{self.checkpoint_path}; resume with --ckpt_path {self.checkpoint_path}",
                flush=True,
            )

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()
