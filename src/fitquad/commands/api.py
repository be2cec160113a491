"""fitquad from Python and notebooks: `fitquad.fit`, `fitquad.sweep` and `fitquad.compare` run the commands and return
what they made (a keyword naming a section takes a dict of its options; any other is an option as the command line
spells it). Bad input raises fitquad.InvalidInput with the command's one line. Examples: docs/how-it-works.md.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import html
import io
import json
import logging
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jsonargparse import ArgumentError
from lightning.fabric.utilities.exceptions import MisconfigurationException

from fitquad.checks.config_text import one_line
from fitquad.checks.validation import InvalidInput

# Sections of a config, whose keyword arguments are dicts of their options.
SECTIONS = ("data", "model", "trainer", "optimizer", "lr_scheduler", "sweep", "fit_diagnosis", "run_summary")


def command_line(config: str | Path | None, options: Mapping[str, Any]) -> list[str]:
    """The command-line arguments that `config` and keyword `options` stand for."""
    args = [] if config is None else ["--config", str(config)]
    for key, value in options.items():
        if key in SECTIONS and isinstance(value, Mapping):
            for option, setting in value.items():
                args += [f"--{key}.{option}", _as_typed(setting)]
        else:
            args += [f"--{key}", _as_typed(value)]
    return args


def _as_typed(value: Any) -> str:
    """A value as a shell user would type it: strings as they are, anything else as JSON (which is YAML, what
    jsonargparse reads command-line values as)."""
    return value if isinstance(value, str) else json.dumps(value)


@contextlib.contextmanager
def as_a_command_runs() -> Iterator[None]:
    """The set-up of the `fitquad` command, for one call: its warning filters and Lightning's log level are put
    back afterwards, so a notebook's own settings survive; bad input from any layer becomes one InvalidInput."""
    from fitquad.commands.parsing import LIGHTNING_LOGGERS, settle_warnings_and_yaml

    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        with warnings.catch_warnings():
            settle_warnings_and_yaml()
            # The arguments are passed on purpose, and sys.argv is the caller's own (a Jupyter kernel's, a script's):
            # LightningCLI's warning about giving both does not apply.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within")
            yield
    except (ArgumentError, MisconfigurationException) as error:
        raise InvalidInput(one_line(str(error))) from None
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _png(path: Path) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}" style="max-width:100%">'


def _figures(folder: Path) -> dict[str, Path]:
    return {path.stem: path for path in sorted(folder.glob("*.png"))}


@dataclass
class FitResult:
    """What `fitquad.fit` made: the trained module and everything the run folder holds."""

    run_folder: Path
    summary: dict  # summary.json
    losses: np.ndarray  # the training loss before each optimizer step (train_loss.csv)
    module: Any  # the trained QuadraticRegression
    datamodule: Any  # its QuadraticDataModule, with train_x, train_y, val_x, val_y
    trainer: Any  # the Lightning Trainer that ran the fit
    figures: dict[str, Path] = field(default_factory=dict)  # name -> PNG in the run folder

    @property
    def verdict(self) -> str:
        return self.summary.get("diagnosis", {}).get("verdict", "")

    def __repr__(self) -> str:
        return f"FitResult(verdict={self.verdict!r}, run_folder={str(self.run_folder)!r})"

    def _repr_html_(self) -> str:
        """Jupyter's view: the diagnosis in plain words and in numbers, then the figures."""
        diagnosis = self.summary.get("diagnosis", {})
        words, details = html.escape(diagnosis.get("in_plain_words", "")), html.escape(diagnosis.get("message", ""))
        images = "".join(_png(path) for path in self.figures.values())
        folder = html.escape(str(self.run_folder))
        return f"<p><b>{words}</b></p><p><code>{details}</code></p><p>Run folder: {folder}</p>{images}"


