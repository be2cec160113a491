"""The diagnosis: its rules on chosen numbers, then each verdict on a real (short) run of its config."""

from __future__ import annotations

import ast
import math
import re
import shutil
from pathlib import Path

import lightning as L
import matplotlib.image
import pytest
import torch

import fitquad
from conftest import (
    CONFIGS,
    assert_one_line_error,
    fit_in_process,
    lesson3_data,
    only_run_folder,
    read_summary,
    read_train_losses,
    recorded_losses,
    run_fitquad,
)
from fitquad.callbacks.diagnosis import FitDiagnosis
from fitquad.commands.cli import main
from fitquad.core.module import QuadraticRegression
from fitquad.theory.verdicts import Diagnosis, FitFacts
from fitquad.theory.verdicts import diagnose as diagnose_facts

# ---- the rules, on chosen numbers --------------------------------------------------------------------
LESSON3 = dict(noise_std=3.0, n_train=20, n_val=20, n_parameters=3, lr=0.35, largest_stable_lr=0.4)


def diagnose(**numbers: object) -> Diagnosis:
    """The rules on keyword arguments, as the tests below state them."""
    return diagnose_facts(FitFacts(**numbers))


@pytest.mark.parametrize(
    "numbers, verdict",
    [
        (dict(train_loss=4.9, train_mse=4.9, val_mse=9.0, steps_to_go=0), "converged"),
        (dict(train_loss=6.0, train_mse=6.0, val_mse=10.0, steps_to_go=12), "still_converging"),
        (
            dict(train_loss=600.0, train_mse=600.0, val_mse=600.0, steps_to_go=1e6, condition_number=2e5),
            "stalled_ill_conditioned",
        ),
        (
            dict(train_loss=600.0, train_mse=600.0, val_mse=600.0, steps_to_go=100, condition_number=2e5),
            "still_converging",
        ),
        (dict(train_loss=6.0, train_mse=6.0, val_mse=10.0, steps_to_go=1, float32_update_error=0.9), "stalled_float32"),
        (
            dict(train_loss=6.0, train_mse=6.0, val_mse=10.0, steps_to_go=12, float32_update_error=0.01),
            "still_converging",
        ),
        (dict(train_loss=60.0, optimum_loss=60.0, train_mse=60.0, val_mse=70.0, steps_to_go=0), "underfitting"),
        (dict(train_loss=1.0, optimum_loss=1.0, train_mse=1.0, val_mse=30.0, steps_to_go=0), "overfitting"),
        (dict(train_loss=math.nan, train_mse=math.nan, val_mse=math.nan, steps_to_go=None), "diverged"),
        (dict(train_loss=6.0, train_mse=6.0, val_mse=10.0, steps_to_go=math.inf), "diverged"),
        (
            dict(
                train_loss=600.0,
                train_mse=600.0,
                val_mse=600.0,
                steps_to_go=1e6,
                condition_number=2e5,
                stopped_early=True,
            ),
            "stopped_early",
        ),
        (dict(train_loss=4.9, train_mse=4.9, val_mse=9.0, steps_to_go=0, stopped_early=True), "converged"),
    ],
)
def test_rules(numbers: dict, verdict: str) -> None:
    facts = dict(LESSON3, steps_taken=1000, optimum_loss=4.9, condition_number=7.7, float32_update_error=None)
    facts.update(numbers)
    diagnosis = diagnose(**facts)
    assert diagnosis.verdict == verdict, diagnosis.message


def test_the_floors_are_quoted_with_their_spread() -> None:
    # lesson3: the training floor σ²(n − p)/n = 7.65 has sd σ²·√(2(n − p))/n = 2.62; the validation floor
    # σ² = 9 has sd σ²·√(2/n) = 2.85 on 20 points.
    facts = dict(LESSON3, steps_taken=100, optimum_loss=4.9, condition_number=7.7, float32_update_error=None)
    message = diagnose(**facts, train_loss=4.9, train_mse=4.9, val_mse=9.0, steps_to_go=0).message
    assert "train MSE 4.9 (floor 7.65 ± 2.6), val MSE 9 (floor σ² = 9 ± 2.8)" in message


