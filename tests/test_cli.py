"""The real `fitquad` command in a subprocess, as a user runs it, on every shipped config."""

import csv
import fcntl
import json
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import (
    CONFIGS,
    article_data,
    assert_one_line_error,
    fitquad_in_process,
    newest_run_folder,
    only_run_folder,
    plain_loop,
    read_summary,
    read_train_losses,
    run_fitquad,
)
from fitquad.commands.cli import main


@pytest.fixture(scope="module")
def lesson3_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("lesson3")
    result = run_fitquad("fit", "--config", str(CONFIGS / "lesson3.yaml"), cwd=cwd)
    return cwd, only_run_folder(cwd, "lesson3"), result


@pytest.mark.slow
def test_lesson3_leaves_a_complete_run_folder(lesson3_run):
    cwd, folder, result = lesson3_run
    relative = folder.relative_to(cwd)
    assert f"fitquad: run folder {relative}" in result.stdout
    assert f"fitquad: run finished in {relative}" in result.stdout
    assert list(folder.glob("events.out.tfevents.*"))
    assert (folder / "checkpoints" / "last.ckpt").is_file()
    summary = read_summary(folder)
    assert (cwd / summary["best_checkpoint"]).is_file()
    assert set(summary["coefficients"]) == {"a", "b", "c"}
    assert summary["optimizer_steps"] == len(read_train_losses(folder)) > 0
    # What ended it, said and kept: lesson3's EarlyStopping, with the best checkpoint.
    assert summary["ended_by"].startswith("EarlyStopping: val/loss had not improved on its best")
    ended = f"fitquad: ended by {summary['ended_by']} after {summary['optimizer_steps']} steps; best checkpoint "
    assert ended + summary["best_checkpoint"] in result.stdout.splitlines()
    # The saved config names the module it trained (the textbook one) and every option.
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert saved["model"]["class_path"] in ("fitquad.QuadraticRegression", "fitquad.core.module.QuadraticRegression")
    assert saved["model"]["init_args"]["feature_scaling"] == "standardize" and saved["data"]["n_train"] == 20


@pytest.mark.slow
def test_a_runs_saved_config_re_runs_it_into_a_new_folder(lesson3_run, tmp_path):
    # As the README says: `fitquad fit --config runs/…/config.yaml` runs it again, beside the first run.
    _, folder, _ = lesson3_run
    shutil.copytree(folder.parents[1], tmp_path / "runs")
    saved = tmp_path / "runs" / "lesson3" / folder.name / "config.yaml"
    run_fitquad("fit", "--config", str(saved), "--trainer.max_steps", "20", cwd=tmp_path)
    versions = sorted(path.name for path in (tmp_path / "runs" / "lesson3").iterdir())
    assert versions == [folder.name, "version_1"]
    rerun = read_summary(tmp_path / "runs" / "lesson3" / "version_1")
    assert rerun["optimizer_steps"] == 20 and set(rerun["coefficients"]) == {"a", "b", "c"}


@pytest.mark.slow
def test_lesson3_fit_is_within_one_percent_of_least_squares(lesson3_run):
    _, folder, _ = lesson3_run
    summary = read_summary(folder)
    t = np.arange(20, dtype=np.float32)
    speed = (0.75 * t**2 - 14.25 * t + 68.6875 + 3.0 * np.random.RandomState(42).randn(20)).astype(np.float32)
    design = np.vander(t.astype(np.float64), 3, increasing=True)
    optimum, *_ = np.linalg.lstsq(design, speed.astype(np.float64), rcond=None)
    optimum_mse = np.mean((design @ optimum - speed) ** 2)
    trained = np.array([summary["coefficients"][name] for name in ("c", "b", "a")])
    assert optimum_mse <= np.mean((design @ trained - speed) ** 2) <= 1.01 * optimum_mse
    assert summary["train_mse"] == pytest.approx(optimum_mse, rel=0.01)  # as the run measured it, in float32


