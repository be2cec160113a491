"""What every fitquad command parses and reports with: one parser class (OneLineErrorParser, a
LightningArgumentParser whose errors are one line naming the option, with a did-you-mean hint), Lightning's info
lines quieted, bad input reported as one line with exit status 2, and the warnings and YAML loader every command
sets up first. `fitquad fit` (fit_cli.py), `sweep`, `compare` and `lr-find` all parse with it; nothing here imports
them.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import logging
import re
import sys
import warnings
from collections.abc import Iterator

import yaml
from jsonargparse import get_loader, set_loader
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from fitquad.checks.config_text import one_line, strict_yaml
from fitquad.checks.validation import InvalidInput
from fitquad.core import fused  # imported also so that `--model FusedQuadraticRegression` is known by its name
from fitquad.core.module import QuadraticRegression

# Lightning's own info lines (devices, "Seed set", tips and adverts, why a fit stopped) are logged by these
# loggers at INFO; fitquad shows WARNING and above unless --lightning_info true.
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


# What a class raises when it refuses the arguments it was built with.
BUILD_ERRORS = (TypeError, ValueError, LookupError, ImportError, RuntimeError, MisconfigurationException)


@contextlib.contextmanager
def lightning_quiet() -> Iterator[None]:
    """Lightning's info lines off (see LIGHTNING_LOGGERS) for commands that run many Trainers: sweep, compare."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


# Exit status for bad input, as argparse uses.
BAD_INPUT_STATUS = 2


def report_bad_input(message: str) -> int:
    """Bad input as one line on stderr, with no usage text and no traceback; its exit status."""
    print(f"fitquad: error: {one_line(message)}", file=sys.stderr, flush=True)
    return BAD_INPUT_STATUS


class OneLineErrorParser(LightningArgumentParser):
    """jsonargparse's parser, except that an error is an InvalidInput of one line instead of the whole usage text
    and an exit: the command reports it (run_reporting_failures), fitquad.commands.api raises it."""

    # The subcommand's parser, whose options a hint suggests from (the root parser that reads --config knows only
    # the subcommand's name): set on the root parser as FitquadCLI fills it.
    subcommand_parser: LightningArgumentParser | None = None

    def error(self, message: str, ex: Exception | None = None) -> None:
        if not self.exit_on_error:  # jsonargparse parsing internally, and catching it
            super().error(message, ex)
        # The command whose --help lists the options: this parser's (fitquad sweep, fitquad validate, ...).
        words = self.prog.split()  # "fitquad sweep", "fitquad [options] validate"; under pytest, "pytest"
        command = f"fitquad {words[-1]}" if words[0] == "fitquad" and len(words) > 1 else "fitquad fit"
        line, hint = one_line(message, command), ""
        with contextlib.suppress(Exception):  # a hint is a help, never a second failure
            hint = another_commands_config(line, command) or did_you_mean(line, self)
        note = re.search(r" \(`[^`]*` lists (the options|them)\)$", line)  # the hint goes before the closing note
        at = note.start() if note else len(line)
        raise InvalidInput(line[:at] + hint + line[at:])


# Where a one-line error names an option that does not exist: unrecognized on the command line, not an option
# of the model's class, not an option of a config file's section.
UNKNOWN_OPTION = (
    re.compile(r"unrecognized arguments: (?P<given>\S+)"),
    re.compile(r"^(?P<given>\S+) is not an option of"),
    re.compile(r"does not accept option '(?P<given>[^']+)'"),
    re.compile(r"^(?P<given>\S+) is not an option \("),
)


def unknown_option(line: str) -> re.Match | None:
    """Where a one-line error names an option that does not exist (UNKNOWN_OPTION), if it does."""
    return next((found for pattern in UNKNOWN_OPTION if (found := pattern.search(line))), None)


# A config's sections that only one command reads: a config holding one is that command's.
COMMAND_OF_SECTION = {"sweep": "fitquad sweep", "losses": "fitquad compare", "settings": "fitquad compare",
                      "lr_find": "fitquad lr-find"}  # fmt: skip


