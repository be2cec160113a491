"""Checkpoints that load but cannot be used: weights of another model, and training state (steps, loop
counters, data-loader position, optimizer, schedulers, callbacks) that is not what Lightning and fitquad
write. Each is one line naming the file and what is wrong, status 2, before a run folder is made."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, assert_one_line_error, fit_in_process
from fitquad.checks.checkpoint_io import SafeCheckpointIO
from fitquad.commands.cli import main
from fitquad.core.data import QuadraticDataModule
from fitquad.core.module import QuadraticRegression

SGD_ARTICLE = str(CONFIGS / "sgd_article.yaml")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> dict:
    """A full checkpoint of a 5-step sgd_article fit, mini-batches (so its data-loader state is saved)."""
    folder = tmp_path_factory.mktemp("checkpoint")
    model = QuadraticRegression(degree=1, feature_scaling="none", init_coefficients=[-3.0, 6.0], lr=0.1)
    trainer = fit_in_process(
        model, QuadraticDataModule(batch_size=7), folder, max_steps=5, plugins=[SafeCheckpointIO()]
    )
    trainer.save_checkpoint(folder / "full.ckpt", weights_only=False)
    return torch.load(folder / "full.ckpt", weights_only=True)


def fit_loop(c: dict) -> dict:
    return c["loops"]["fit_loop"]


def drop_hyperparameters_and(change: Callable[[dict], None]) -> Callable[[dict], None]:
    def changed(c: dict) -> None:
        c.pop("hyper_parameters")  # so that only the weights themselves can tell
        change(c)

    return changed


# (what is changed in a real checkpoint, words the one line must contain)
DAMAGE: dict[str, tuple[Callable[[dict], None], str]] = {
    "weight-shape": (
        drop_hyperparameters_and(lambda c: c["state_dict"].__setitem__("model.linear.weight", torch.zeros(1, 3))),
        "holds model.linear.weight of shape [1, 3], and this config's model has [1, 1]",
    ),
    "missing-weight": (
        drop_hyperparameters_and(lambda c: c["state_dict"].pop("model.linear.bias")),
        "has no model.linear.bias",
    ),
    "extra-weight": (
        lambda c: c["state_dict"].__setitem__("extra", torch.zeros(1)),
        "weights this config's model does not have: extra",
    ),
    "negative-step": (lambda c: c.__setitem__("global_step", -1), "its global_step (an integer ≥ 0)"),
    "text-epoch": (lambda c: c.__setitem__("epoch", "three"), "its epoch (an integer ≥ 0)"),
    "no-fit-loop": (lambda c: c["loops"].pop("fit_loop"), "its loop state (loops.fit_loop"),
    "text-counter": (
        lambda c: fit_loop(c)["epoch_progress"]["total"].__setitem__("ready", "x"),
        "loop counter loops.fit_loop.epoch_progress.total.ready ('x'",
    ),
    "negative-counter": (
        lambda c: fit_loop(c)["epoch_loop.batch_progress"]["current"].__setitem__("completed", -2),
        "loop counter loops.fit_loop.epoch_loop.batch_progress.current.completed (-2",
    ),
    "loader-generator": (
        lambda c: fit_loop(c)["state_dict"]["combined_loader"][0].__setitem__("generator", torch.zeros(3)),
        "data-loader state is not one fitquad wrote",
    ),
    "loader-position": (
        lambda c: fit_loop(c)["state_dict"]["combined_loader"][0].__setitem__("items_served", 1.5),
        "data-loader state is not one fitquad wrote",
    ),
    "loader-holder": (lambda c: fit_loop(c).__setitem__("state_dict", "x"), "its data-loader state"),
    "no-optimizer": (lambda c: c.__setitem__("optimizer_states", []), "its optimizer state"),
    "optimizer-params": (
        lambda c: c["optimizer_states"][0]["param_groups"][0].__setitem__("params", [0]),
        "no state for this model's 2 parameter tensors",
    ),
    "schedulers": (lambda c: c.__setitem__("lr_schedulers", "none"), "its lr_schedulers"),
    "callbacks": (lambda c: c.__setitem__("callbacks", {"ModelCheckpoint": 3}), "its callbacks"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_an_unusable_checkpoint_is_one_line_before_any_folder(
    damage: str, checkpoint: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    change, words = DAMAGE[damage]
    damaged = copy.deepcopy(checkpoint)
    change(damaged)
    path = tmp_path / "damaged.ckpt"
    torch.save(damaged, path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", SGD_ARTICLE, "--data.batch_size", "7", "--ckpt_path", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fitquad: error: ckpt_path {path}") and words in err and "\n" not in err, err
    assert not (tmp_path / "runs").exists()


def test_the_undamaged_checkpoint_resumes(checkpoint: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The checks refuse only what is damaged: the same file as written resumes to the end.
    path = tmp_path / "whole.ckpt"
    torch.save(checkpoint, path)
    monkeypatch.chdir(tmp_path)
    main(
        ["fit", "--config", SGD_ARTICLE, "--data.batch_size", "7", "--ckpt_path", str(path), "--trainer.max_steps", "9"]
    )
    summary = next((tmp_path / "runs").rglob("summary.json")).read_text()
    assert '"optimizer_steps": 9' in summary


@pytest.mark.parametrize(
    ("command", "ckpt_path"),
    [("validate", "best"), ("test", "last"), ("predict", "checkpoint"), ("fit", "best"), ("fit", "hpc")],
)
def test_lightnings_own_ckpt_path_values_that_name_nothing_are_one_line(
    command: str, ckpt_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # A new process has no best, no hpc and (for evaluating) no last checkpoint: Lightning would fail with a
    # traceback, or evaluate an untrained model.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--config", SGD_ARTICLE, "--ckpt_path", ckpt_path])
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, f"ckpt_path '{ckpt_path}'", "give a checkpoint file")
    assert not (tmp_path / "runs").exists()


def test_a_fused_checkpoint_evaluates_with_any_module_and_resumes_only_as_it_was_trained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # fused_steps groups the optimizer steps, it is not the model: validate takes the weights with the textbook module.
    # A resumed fit counts its place in the data in training_steps, so it must group them as it was trained.
    monkeypatch.chdir(tmp_path)
    fused = ["--model", "FusedQuadraticRegression", "--model.fused_steps", "5", "--trainer.max_steps", "10"]
    main(["fit", "--config", SGD_ARTICLE, *fused])
    checkpoint = str(next((tmp_path / "runs").rglob("last.ckpt")))
    main(["validate", "--config", SGD_ARTICLE, "--ckpt_path", checkpoint])
    assert next((tmp_path / "runs").rglob("validate_metrics.json")).is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", SGD_ARTICLE, "--ckpt_path", checkpoint, "--trainer.max_steps", "20"])
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, f"ckpt_path {checkpoint}", "model.fused_steps 5", "asks for 1")
