"""SIGTERM wherever it lands (before training, in the sanity check, as a fit finishes, during a sweep or a
comparison): the real `fitquad` command exits 143, the shell's status for it, with no traceback, keeping
what it had finished. The signal is sent by tests/helpers/signal_at.py from a Lightning hook, so each
test hits the moment it names."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CONFIGS, HELPERS, run_fitquad
from fitquad.checks.checkpoint_io import load_checkpoint

SIGTERM_STATUS = 128 + signal.SIGTERM
SGD_ARTICLE = str(CONFIGS / "sgd_article.yaml")


def signal_at(hook: str, skip: int = 0) -> list[str]:
    return [
        "--trainer.callbacks+=signal_at.SignalAt",
        "--trainer.callbacks.hook",
        hook,
        "--trainer.callbacks.skip",
        str(skip),
    ]


def assert_stopped_by_sigterm(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == SIGTERM_STATUS, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.slow
def test_sigterm_during_the_sanity_check_saves_after_the_first_step(tmp_path: Path) -> None:
    result = run_fitquad("fit", "--config", SGD_ARTICLE, *signal_at("on_sanity_check_start"), cwd=tmp_path, check=False)
    assert_stopped_by_sigterm(result)
    checkpoint = tmp_path / "runs" / "sgd_article" / "version_0" / "checkpoints" / "interrupted.ckpt"
    assert load_checkpoint(checkpoint)["global_step"] == 1
    assert "SIGTERM at step 1: checkpoint saved" in result.stdout + result.stderr


@pytest.mark.slow
def test_sigterm_before_training_stops_at_once_with_nothing_to_save(tmp_path: Path) -> None:
    result = run_fitquad("fit", "--config", SGD_ARTICLE, *signal_at("setup"), cwd=tmp_path, check=False)
    assert_stopped_by_sigterm(result)
    assert result.stderr.strip().endswith("fitquad: stopped by SIGTERM")
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.slow
def test_sigterm_as_a_fit_finishes_keeps_its_results_and_still_exits_143(tmp_path: Path) -> None:
    result = run_fitquad("fit", "--config", SGD_ARTICLE, *signal_at("on_train_end"), cwd=tmp_path, check=False)
    assert_stopped_by_sigterm(result)
    folder = tmp_path / "runs" / "sgd_article" / "version_0"
    assert (folder / "summary.json").is_file() and (folder / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_sigterm_during_a_sweep_keeps_the_finished_runs(tmp_path: Path) -> None:
    # The second run's training start: the first run is finished, the second saves a checkpoint and stops.
    sweep = ["--config", str(CONFIGS / "capacity.yaml"), "--sweep.values", "[1, 2, 3]", "--trainer.max_steps", "30"]
    result = run_fitquad("sweep", *sweep, *signal_at("on_train_start", skip=1), cwd=tmp_path, check=False)
    assert_stopped_by_sigterm(result)
    folder = tmp_path / "runs" / "capacity" / "version_0"
    rows = (folder / "sweep.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1"]
    assert (folder / "degree_2" / "checkpoints" / "interrupted.ckpt").is_file()
    assert not (folder / "degree_3").exists()
    assert "interrupted after 1 of 3 runs: stopped by SIGTERM" in result.stdout


@pytest.mark.slow
def test_sigterm_during_compare_exits_143_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(HELPERS)}
    fitquad = Path(sys.executable).with_name("fitquad")
    command = [str(fitquad), "compare", "--config", str(CONFIGS / "sgd_article_grid.yaml"), "--max_steps", "400"]
    with subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as p:
        line = p.stdout.readline()  # "fitquad: compare ...: starting", then "fitquad: compare folder ..."
        while line and "compare folder" not in line:
            line = p.stdout.readline()
        assert "compare folder" in line, line  # the grid starts training now
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=120)
    assert p.returncode == SIGTERM_STATUS, err
    assert err.strip() == "fitquad: stopped by SIGTERM"
    finished = re.search(r"interrupted by SIGTERM after (\d+) of 20 runs", out)
    assert finished, out
    folder = tmp_path / "runs" / "sgd_article_grid" / "version_0"
    assert (folder / "config.yaml").is_file() and not (folder / "compare.png").exists()
    if int(finished.group(1)):  # the finished runs are tabulated, the table marked as a part of the grid
        table = (folder / "compare.md").read_text()
        assert table.startswith(f"**{finished.group(0)}**")
        assert len((folder / "compare.csv").read_text().splitlines()) == 1 + int(finished.group(1))


@pytest.mark.slow
def test_ctrl_c_after_a_sweep_run_finished_keeps_that_run(tmp_path: Path) -> None:
    sweep = ["--config", str(CONFIGS / "capacity.yaml"), "--sweep.values", "[1, 2]", "--trainer.max_steps", "5"]
    ctrl_c = [*signal_at("on_train_end"), "--trainer.callbacks.signal_name", "SIGINT"]
    result = run_fitquad("sweep", *sweep, *ctrl_c, cwd=tmp_path, check=False)
    assert result.returncode == 128 + signal.SIGINT and "Traceback" not in result.stderr, result.stderr
    rows = (tmp_path / "runs" / "capacity" / "version_0" / "sweep.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1"]  # its training was done: tabulated, not thrown away


@pytest.mark.slow
def test_sigterm_during_a_batched_sweep_exits_143_and_keeps_its_config(tmp_path: Path) -> None:
    # The batched fit of all the sweep's runs (no helper callback here: it would make the sweep unbatched).
    fitquad = Path(sys.executable).with_name("fitquad")
    command = [str(fitquad), "sweep", "--config", str(CONFIGS / "weight_decay.yaml"), "--trainer.max_steps", "100000"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as p:
        line = p.stdout.readline()
        while line and "as one batched fit" not in line:
            line = p.stdout.readline()
        assert "as one batched fit" in line, line
        time.sleep(1.0)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=120)
    assert p.returncode == SIGTERM_STATUS, err
    assert err.strip() == "fitquad: stopped by SIGTERM"
    assert "fitquad sweep: interrupted after 0 of 7 runs: stopped by SIGTERM" in out  # all 7 train at once
    folder = tmp_path / "runs" / "weight_decay" / "version_0"
    assert (folder / "config.yaml").is_file() and not (folder / "sweep.csv").exists()


@pytest.mark.slow
def test_ctrl_c_while_pytorch_and_lightning_load_is_one_line(tmp_path: Path) -> None:
    # Ctrl-C in the first seconds of a command, after "starting (loading PyTorch and Lightning)": one line, exit 130.
    fitquad = str(Path(sys.executable).with_name("fitquad"))
    process = subprocess.Popen(
        [fitquad, "fit", "--config", str(CONFIGS / "lesson3.yaml")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    first = process.stdout.readline()
    assert first.endswith("starting (loading PyTorch and Lightning)\n")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT
    assert err.splitlines() == ["fitquad: stopped by Ctrl-C"], err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_during_lr_find_stops_it_after_the_step_in_progress(tmp_path: Path, signum: signal.Signals) -> None:
    # The range test runs inside Lightning's on_fit_start, before Lightning watches for SIGTERM and with the Trainer's
    # callbacks set aside: without fitquad's check it ran all of its steps after the signal.
    fitquad = str(Path(sys.executable).with_name("fitquad"))
    options = ["--lr_find.num_training", "3000000", "--lr_find.max_lr", "1e-4"]  # minutes of steps, never diverging
    command = [fitquad, "lr-find", "--config", str(CONFIGS / "lesson3.yaml"), *options]
    with subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        config = tmp_path / "runs" / "lesson3" / "version_0" / "config.yaml"  # written as the range test starts
        deadline = time.monotonic() + 120
        while not config.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        p.send_signal(signum)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signum, err
    assert err.strip() == f"fitquad: stopped by {signum.name}", err  # no Lightning warning, no traceback
    assert sorted(path.name for path in config.parent.iterdir()) == ["config.yaml"]  # no finder checkpoint left