def test_advice_for_another_optimizer_leaves_out_sgds_predictions() -> None:
    facts = dict(LESSON3, steps_taken=40, optimum_loss=4.9, condition_number=7.7, float32_update_error=None)
    still = diagnose(**facts, train_loss=9.0, train_mse=9.0, val_mse=12.0, steps_to_go=3, optimizer="Adam")
    assert (
        still.verdict == "still_converging"
        and "raise lr" not in still.message
        and "largest stable" not in still.message
    )
    assert still.message.endswith("this run used Adam)")
    diverged = diagnose(
        **facts, train_loss=math.nan, train_mse=math.nan, val_mse=None, steps_to_go=None, optimizer="Adam"
    )
    assert diverged.verdict == "diverged" and "largest stable" not in diverged.message
    # Under- and overfitting do not depend on the optimizer.
    under = diagnose(
        **{**facts, "optimum_loss": 60.0},
        train_loss=60.0,
        train_mse=60.0,
        val_mse=70.0,
        steps_to_go=0,
        optimizer="Adam",
    )
    assert under.verdict == "underfitting"


def test_validation_mse_within_sampling_noise_of_the_floor_is_not_overfitting() -> None:
    # 20 validation points: their MSE has a standard deviation of σ²·√(2/20) ≈ 0.32·σ² around σ².
    facts = dict(LESSON3, steps_taken=100, optimum_loss=4.9, condition_number=7.7, float32_update_error=None)
    assert diagnose(**facts, train_loss=4.9, train_mse=4.9, val_mse=15.0, steps_to_go=0).verdict == "converged"
    assert diagnose(**facts, train_loss=4.9, train_mse=4.9, val_mse=30.0, steps_to_go=0).verdict == "overfitting"


def test_an_estimated_noise_floor_is_labelled_and_says_what_it_cannot_tell() -> None:
    # Your own data: σ̂² from the optimum's residuals, so the training MSE sits on its floor by construction.
    sigma_hat = math.sqrt(4.9 * 20 / 17)
    facts = dict(LESSON3, noise_std=sigma_hat, steps_taken=100, optimum_loss=4.9, condition_number=7.7,
                 float32_update_error=None, noise_estimated=True)  # fmt: skip
    converged = diagnose(**facts, train_loss=4.9, train_mse=4.9, val_mse=6.0, steps_to_go=0)
    assert converged.verdict == "converged" and "floor σ̂² = 5.765" in converged.message
    assert "underfitting would raise it rather than show against it" in converged.message
    assert diagnose(**facts, train_loss=4.9, train_mse=4.9, val_mse=30.0, steps_to_go=0).verdict == "overfitting"
    unknown = diagnose(**{**facts, "noise_std": None}, train_loss=4.9, train_mse=4.9, val_mse=6.0, steps_to_go=0)
    assert unknown.verdict == "converged" and "the noise is unknown" in unknown.message


# ---- each verdict on a real run of its config --------------------------------------------------------
def fit(tmp_path, monkeypatch, config: str, *overrides: str) -> dict:
    """The real CLI, in this process (seconds saved on imports), in tmp_path; returns summary.json."""
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(CONFIGS / f"{config}.yaml"), "--trainer.enable_progress_bar", "false", *overrides])
    return read_summary(only_run_folder(tmp_path, config))


def without_progress_bar(config: str) -> list[str]:
    return ["--trainer.callbacks", "[]"] if "TQDMProgressBar" in (CONFIGS / f"{config}.yaml").read_text() else []


@pytest.mark.parametrize(
    "config, overrides, verdict",
    [
        ("lesson3", [], "converged"),
        ("lesson3", ["--trainer.max_steps", "5"], "still_converging"),
        # y around 10⁸: float32 resolves it to ±4, so the bias cannot take the small steps it needs
        ("lesson3", ["--data.true_c", "1e8"], "stalled_float32"),
        ("sgd_article", [], "underfitting"),
        # degree 9 through 12 points: whitened, it reaches its optimum at once, and that optimum fits the noise
        ("lesson3_whiten", ["--model.degree", "9", "--data.n_train", "12"], "overfitting"),
    ],
    ids=["lesson3", "short", "float32", "sgd_article", "overfit"],
)
def test_each_diagnosis_on_its_config(tmp_path, monkeypatch, config, overrides, verdict) -> None:
    summary = fit(
        tmp_path, monkeypatch, config, *without_progress_bar(config), *overrides, "--fit_diagnosis.figures", "false"
    )
    assert summary["diagnosis"]["verdict"] == verdict, summary["diagnosis"]["message"]