@dataclass
class TableResult:
    """What `fitquad.sweep` or `fitquad.compare` made: its table (rows of the CSV), as Markdown, and its figures."""

    run_folder: Path
    rows: list[dict]  # sweep.csv or compare.csv, one dict per row, numbers as floats
    markdown: str  # sweep.md or compare.md
    figures: dict[str, Path] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rows={len(self.rows)}, run_folder={str(self.run_folder)!r})"

    def _repr_html_(self) -> str:
        images = "".join(_png(path) for path in self.figures.values())
        folder = html.escape(str(self.run_folder))
        return f"<pre>{html.escape(self.markdown)}</pre><p>Run folder: {folder}</p>{images}"


def _rows(path: Path) -> list[dict]:
    def value(text: str) -> Any:
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            return text

    with path.open(newline="") as table:
        return [{name: value(text) for name, text in row.items()} for row in csv.DictReader(table)]


def fit(
    config: str | Path | None = None, *, x: Any = None, y: Any = None, quiet: bool = False, **options: Any
) -> FitResult:
    """`fitquad fit --config <config> <options>`, returning the trained module, the summary, the losses and the
    figures. Raises InvalidInput for bad input, TrainingDiverged if the fit blows up.

    x, y: your own points as arrays (lists, numpy arrays, tensors, pandas columns), instead of data.file: they are
    saved as runs/arrays/points-<hash>.npz and fitted as that file is (its held-out splits, its checks), so the run's
    config.yaml re-runs it. quiet: no lines printed (the summary, the diagnosis and the figures are in the result)."""
    from fitquad.callbacks.summary import run_folder
    from fitquad.commands.fit_cli import run_lightning_cli

    if (x is None) != (y is None):
        raise InvalidInput("fitquad.fit takes your own points as x and y together: give both, or neither")
    if x is not None:
        options = {**options, "data.file": str(saved_points(x, y))}
    args = ["fit", *command_line(config, options)]
    with as_a_command_runs(), contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        cli = run_lightning_cli(args, args)
    folder = run_folder(cli.trainer).resolve()  # the notebook may change folders; the result still points here
    summary = json.loads((folder / "summary.json").read_text())
    losses = np.array([float(line.split(",")[1]) for line in (folder / "train_loss.csv").read_text().split()[1:]])
    return FitResult(folder, summary, losses, cli.model, cli.datamodule, cli.trainer, _figures(folder))


def saved_points(x: Any, y: Any) -> Path:
    """x and y as a .npz file in runs/arrays/, named by its contents (the same points, the same file)."""
    from fitquad.commands.run_folders import RUNS_FOLDER

    try:
        arrays = {"x": np.asarray(x, dtype=np.float64).ravel(), "y": np.asarray(y, dtype=np.float64).ravel()}
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"x and y must be arrays of numbers: {one_line(str(error))}") from None
    if len(arrays["x"]) != len(arrays["y"]):
        raise InvalidInput(f"x and y must hold as many points: x has {len(arrays['x'])}, y {len(arrays['y'])}")
    digest = hashlib.sha256(arrays["x"].tobytes() + arrays["y"].tobytes()).hexdigest()[:16]
    path = Path(RUNS_FOLDER) / "arrays" / f"points-{digest}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        np.savez(path, **arrays)
    return path


def sweep(config: str | Path | None = None, **options: Any) -> TableResult:
    """`fitquad sweep --config <config> <options>`: its table and figures. A run that diverged is marked in the
    table, as the command leaves it (batched, its MSEs are those of its last good parameters; with one Trainer per
    value, inf or nan)."""
    from fitquad.commands.sweep_runs import sweep as run_sweep

    with as_a_command_runs():
        _, folder = run_sweep(command_line(config, options))
    folder = folder.resolve()
    return TableResult(folder, _rows(folder / "sweep.csv"), (folder / "sweep.md").read_text(), _figures(folder))


def compare(config: str | Path | None = None, **options: Any) -> TableResult:
    """`fitquad compare --config <config> <options>`: its table and its figure of the loss landscapes."""
    from fitquad.commands.compare_grid import run as run_compare

    with as_a_command_runs():
        folder = run_compare(command_line(config, options))[0].resolve()
    return TableResult(folder, _rows(folder / "compare.csv"), (folder / "compare.md").read_text(), _figures(folder))
