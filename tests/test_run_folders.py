"""The file system: a run folder that cannot be made, an existing run asked for by version, several fits of one
config started together, a full disk, and the leftovers of a killed save."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CONFIGS, run_fitquad
from fitquad.checks.checkpoint_io import SafeCheckpointIO, load_checkpoint
from fitquad.commands.cli import main

SGD_ARTICLE = str(CONFIGS / "sgd_article.yaml")
SHORT = ["--trainer.max_steps", "5"]


def fit_fails_with(arguments: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> str:
    monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", SGD_ARTICLE, *SHORT, *arguments])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fitquad: error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["--trainer.logger.init_args.save_dir", "runs_file"], ["'runs_file/sgd_article'", "Not a directory"]),
        (["--trainer.logger.init_args.name", "x" * 300], ["cannot be made", "File name too long"]),
        (["--trainer.logger.init_args.name", "a\0b"], ["cannot be made", "null"]),
    ],
    ids=["runs-is-a-file", "name-too-long", "name-with-nul"],
)
def test_a_run_folder_that_cannot_be_made_is_one_line(
    arguments: list[str], words: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    (tmp_path / "runs_file").write_text("not a folder")
    err = fit_fails_with(arguments, tmp_path, monkeypatch, capsys)
    assert "trainer.logger.init_args.save_dir/name" in err and all(word in err for word in words), err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_runs_folder_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    (tmp_path / "runs").mkdir(mode=0o500)
    assert "Permission denied" in fit_fails_with([], tmp_path, monkeypatch, capsys)


def test_an_explicit_version_that_holds_a_run_is_refused_and_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", SGD_ARTICLE, *SHORT])
    old_run = tmp_path / "runs" / "sgd_article" / "version_0"
    before = {path: path.read_bytes() for path in old_run.rglob("*") if path.is_file()}
    err = fit_fails_with(["--trainer.logger.init_args.version", "0"], tmp_path, monkeypatch, capsys)
    assert err.startswith("fitquad: error: trainer.logger.init_args.version 0 is the run already in")
    assert {path: path.read_bytes() for path in old_run.rglob("*") if path.is_file()} == before


@pytest.mark.slow
def test_fits_of_one_config_started_together_each_get_their_own_folder(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    fitquad = Path(sys.executable).with_name("fitquad")
    command = [str(fitquad), "fit", "--config", SGD_ARTICLE, *SHORT]
    fits = [subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [fit.communicate(timeout=300)[1] for fit in fits]
    assert [fit.returncode for fit in fits] == [0] * 3, errors
    folders = sorted((tmp_path / "runs" / "sgd_article").iterdir())
    assert [folder.name for folder in folders] == [f"version_{n}" for n in range(3)]
    for folder in folders:  # one run each: its own events file, summary and checkpoints
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1
        assert json.loads((folder / "summary.json").read_text())["optimizer_steps"] == 5


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_the_checkpoints_already_written(tmp_path: Path) -> None:
    def small_files() -> None:  # RLIMIT_FSIZE: a write past 48 KiB fails with EFBIG, as a full disk fails
        resource.setrlimit(resource.RLIMIT_FSIZE, (48 * 1024, 48 * 1024))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    arguments = ["fit", "--config", str(CONFIGS / "lesson3.yaml"), "--trainer.max_steps", "3000"]
    result = run_fitquad(*arguments, cwd=tmp_path, check=False, preexec_fn=small_files)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().startswith("fitquad: error: a file could not be written or read: ")
    assert "\n" not in result.stderr.strip() and "Traceback" not in result.stderr
    checkpoints = list((tmp_path / "runs").rglob("*.ckpt"))
    for checkpoint in checkpoints:  # whole, or not there at all
        assert load_checkpoint(checkpoint)["global_step"] > 0
    assert not list((tmp_path / "runs").rglob("*.partial"))


@pytest.mark.slow
def test_a_killed_saves_leftover_is_removed_and_a_live_one_kept(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    abandoned = folder / f".last.ckpt.{gone.pid}.partial"
    in_progress = folder / f".last.ckpt.{os.getppid()}.partial"  # a live process's save
    abandoned.write_bytes(b"half a checkpoint")
    in_progress.write_bytes(b"being written")
    SafeCheckpointIO().save_checkpoint({"state_dict": {}}, folder / "last.ckpt")
    assert not abandoned.exists() and in_progress.exists()


def test_logger_true_lands_under_the_configs_name_like_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Lightning's own logger=True would write ./lightning_logs; fitquad gives it its default, named after the config.
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", SGD_ARTICLE, *SHORT, "--trainer.logger", "true"])
    main(["fit", "--config", SGD_ARTICLE, *SHORT])
    assert sorted(p.name for p in (tmp_path / "runs" / "sgd_article").iterdir()) == ["version_0", "version_1"]
    assert not (tmp_path / "lightning_logs").exists()