def test_lesson3_raw_stall_is_ill_conditioning_with_its_kappa(tmp_path, monkeypatch) -> None:
    summary = fit(
        tmp_path, monkeypatch, "lesson3_raw", *without_progress_bar("lesson3_raw"), "--trainer.max_steps", "2000"
    )
    assert summary["diagnosis"]["verdict"] == "stalled_ill_conditioned", summary["diagnosis"]["message"]
    assert 1e5 < summary["conditioning"]["condition_number"] < 1e6
    assert "κ = 2.18e+05" in summary["diagnosis"]["message"]
    assert summary["diagnosis"]["float32_update_error"] < 0.01  # float32 is not what holds it back


def test_lesson3_whiten_is_within_one_percent_of_the_optimum_in_at_most_three_steps(tmp_path, monkeypatch) -> None:
    summary = fit(tmp_path, monkeypatch, "lesson3_whiten", *without_progress_bar("lesson3_whiten"))
    optimum = summary["reference"]["train_loss_optimum"]
    losses = read_train_losses(only_run_folder(tmp_path, "lesson3_whiten"))  # losses[k]: after k updates
    after_three_steps = losses[3]
    assert (after_three_steps - optimum) / optimum <= 0.01
    assert summary["conditioning"]["condition_number"] == pytest.approx(1.0, abs=1e-5)
    assert summary["diagnosis"]["verdict"] == "converged"


def test_lesson3_leaves_its_figures_text_and_gap_in_tensorboard(tmp_path, monkeypatch) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = fit(tmp_path, monkeypatch, "lesson3", *without_progress_bar("lesson3"))
    folder = only_run_folder(tmp_path, "lesson3")
    for name in ("fit", "residuals"):
        image = matplotlib.image.imread(folder / f"{name}.png")
        assert image.shape[0] > 100 and image[..., :3].std() > 0.05  # drawn, not blank
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"diagnosis/fit", "diagnosis/residuals"} <= set(tags["images"])
    assert any("diagnosis" in tag for tag in tags["tensors"]) and any("conditioning" in tag for tag in tags["tensors"])
    gaps = [event.value for event in events.Scalars("reference/relative_gap")]
    assert len(gaps) == summary["optimizer_steps"]  # log_every_n_steps 1: one per step
    assert gaps[-1] < 1e-6 < gaps[0]
    optimum = events.Scalars("reference/train_loss_optimum")
    assert optimum[0].value == pytest.approx(summary["reference"]["train_loss_optimum"], rel=1e-6)
    # At the start and at the last step: a line under train/loss, not a point at step 0.
    assert [event.step for event in optimum] == [0, summary["optimizer_steps"]]


@pytest.mark.slow
def test_divergence_stops_at_once_with_one_line_and_a_non_zero_exit_code(tmp_path) -> None:
    result = run_fitquad("fit", "--config", str(CONFIGS / "lesson3_lr_too_high.yaml"), cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("fitquad: error: training diverged at step 4: loss ")
    assert "with lr 0.0001; the largest stable lr is 3.54e-05" in last_line
    summary = read_summary(only_run_folder(tmp_path, "lesson3_lr_too_high"))
    assert summary["diagnosis"]["verdict"] == "diverged"
    # The guard stopped it at the step whose loss exploded, before that step's update.
    assert summary["optimizer_steps"] == 3
    assert summary["ended_by"] == "the divergence guard, at step 4"


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys) -> None:
    # lr 0.45 is just above the largest stable 0.404: the loss first falls, then the steep direction grows
    # by ×1.5 per step; lesson3.yaml checkpoints every 10 steps until the guard stops the run.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(
            ["fit", "--config", str(CONFIGS / "lesson3.yaml"), "--model.lr", "0.45", "--fit_diagnosis.figures", "false"]
        )
    assert exited.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    diverged_at = int(re.match(r"fitquad: error: training diverged at step (\d+):", error).group(1))
    checkpoint = torch.load(only_run_folder(tmp_path, "lesson3") / "checkpoints" / "last.ckpt", weights_only=False)
    assert 10 <= checkpoint["global_step"] < diverged_at
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())