@pytest.mark.slow
def test_sgd_article_reproduces_the_articles_loss_sequence_exactly(tmp_path):
    run_fitquad("fit", "--config", str(CONFIGS / "sgd_article.yaml"), cwd=tmp_path)
    folder = only_run_folder(tmp_path, "sgd_article")
    x, y = article_data()
    expected_losses, expected = plain_loop(lambda step: (x, y), torch.nn.MSELoss(), 100)
    assert read_train_losses(folder) == expected_losses  # float32 values, bit for bit
    summary = read_summary(folder)
    assert summary["coefficients"] == {"b": expected.bias.item(), "w": expected.weight.item()}
    assert summary["optimizer_steps"] == 100 and summary["epochs"] == 100
    assert summary["ended_by"] == "trainer.max_epochs (100)"


@pytest.mark.slow
def test_lesson3_raw_stalls_far_above_the_optimum(tmp_path):
    run_fitquad("fit", "--config", str(CONFIGS / "lesson3_raw.yaml"), "--trainer.max_steps", "3000", cwd=tmp_path)
    summary = read_summary(only_run_folder(tmp_path, "lesson3_raw"))
    assert summary["optimizer_steps"] == 3000
    assert summary["train_mse"] > 10 * 4.9  # this data's least-squares MSE is about 4.9


@pytest.mark.slow
def test_print_config_round_trips(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(CONFIGS / "sgd_article.yaml"), "--model.lr", "0.05", "--print_config"])
    printed = capsys.readouterr().out
    config = yaml.safe_load(printed)
    assert config["model"]["init_args"]["lr"] == 0.05 and config["data"]["seed"] == 20240215
    # The name the run lands under, as it will be used; the printed config, re-run, lands there too.
    assert config["trainer"]["logger"]["init_args"]["name"] == "sgd_article"
    (tmp_path / "printed.yaml").write_text(printed)
    run_fitquad("fit", "--config", "printed.yaml", "--trainer.max_epochs", "3", cwd=tmp_path)
    assert read_summary(only_run_folder(tmp_path, "sgd_article"))["optimizer_steps"] == 3


@pytest.mark.parametrize("module", ["QuadraticRegression", "FusedQuadraticRegression"])
def test_trainer_gradient_clipping_clips_as_torch_does_for_either_module(tmp_path, monkeypatch, module):
    # The textbook module: Lightning clips (automatic optimization), trainer.gradient_clip_val stays as given. The
    # fused one: Lightning refuses that option under manual optimization, so it becomes fitquad's callback. Either
    # way the losses are a plain loop's with torch's clipping.
    clip = ["--trainer.gradient_clip_val", "0.5", "--trainer.gradient_clip_algorithm", "value"]
    args = ["--config", str(CONFIGS / "sgd_article.yaml"), "--model", module, "--trainer.max_epochs", "5", *clip]
    fitquad_in_process("fit", *args, cwd=tmp_path, monkeypatch=monkeypatch)
    folder = only_run_folder(tmp_path, "sgd_article")
    trainer = yaml.safe_load((folder / "config.yaml").read_text())["trainer"]
    clipping = {"gradient_clip_val": 0.5, "gradient_clip_algorithm": "value"}
    if module == "QuadraticRegression":
        assert {name: trainer[name] for name in clipping} == clipping
    else:
        assert {"class_path": "fitquad.callbacks.clipping.GradientClipping", "init_args": clipping} in trainer[
            "callbacks"
        ]
    x, y = article_data()
    expected_losses, _ = plain_loop(lambda step: (x, y), torch.nn.MSELoss(), 5, clip="value")
    assert read_train_losses(folder) == expected_losses