# The model options that `fitquad compare` sets per row (loss) and column (SGD setting) of its grid.
SET_BY_THE_GRID = ("model.loss", "model.momentum", "model.dampening", "model.nesterov", "model.weight_decay")


def another_commands_config(line: str, command: str) -> str:
    """A hint where the unknown option belongs to another command (configs/capacity.yaml given to fitquad fit: run it
    with fitquad sweep), or is set by compare's grid; "" otherwise."""
    match = unknown_option(line)
    given = match["given"].lstrip("-") if match else ""
    if command == "fitquad compare" and given in SET_BY_THE_GRID:
        return "; compare sets it for each row and column of its grid: losses and settings"
    owner = COMMAND_OF_SECTION.get(given.split(".")[0])
    return f"; {given.split('.')[0]} belongs to {owner}: run this with {owner}" if owner and owner != command else ""


def did_you_mean(line: str, parser: LightningArgumentParser) -> str:
    """The option nearest to an unknown one, as a hint to append to its error ("" when none is near): a typo
    (--model.lrr: --model.lr), or the right name under another section (--max_steps: --trainer.max_steps)."""
    match = unknown_option(line)
    if match is None:
        return ""
    given = match["given"]
    if not given.startswith("-") and match.re is UNKNOWN_OPTION[0]:  # a word alone: a config file given bare?
        return f"; give a config file with --config {given}" if given.endswith((".yaml", ".yml")) else ""
    name = given.lstrip("-")
    if match.re is UNKNOWN_OPTION[2] and parser.subcommand_parser is not None:  # a key of a config file
        parser = parser.subcommand_parser
    known = [key.replace(".init_args.", ".") for key in parser.get_defaults().keys()]
    known += [key.split(".", 1)[1] for key in known if key.split(".", 1)[0] in LightningCLI.subcommands()]
    model_class = re.search(r"is not an option of (\w+)", line)
    if model_class:  # the chosen class's own options (model.class_path may name the fused subclass)
        chosen = next(
            cls for cls in (QuadraticRegression, fused.FusedQuadraticRegression) if cls.__name__ == model_class[1]
        )
        known += [f"model.{option}" for cls in chosen.__mro__[:2] for option in inspect.signature(cls).parameters]
    nearest = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
    nearest = nearest or [key for key in known if key.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]][:1]
    return f"; did you mean --{nearest[0]}?" if nearest else ""


def input_error_behind(error: BaseException) -> InvalidInput | None:
    """The InvalidInput that caused `error`, if one did (a class refusing its arguments while jsonargparse
    built it from the config)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InvalidInput):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def settle_warnings_and_yaml() -> None:
    """What every fitquad command sets up first: Lightning's warnings that do not apply to fitquad off (each by its
    message, with why), and the strict YAML loader for config files."""
    # The module logs every trainer.log_every_n_steps optimizer steps itself, so Lightning's warning that
    # an epoch has fewer training_steps than that interval (always true with fused steps) does not apply.
    warnings.filterwarnings("ignore", message="The number of training batches .* is smaller than the logging")
    # Lightning 2.6 with torch 2.13 warns about its own use of a deprecated torch API, on every run.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # A step checkpoint under manual optimization holds the state after that step's update, as it does under
    # automatic optimization: what a checkpoint at global_step k should hold, not a problem to warn about.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization and every_n_train_steps")
    # No validation points (data.n_val 0, data.val_fraction 0) is a choice: the data module then gives Lightning an
    # empty validation loader, which it warns about as if by mistake.
    warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")
    # A resumed fit is a new run, in its own folder, by design: its ModelCheckpoint starts a fresh best-k list.
    warnings.filterwarnings("ignore", message="The dirpath has changed from")
    # `--optimizer X` replaces the model's SGD: what the option is for (README), not a surprise to warn about.
    warnings.filterwarnings("ignore", message=r"`\w*QuadraticRegression.configure_optimizers` will be overridden by")
    # Every config file fitquad reads (fit, sweep, compare, lr-find) goes through jsonargparse's YAML loader.
    if not getattr(get_loader("yaml"), "strict", False):
        strict = strict_yaml(get_loader("yaml"))
        strict.strict = True
        set_loader("yaml", strict, exceptions=(yaml.YAMLError,))