def test_float64_runs_end_to_end_in_float64(tmp_path) -> None:
    class BatchDtypes(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.dtypes = {tensor.dtype for tensor in batch}

    datamodule = lesson3_data()
    datamodule.hparams.update(steps_per_epoch=10)
    module = QuadraticRegression(feature_scaling="standardize", lr=0.35)
    batches, diagnosis = BatchDtypes(), FitDiagnosis(figures=False)
    options = dict(precision="64-true", callbacks=[batches, diagnosis])
    trainer = fit_in_process(module, datamodule, tmp_path, max_steps=200, **options)
    assert batches.dtypes == {torch.float64}
    losses = recorded_losses(trainer)
    assert losses.dtype == torch.float64
    found = diagnosis.summary_entries()["diagnosis"]
    assert found["verdict"] == "converged"
    # float64 reaches the float64 optimum to ~1e-15 (float32 parameters alone would leave ~1e-12)
    assert abs(found["relative_gap"]) < 1e-13
    assert losses[-1].item() == pytest.approx(found["optimum_loss"], rel=1e-13)


def test_matplotlib_is_imported_only_when_a_figure_is_drawn() -> None:
    # `fitquad --help` must not pay for it: no module on the way to the CLI imports figures at the top.
    modules = (
        "commands/cli",
        "commands/fit_cli",
        "commands/parsing",
        "callbacks/summary",
        "callbacks/record",
        "callbacks/diagnosis",
        "core/module",
    )
    for name in (*modules, "theory/reference", "theory/conditioning"):
        tree = ast.parse((Path(fitquad.__file__).parent / f"{name}.py").read_text())
        top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        imported = {alias.name for node in top_level for alias in node.names}
        imported |= {node.module for node in top_level if isinstance(node, ast.ImportFrom)}
        assert not any("figures" in module or "matplotlib" in module for module in imported), name


def test_a_fit_ended_by_early_stopping_is_diagnosed_as_such(tmp_path, monkeypatch) -> None:
    # configs/overfit_early_stop.yaml: EarlyStopping ends it at the validation minimum, far from the
    # training optimum on purpose; without early stopping the same run would read as a slow stall.
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(CONFIGS / "overfit_early_stop.yaml"), "--fit_diagnosis.figures", "false"])
    summary = read_summary(only_run_folder(tmp_path, "overfit_early_stop"))
    assert summary["diagnosis"]["verdict"] == "stopped_early", summary["diagnosis"]["message"]
    assert summary["optimizer_steps"] < 20000


@pytest.mark.parametrize(
    "overrides",
    [
        ["--data.noise_std", "0"],  # noise-free: the optimum is 0 up to float64 rounding
        ["--data.n_train", "3", "--trainer.callbacks", "[]", "--trainer.max_steps", "300"],  # 3 points, 3 parameters
    ],
    ids=["noise-free", "as-many-points-as-parameters"],
)
def test_an_exact_fit_is_measured_against_float_rounding_not_an_optimum_of_zero(tmp_path, monkeypatch, overrides):
    summary = fit(tmp_path, monkeypatch, "lesson3", *overrides, "--fit_diagnosis.figures", "false")
    diagnosis = summary["diagnosis"]
    assert summary["reference"]["train_loss_optimum"] < 1e-20  # an exact fit
    assert diagnosis["verdict"] == "converged", diagnosis["message"]
    assert 0 <= diagnosis["relative_gap"] < 0.01  # against optimum 1e-28 it would read ~1e16


def test_relative_gap_is_never_negative_and_uses_the_resolution_only_below_it() -> None:
    from fitquad.theory.reference import relative_gap

    assert relative_gap(4.9, 5.0) == 0.0  # below the minimum: rounding
    assert relative_gap(5.5, 5.0) == pytest.approx(0.1)
    assert relative_gap(5.5, 5.0, resolution=1.0) == pytest.approx(0.1)  # the optimum is above the resolution
    assert relative_gap(1e-10, 1e-28, resolution=1e-8) == pytest.approx(0.01)
    assert math.isnan(relative_gap(math.nan, 5.0))