@pytest.mark.slow
def test_validate_test_predict_and_resume_from_a_checkpoint(lesson3_run, tmp_path, capsys, monkeypatch):
    _, folder, _ = lesson3_run
    last = str(folder / "checkpoints" / "last.ckpt")
    config = str(CONFIGS / "lesson3.yaml")
    monkeypatch.chdir(tmp_path)  # validate, test and predict in this process (each subprocess costs ~4 s)
    main(["validate", "--config", config, "--ckpt_path", last])
    assert "val/mse" in capsys.readouterr().out
    main(["test", "--config", config, "--ckpt_path", last])
    assert "test/mse" in capsys.readouterr().out
    main(["predict", "--config", config, "--ckpt_path", last])
    assert f"fitquad: predictions written to {folder / 'predictions.csv'}" in capsys.readouterr().out
    # Results beside the run they evaluate, and no new run folder or TensorBoard run.
    assert not (tmp_path / "runs").exists()
    validated = json.loads((folder / "validate_metrics.json").read_text())
    assert validated["ckpt_path"] == last and validated["val/mse"] == pytest.approx(read_summary(folder)["val_mse"])
    assert "test/mse" in json.loads((folder / "test_metrics.json").read_text())
    predictions = np.loadtxt(folder / "predictions.csv", delimiter=",", skiprows=1)
    coefficients = read_summary(folder)["coefficients"]
    x = predictions[:, 0]
    expected = coefficients["a"] * x**2 + coefficients["b"] * x + coefficients["c"]
    np.testing.assert_allclose(predictions[:, 1], expected, rtol=1e-4)
    # Resume: the step counter carries on from the checkpoint to the new max_steps.
    steps_before = read_summary(folder)["optimizer_steps"]
    args = ["--ckpt_path", last, "--trainer.max_steps", str(steps_before + 30), "--trainer.callbacks", "[]"]
    run_fitquad("fit", "--config", config, *args, cwd=tmp_path)  # the real command, as a user resumes
    resumed = newest_run_folder(tmp_path, "lesson3")
    assert read_summary(resumed)["optimizer_steps"] == steps_before + 30
    steps = [int(line.split(",")[0]) for line in (resumed / "train_loss.csv").read_text().split()[1:]]
    assert steps == list(range(steps_before + 1, steps_before + 31))  # numbered on, as in TensorBoard


def test_any_torch_optimizer_from_the_command_line(tmp_path, monkeypatch):
    args = ["--optimizer", "Adam", "--optimizer.lr", "0.5", "--trainer.max_epochs", "40"]
    fitquad_in_process(
        "fit", "--config", str(CONFIGS / "sgd_article.yaml"), *args, cwd=tmp_path, monkeypatch=monkeypatch
    )
    folder = only_run_folder(tmp_path, "sgd_article")
    assert yaml.safe_load((folder / "config.yaml").read_text())["optimizer"]["class_path"] == "torch.optim.Adam"
    losses = read_train_losses(folder)
    assert len(losses) == 40 and losses[-1] < losses[0] / 10
    # TensorBoard's HPARAMS names the optimizer used, not the model's unused SGD settings.
    events = EventAccumulator(str(folder))
    events.Reload()
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    )
    hparams = {k: v.string_value or v.number_value for k, v in start.session_start_info.hparams.items()}
    assert hparams["optimizer"] == "Adam" and hparams["optimizer.lr"] == 0.5 and "momentum" not in hparams
    assert hparams["lr_scheduler"] == "none" and hparams["precision"] == "32-true" and "_instantiator" not in hparams


def test_an_lr_scheduler_from_the_command_line_steps_the_models_sgd(tmp_path, monkeypatch):
    # LightningCLI drops an --lr_scheduler given without --optimizer; fitquad gives it the model's SGD.
    args = ["--lr_scheduler", "StepLR", "--lr_scheduler.step_size", "5", "--lr_scheduler.gamma", "0.5"]
    args += ["--trainer.max_steps", "120", "--trainer.callbacks", "[]"]
    fitquad_in_process("fit", "--config", str(CONFIGS / "lesson3.yaml"), *args, cwd=tmp_path, monkeypatch=monkeypatch)
    events = EventAccumulator(str(only_run_folder(tmp_path, "lesson3")))
    events.Reload()
    lr = {event.step: event.value for event in events.Scalars("train/lr")}
    # 10 steps an epoch, halved every 5 epochs; SGD's own momentum and lr from lesson3.yaml (0.35).
    assert lr[50] == pytest.approx(0.35) and lr[51] == pytest.approx(0.175) and lr[120] == pytest.approx(0.0875)


