"""Shared test helpers: the plain PyTorch loop that fitquad is checked against, and running the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from fitquad.callbacks.record import TrainingRecord
from fitquad.core.data import QuadraticDataModule
from fitquad.core.fused import FusedQuadraticRegression
from fitquad.core.model import PolynomialModel
from fitquad.core.module import QuadraticRegression

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


HELPERS = Path(__file__).resolve().parent / "helpers"  # callbacks a test passes to the real command


def run_fitquad(*args: str, cwd: Path, check: bool = True, **popen_options) -> subprocess.CompletedProcess:
    """Run the real `fitquad` command in a subprocess, as a user would (tests/helpers importable)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(HELPERS)}
    fitquad = Path(sys.executable).with_name("fitquad")
    result = subprocess.run(
        [str(fitquad), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, **popen_options
    )
    if check and result.returncode != 0:
        raise AssertionError(f"fitquad {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def fitquad_in_process(*args: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The `fitquad` command's own entry point, in this process, from `cwd` (a subprocess costs ~4 s of
    imports; the tests that must see the real command use run_fitquad)."""
    from fitquad.commands.cli import main

    monkeypatch.chdir(cwd)
    main(list(args))


def assert_one_line_error(stderr: str, *names: str) -> None:
    """A bad-input report as fitquad prints it: one line, `fitquad: error: `, naming each of `names` (the option at
    fault, the value given, what is allowed). Its wording is free to change; what it names is not."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fitquad: error: "), stderr
    missing = [name for name in names if name not in lines[0]]
    assert not missing, f"{missing} not named in: {lines[0]}"


def only_run_folder(cwd: Path, name: str) -> Path:
    """The single version folder a test's fit left under runs/<name>/."""
    versions = sorted((cwd / "runs" / name).glob("version_*"))
    assert len(versions) == 1, versions
    return versions[0]


def newest_run_folder(cwd: Path, name: str) -> Path:
    """The newest version folder under runs/<name>/ (validate, test and predict make one each too)."""
    return max((cwd / "runs" / name).glob("version_*"), key=lambda path: int(path.name.split("_")[1]))


def read_summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def read_train_losses(folder: Path) -> list[float]:
    lines = (folder / "train_loss.csv").read_text().split()[1:]
    return [float(line.split(",")[1]) for line in lines]


def regression(fused_steps: int | None = None, **options) -> QuadraticRegression:
    """The textbook QuadraticRegression, or (fused_steps given) its FusedQuadraticRegression: the contract and the
    references are checked on both."""
    if fused_steps is None:
        return QuadraticRegression(**options)
    return FusedQuadraticRegression(fused_steps=fused_steps, **options)


def recorded_losses(trainer: L.Trainer) -> torch.Tensor:
    """Every optimizer step's loss of the trainer's last fit, as TrainingRecord recorded it."""
    return next(callback for callback in trainer.callbacks if isinstance(callback, TrainingRecord)).losses


def fit_in_process(
    model: QuadraticRegression,
    datamodule: QuadraticDataModule,
    tmp_path: Path,
    ckpt_path: str | Path | None = None,
    **trainer_kwargs,
) -> L.Trainer:
    """A quiet Trainer.fit with no logger or checkpoints, for comparing numbers; TrainingRecord records the losses."""
    trainer_kwargs["callbacks"] = [TrainingRecord(), *trainer_kwargs.get("callbacks", [])]
    options = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    options.update(trainer_kwargs)
    trainer = L.Trainer(**options)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


def plain_sgd_path(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, loss_fn: torch.nn.Module, **sgd
) -> torch.Tensor:
    """[bias, weights] of a PolynomialModel at the start and after every step of a hand-written full-batch
    torch.optim.SGD loop (no Lightning): one row per point of the path."""
    optimizer = torch.optim.SGD(model.parameters(), **sgd)

    def parameters() -> torch.Tensor:
        return torch.cat([model.linear.bias.detach(), model.linear.weight.detach().flatten()])

    rows = [parameters()]
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
        rows.append(parameters())
    return torch.stack(rows)


def article_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The SGD article's 50 points, computed here with the article's own numpy code."""
    np.random.seed(20240215)
    x = np.random.randn(50).astype(np.float32)
    y = (0.75 * x**2 + 1.0 * x + 2.0 + 0.3 * np.random.randn(50)).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y)


def plain_loop(batches, loss_fn, steps, clip=None, **sgd) -> tuple[list[float], torch.nn.Linear]:
    """The article's loop: torch.nn.Linear(1, 1) from (w, b) = (6, -3), torch.optim.SGD, no Lightning."""
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(6.0)
        model.bias.fill_(-3.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, **sgd)
    losses = []
    for step in range(steps):
        x, y = batches(step)
        optimizer.zero_grad()
        loss = loss_fn(model(x.unsqueeze(1)), y.unsqueeze(1))
        loss.backward()
        if clip == "norm":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        elif clip == "value":
            torch.nn.utils.clip_grad_value_(model.parameters(), 0.5)
        optimizer.step()
        losses.append(loss.item())
    return losses, model


def lesson3_data() -> QuadraticDataModule:
    """configs/lesson3.yaml's data: t = 0..19, 0.75·(t − 9.5)² + 1 + 3·N(0, 1), seed 42."""
    datamodule = QuadraticDataModule(
        true_a=0.75,
        true_b=-14.25,
        true_c=68.6875,
        noise_std=3.0,
        x_distribution="grid",
        x_min=0.0,
        x_max=19.0,
        n_train=20,
        n_val=20,
        seed=42,
    )
    datamodule.setup("fit")
    return datamodule


def scaled_model(degree: int, scaling: str, x: torch.Tensor) -> PolynomialModel:
    model = PolynomialModel(degree, scaling)
    model.fit_feature_scaling(x)
    return model


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
