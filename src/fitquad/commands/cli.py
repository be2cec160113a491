"""The `fitquad` command after its light entry point (entry.py): every command, run, and every way one can fail
that is not a bug in fitquad told as one line and an exit status.

`fit`, `validate`, `test` and `predict` are LightningCLI's (fit_cli.py); `sweep`, `compare` and `lr-find` are
imported by name only when run (EXTRA_COMMANDS). All of them parse with fitquad.commands.parsing; none imports
this module back.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import signal
import sys
import threading

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fitquad.callbacks.interrupts import CheckpointOnSignal, Interrupted, sigterm_handler, sigterm_received
from fitquad.checks.validation import InvalidInput
from fitquad.commands.entry import COMMANDS, overview
from fitquad.commands.fit_cli import refusal, refused_at_fit_start, run_lightning_cli
from fitquad.commands.parsing import BAD_INPUT_STATUS, report_bad_input, settle_warnings_and_yaml
from fitquad.core.module import TrainingDiverged

# Commands beyond LightningCLI's fit/validate/test/predict: name -> "module:function", imported only
# when used, so `fitquad fit` pays nothing for them. Each function takes the remaining arguments.
EXTRA_COMMANDS: dict[str, str] = {
    "sweep": "fitquad.commands.sweep_runs:main",
    "compare": "fitquad.commands.compare_grid:main",
    "lr-find": "fitquad.commands.lr_find:main",
}


def version() -> str:
    import lightning
    import torch

    fitquad = importlib.metadata.version("fitquad")
    return f"fitquad {fitquad} (lightning {lightning.__version__}, torch {torch.__version__})"


def main(args: list[str] | None = None) -> None:
    settle_warnings_and_yaml()
    command_line = sys.argv[1:] if args is None else args
    if command_line[:1] in ([], ["-h"], ["--help"]):
        print(overview(), file=sys.stdout if command_line else sys.stderr)
        sys.exit(0 if command_line else BAD_INPUT_STATUS)
    if command_line[:1] == ["--version"]:
        print(version())
        return
    if command_line[0] not in COMMANDS:  # LightningCLI's own error would name its four commands only
        nearest = difflib.get_close_matches(command_line[0], COMMANDS, n=1)
        hint = f"did you mean {nearest[0]}? " if nearest else ""
        print(
            f"fitquad: error: {command_line[0]!r} is not a command: {hint}the commands are {', '.join(COMMANDS)} "
            "(`fitquad --help` says what each does)",
            file=sys.stderr,
        )
        sys.exit(BAD_INPUT_STATUS)
    failed_writes: list[OSError] = []
    report_thread_failure = threading.excepthook

    def note_failed_write(failure: threading.ExceptHookArgs) -> None:
        # TensorBoard writes from a thread of its own: a full disk there is noted, and told as one line below.
        if isinstance(failure.exc_value, OSError):
            failed_writes.append(failure.exc_value)
        else:
            report_thread_failure(failure)

    threading.excepthook = note_failed_write
    try:
        with sigterm_handler():
            status = run_reporting_failures(command_line, args)
    finally:
        threading.excepthook = report_thread_failure
    if failed_writes and not status:
        status = report_failed_write(failed_writes[0])
    if status:
        sys.exit(status)


def run_reporting_failures(command_line: list[str], args: list[str] | None) -> int:
    """Run one command; every way it can fail that is not a bug in fitquad becomes one line on stderr and the
    exit status: 2 for bad input, 1 for a diverged fit or a file that cannot be written, 128 + the signal's
    number for SIGTERM and Ctrl-C (the shell's status for a program stopped by it). A bug keeps its traceback."""
    try:
        return run_command(command_line, args)
    except InvalidInput as error:  # the input is wrong
        return report_bad_input(str(error))
    except MisconfigurationException as error:  # Lightning refuses the config as the run starts: who, named
        return report_bad_input(str(refusal(error)))
    except ValueError as error:  # the input is wrong, if Lightning refuses a Trainer option as the fit starts
        refused = refused_at_fit_start(error)
        if refused is None:
            raise
        return report_bad_input(str(refused))
    except TrainingDiverged as diverged:  # the divergence guard
        print(f"fitquad: error: {diverged}", file=sys.stderr, flush=True)
        return 1
    except OSError as error:  # the file system: full, read-only, gone (files written before stay whole)
        return report_failed_write(error)
    except SIGTERMException:  # outside a Trainer's run (interrupts.py); inside, CheckpointOnSignal saved first
        print("fitquad: stopped by SIGTERM", file=sys.stderr, flush=True)
        return 128 + signal.SIGTERM
    except Interrupted as interrupted:  # a sweep's or comparison's Trainer, stopped by a signal
        print(f"fitquad: {interrupted}", file=sys.stderr, flush=True)
        return 128 + interrupted.signum
    except KeyboardInterrupt:  # Ctrl-C outside a Trainer's run: nothing to save
        print("fitquad: stopped by Ctrl-C", file=sys.stderr, flush=True)
        return 128 + signal.SIGINT


def report_failed_write(error: OSError) -> int:
    what = f"{error.filename}: " if error.filename else ""
    print(
        f"fitquad: error: a file could not be written or read: {what}{error.strerror or error} "
        "(the checkpoints written before it are whole)",
        file=sys.stderr,
        flush=True,
    )
    return 1


def run_command(command_line: list[str], args: list[str] | None) -> int:
    """One command, run; its exit status: 0, or 128 + the signal that stopped it."""
    if command_line[0] in EXTRA_COMMANDS:
        module_name, function_name = EXTRA_COMMANDS[command_line[0]].split(":")
        getattr(importlib.import_module(module_name), function_name)(command_line[1:])
        return 128 + signal.SIGTERM if sigterm_received() else 0
    cli = run_lightning_cli(command_line, args)
    interrupted_by = next((c.received for c in cli.trainer.callbacks if isinstance(c, CheckpointOnSignal)), None)
    if interrupted_by is None and sigterm_received():  # after the last training step, or in validate/test/predict
        print("fitquad: SIGTERM arrived as the command was finishing; its results are written", file=sys.stderr)
        interrupted_by = signal.SIGTERM
    return 0 if interrupted_by is None else 128 + interrupted_by


if __name__ == "__main__":
    main()