@pytest.mark.slow
def test_a_default_fit_prints_only_fitquads_lines(lesson3_run):
    # No Lightning banners, adverts, model summary or progress bar (not a terminal): fitquad's own lines.
    _, folder, result = lesson3_run
    lines = result.stdout.splitlines()
    assert lines and all(line.startswith("fitquad: ") for line in lines), lines
    for banner in ("GPU available", "Seed set", "Tip", "Total params", "Epoch"):
        assert banner not in result.stdout + result.stderr
    assert lines[-1].startswith(f"fitquad: run finished in {folder.name}") or "run finished" in lines[-1]


@pytest.mark.slow
def test_lightning_info_brings_lightnings_lines_back(tmp_path):
    args = ["--trainer.max_steps", "10", "--lightning_info", "true"]
    result = run_fitquad("fit", "--config", str(CONFIGS / "lesson3.yaml"), *args, cwd=tmp_path)
    assert "GPU available" in result.stdout + result.stderr


@pytest.mark.slow
def test_help_lists_every_command_and_describes_every_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(["--help"])
    overview = capsys.readouterr().out
    assert exit_status.value.code == 0
    for command in ("fit", "validate", "test", "predict", "sweep", "compare", "lr-find"):
        assert f"\n  {command} " in overview
    main(["--version"])
    assert capsys.readouterr().out.startswith("fitquad 0.")
    with pytest.raises(SystemExit) as exit_status:
        main([])
    assert exit_status.value.code == 2 and "commands:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["lr-find", "--help"])
    assert capsys.readouterr().out.startswith("usage: fitquad lr-find")
    # The real command, as a user asks it: every option with its description; the model's (model.class_path picks
    # the module) with --model.help.
    fit_help = " ".join(run_fitquad("fit", "--help", cwd=tmp_path).stdout.split())
    for described in (
        "--model.help [CLASS_PATH_OR_NAME] Show the help for the given subclass of QuadraticRegression",
        "--data.noise_std NOISE_STD Standard deviation",
        "--fit_diagnosis.figures {true,false} Draw the fit",
        "--checkpoint_on_signal.filename FILENAME The checkpoint's file name",
    ):
        assert described in fit_help
    # fitquad's own sections first (the data's, the model's, its always-on callbacks'), then the Trainer's hundred.
    sections = ("--data.noise_std NOISE_STD Standard", "--model.help [CLASS_PATH_OR_NAME] Show",
                "--fit_diagnosis.figures {true,false} Draw", "--trainer.accelerator ACCELERATOR ")  # fmt: skip
    order = [fit_help.index(option) for option in sections]
    assert order == sorted(order)
    model_help = " ".join(run_fitquad("fit", "--model.help", "QuadraticRegression", cwd=tmp_path).stdout.split())
    assert "--model.momentum MOMENTUM SGD momentum" in model_help
    fused_help = " ".join(run_fitquad("fit", "--model.help", "FusedQuadraticRegression", cwd=tmp_path).stdout.split())
    assert "--model.fused_steps FUSED_STEPS Optimizer steps taken inside one training_step" in fused_help


@pytest.mark.slow
def test_the_first_line_comes_before_pytorch_loads(tmp_path):
    # The entry point imports neither torch nor Lightning before it has said what is about to run (they take
    # seconds to import); `fitquad --help` needs neither at all.
    probe = "import sys, fitquad.commands.entry; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"
    result = run_fitquad("fit", "--config", str(CONFIGS / "sgd_article.yaml"), "--trainer.max_steps", "2", cwd=tmp_path)
    arguments = f"fit --config {CONFIGS / 'sgd_article.yaml'} --trainer.max_steps 2"
    assert result.stdout.splitlines()[0] == f"fitquad: {arguments}: starting (loading PyTorch and Lightning)"


