"""The `fitquad` command's entry point, kept light: PyTorch and Lightning take seconds to import, so the
command first says what it is about to run (and answers `fitquad --help` at once), then loads them and
hands over to fitquad.commands.cli.
"""

from __future__ import annotations

import os
import signal
import sys

# Every command, with what it is for: `fitquad --help` (LightningCLI's own help knows only its four).
COMMANDS: dict[str, str] = {
    "fit": "train on a config and diagnose the fit (fitquad fit --config configs/lesson3.yaml)",
    "validate": "validation loss, MSE, MAE and R² of a checkpoint (--ckpt_path)",
    "test": "the same on the test split",
    "predict": "predictions of a checkpoint on the test split, into predictions.csv",
    "sweep": "one setting over a list of values (degree, n_train, weight decay): table and figure",
    "compare": "losses × SGD settings on one data set: loss landscapes side by side and a table",
    "lr-find": "Lightning's learning-rate range test, beside the largest stable learning rate",
}


def overview() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {purpose}" for name, purpose in COMMANDS.items()]
    return "\n".join(
        [
            "usage: fitquad <command> [options]   (fitquad <command> --help lists the command's options)",
            "",
            "Fit a noisy quadratic by gradient descent with PyTorch Lightning, and see what happens.",
            "",
            "commands:",
            *lines,
            "",
            "  --version  fitquad's version, and Lightning's and torch's",
        ]
    )


def announcement(args: list[str]) -> str | None:
    """The first line of a command that will train or evaluate, printed before the slow imports; None for help,
    --print_config and anything that is not a command."""
    if not args or args[0] not in COMMANDS or any(arg in ("-h", "--help") for arg in args):
        return None
    if any(arg.startswith("--print_config") for arg in args):
        return None
    return f"fitquad: {' '.join(args)}: starting (loading PyTorch and Lightning)"


def main() -> None:
    args = sys.argv[1:]
    if args[:1] in (["-h"], ["--help"]):
        print(overview())
        return
    if args[:1] == ["lr-find"] and not (sys.stdout.isatty() and sys.stderr.isatty()):
        # Lightning's lr finder draws a tqdm bar of its own, whatever the Trainer's progress-bar setting: off where
        # no terminal reads it (through a pipe, `| tee`, into a file), as fit's bar is. tqdm reads its defaults from
        # TQDM_* variables when it is imported, so before Lightning is.
        os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        line = announcement(args)
        if line is not None:
            print(line, flush=True)
        from fitquad.commands.cli import main as run
    except KeyboardInterrupt:  # Ctrl-C while PyTorch and Lightning load: nothing has started, nothing to save
        print("fitquad: stopped by Ctrl-C", file=sys.stderr, flush=True)
        sys.exit(128 + signal.SIGINT)
    run()  # a finished command lets Python shut down: every logger's and atexit handler's last work runs