def test_whitening_too_few_distinct_points_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    narrow = ["--data.x_distribution", "uniform", "--data.x_min", "1", "--data.x_max", "1.00000001"]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / "sgd_article.yaml"), *narrow, "--model.feature_scaling", "whiten"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "model.feature_scaling whiten", "model.degree + 1 = 2 distinct", "has 1", "standardize")


def test_each_verdict_has_a_plain_sentence_printed_before_its_numbers(tmp_path, monkeypatch, capsys) -> None:
    from fitquad.theory.verdicts import IN_PLAIN_WORDS

    verdicts = {"converged", "stopped_early", "still_converging", "stalled_ill_conditioned", "stalled_float32"}
    assert set(IN_PLAIN_WORDS) == verdicts | {"underfitting", "overfitting", "diverged"}
    summary = fit(tmp_path, monkeypatch, "lesson3", "--trainer.max_steps", "5", "--fit_diagnosis.figures", "false")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("fitquad: d")]
    assert lines[-2] == f"fitquad: diagnosis: {IN_PLAIN_WORDS['still_converging']}"
    assert lines[-1] == f"fitquad: details: {summary['diagnosis']['message']}"
    assert summary["diagnosis"]["in_plain_words"] == IN_PLAIN_WORDS["still_converging"]


def test_the_start_says_in_plain_words_the_best_loss_and_whether_the_lr_is_safe(tmp_path, monkeypatch, capsys):
    for lr, verdict in (("0.35", "is safe (below"), ("0.5", "is too large: above")):
        summary = fit(tmp_path, monkeypatch, "lesson3", "--model.lr", lr, "--trainer.max_steps", "3",
                      "--fit_diagnosis.figures", "false")  # fmt: skip
        (line,) = [line for line in capsys.readouterr().out.splitlines() if "before training" in line]
        optimum, stable = summary["reference"]["train_loss_optimum"], summary["conditioning"]["largest_stable_lr"]
        assert f"a loss of {optimum:.4g}" in line and f"lr {lr} {verdict} {stable:.3g}" in line, line
        shutil.rmtree(tmp_path / "runs")  # the next fit's folder must be the only one


def test_the_step_advice_for_huber_is_a_lower_bound_and_said_so(tmp_path, monkeypatch, capsys) -> None:
    # Huber's Hessian is its curvature within delta, the largest it has: the steps it predicts are a lower bound
    # (followed, the fit needs more), and the lines say "at least"; MSE's are exact and say "about".
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(CONFIGS / "sgd_article.yaml"), "--model.loss", "huber", "--model.huber_delta", "0.5"])
    out = capsys.readouterr().out
    assert "should get within 1% of it in at least about 59 full-batch steps (a lower bound" in out
    assert "predicted full-batch steps to within 1% of the optimum: at least 59" in out
    assert re.search(r"still converging: .* after 100 steps; at least \d+ more full-batch steps", out)
    main(["fit", "--config", str(CONFIGS / "sgd_article.yaml"), "--trainer.max_epochs", "5"])
    out = capsys.readouterr().out
    assert "at least" not in out and re.search(r"; about \d+ more full-batch steps", out)


def test_early_stopping_under_mini_batches_is_not_called_overfitting() -> None:
    # With mini-batches the validation loss jitters with the batches' gradient noise: a degree-2 model on degree-2
    # data stopped early did not stop "before fitting the noise". Full batch keeps the overfitting sentence.
    facts = dict(LESSON3, steps_taken=70, optimum_loss=4.9, condition_number=7.7, float32_update_error=None)
    facts.update(train_loss=5.5, train_mse=5.5, val_mse=9.5, steps_to_go=5, stopped_early=True)
    noisy, full = diagnose(**facts, mini_batch=True), diagnose(**facts, mini_batch=False)
    assert noisy.verdict == full.verdict == "stopped_early"
    assert "gradient noise, so the stop may be that noise, not overfitting" in noisy.in_plain_words
    assert "(which would fit the noise)" in full.in_plain_words and "gradient noise" not in full.in_plain_words