@pytest.mark.slow
def test_a_successful_command_leaves_every_writer_flushed(lesson3_run):
    """`fitquad` ends a successful run as Python ends (every logger's and atexit handler's last work runs): nothing
    any writer buffered is lost. The TensorBoard file holds the last step, the figures and the final metrics."""
    cwd, folder, result = lesson3_run
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    summary = read_summary(folder)
    assert events.Scalars("train/loss")[-1].step == summary["optimizer_steps"]
    assert events.Scalars("final/val_mse")[-1].value == pytest.approx(summary["val_mse"], rel=1e-6)
    assert events.Scalars("final/val_mse")[-1].step == summary["optimizer_steps"]  # beside the curves' ends
    assert "custom_scalars__config__" in events.Tags()["tensors"]  # CUSTOM SCALARS: train vs validation, together
    assert {"diagnosis/fit", "diagnosis/residuals"} <= set(events.Tags()["images"])
    assert result.stdout.rstrip().splitlines()[-1].startswith("fitquad: run finished in")


def run_in_a_terminal(*args: str, cwd: Path) -> str:
    """The real command under a pseudo-terminal of 120 columns (stdin, stdout and stderr all on it), as a learner
    types it: everything it wrote, as the terminal received it."""
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    fitquad = str(Path(sys.executable).with_name("fitquad"))
    process = subprocess.Popen([fitquad, *args], cwd=cwd, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    received = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed: the command has ended
            break
        if not chunk:
            break
        received.append(chunk)
    os.close(master)
    assert process.wait(timeout=120) == 0
    return b"".join(received).decode("utf-8", "replace")


@pytest.mark.slow
def test_in_a_terminal_the_progress_bar_and_every_line_of_the_diagnosis_show(tmp_path):
    shown = run_in_a_terminal("fit", "--config", str(CONFIGS / "lesson3.yaml"), cwd=tmp_path)
    assert "it/s" in shown  # the progress bar, on a terminal
    lines = [line.strip("\r") for line in shown.split("\n")]
    for start in ("before training:", "conditioning (", "reference:", "run folder runs/lesson3/version_0",
                  "diagnosis:", "details:", "run finished in runs/lesson3/version_0"):  # fmt: skip
        assert any(line.startswith(f"fitquad: {start}") for line in lines), start


@pytest.mark.slow
def test_through_a_pipe_every_line_shows_and_no_progress_bar(lesson3_run):
    # `fitquad fit … | tee run.log`: stdout is a pipe, so no bar frames, and every line of the diagnosis.
    _, _, result = lesson3_run
    assert "it/s" not in result.stdout and "\r" not in result.stdout
    assert "fitquad: diagnosis:" in result.stdout and "fitquad: run finished in" in result.stdout


@pytest.mark.slow
def test_a_finished_command_runs_every_atexit_handler(tmp_path):
    # A logger's final upload (W&B, MLflow) runs at exit: the command lets Python shut down as usual.
    marker = tmp_path / "marker.txt"
    callback = ["--trainer.callbacks+=at_exit.WriteAtExit", "--trainer.callbacks.path", str(marker)]
    run_fitquad("fit", "--config", str(CONFIGS / "lesson3.yaml"), "--trainer.max_steps", "5", *callback, cwd=tmp_path)
    assert marker.read_text() == "written at exit\n"


def test_every_logger_gets_every_per_step_scalar_and_the_hyperparameters(tmp_path, monkeypatch):
    # --trainer.logger [tensorboard, csv]: not only the first logger (Lightning's trainer.logger).
    loggers = (
        "[{class_path: lightning.pytorch.loggers.TensorBoardLogger, init_args: {save_dir: runs, name: two}}, "
        "{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: runs, name: two}}]"
    )
    args = ["--config", str(CONFIGS / "lesson3.yaml"), "--trainer.max_steps", "20", "--trainer.logger", loggers]
    fitquad_in_process("fit", *args, cwd=tmp_path, monkeypatch=monkeypatch)
    tensorboard, csv_folder = sorted((tmp_path / "runs" / "two").iterdir())
    events = EventAccumulator(str(tensorboard))
    events.Reload()
    with open(csv_folder / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    for tag in ("train/loss", "train/lr", "train/grad_norm", "params/a", "reference/relative_gap", "val/mse"):
        in_csv = [(int(row["step"]), float(row[tag])) for row in rows if row[tag]]
        in_tensorboard = [(event.step, event.value) for event in events.Scalars(tag)]
        assert in_csv and [step for step, _ in in_csv] == [step for step, _ in in_tensorboard], tag
        assert [value for _, value in in_csv] == pytest.approx([value for _, value in in_tensorboard], rel=1e-6)
    assert any(row["final/val_mse"] for row in rows)
    assert yaml.safe_load((csv_folder / "hparams.yaml").read_text())["optimizer.lr"] == 0.35


def test_a_fit_without_validation_points_ends_cleanly(tmp_path, monkeypatch):
    # No validation points: no final/val_mse to put beside the hyperparameters (TensorBoard refuses a None).
    fitquad_in_process("fit", "--data.n_val", "0", "--trainer.max_steps", "5", cwd=tmp_path, monkeypatch=monkeypatch)
    summary = read_summary(only_run_folder(tmp_path, "fitquad"))
    assert summary["val_mse"] is None and summary["optimizer_steps"] == 5


def test_fast_dev_run_writes_fitquads_files_into_the_run_folder(tmp_path, monkeypatch):
    # Lightning stands a logger that saves nothing (its save_dir is None) in for the configured one: fitquad's files
    # go into the run folder all the same, and nothing into the current folder.
    config = ["--config", str(CONFIGS / "lesson3.yaml"), "--trainer.fast_dev_run", "true"]
    fitquad_in_process("fit", *config, "--fit_diagnosis.figures", "false", cwd=tmp_path, monkeypatch=monkeypatch)
    assert read_summary(only_run_folder(tmp_path, "lesson3"))["optimizer_steps"] == 1
    # A version the config names is the run folder all the same (it wrote into ./None before).
    version = ["--trainer.logger.init_args.version", "7", "--fit_diagnosis.figures", "false"]
    fitquad_in_process("fit", *config, *version, cwd=tmp_path, monkeypatch=monkeypatch)
    assert read_summary(tmp_path / "runs" / "lesson3" / "version_7")["optimizer_steps"] == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["runs"]


@pytest.mark.parametrize("batched", ["true", "false"])
def test_a_sweep_under_fast_dev_run_writes_each_values_summary(tmp_path, monkeypatch, batched):
    config = ["--config", str(CONFIGS / "capacity.yaml"), "--sweep.values", "[1, 2]", "--sweep.batched", batched]
    fitquad_in_process("sweep", *config, "--trainer.fast_dev_run", "true", cwd=tmp_path, monkeypatch=monkeypatch)
    folder = only_run_folder(tmp_path, "capacity")
    assert all((folder / f"degree_{d}" / "summary.json").is_file() for d in (1, 2))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["runs"]


def test_lr_find_refuses_fast_dev_run_which_skips_the_finder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["lr-find", "--config", str(CONFIGS / "lesson3.yaml"), "--trainer.fast_dev_run", "true"])
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "trainer.fast_dev_run must be false for lr-find")


def test_a_callback_with_a_device_default_writes_a_config_that_re_runs(tmp_path, monkeypatch):
    # StochasticWeightAveraging's device defaults to torch.device("cpu"), which jsonargparse cannot write: it wrote
    # "Unable to serialize instance cpu" into config.yaml, with a warning. The device goes in by its name.
    swa = ["--trainer.callbacks+=StochasticWeightAveraging", "--trainer.callbacks.swa_lrs", "0.01"]
    config = ["--config", str(CONFIGS / "lesson3.yaml"), "--trainer.max_epochs", "3"]
    fitquad_in_process("fit", *config, *swa, "--fit_diagnosis.figures", "false", cwd=tmp_path, monkeypatch=monkeypatch)
    saved = yaml.safe_load((only_run_folder(tmp_path, "lesson3") / "config.yaml").read_text())
    (callback,) = [c for c in saved["trainer"]["callbacks"] if c["class_path"].endswith("StochasticWeightAveraging")]
    assert callback["init_args"]["device"] == "cpu"
