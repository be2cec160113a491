"""`fitquad sweep` and the over/underfitting configs, checked against closed-form least squares and a plain loop."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONFIGS, only_run_folder, read_summary, run_fitquad
from fitquad.commands.cli import main as fitquad
from fitquad.commands.sweep_runs import sweep
from fitquad.core.data import QuadraticDataModule
from fitquad.core.module import QuadraticRegression


def config_data(name: str, **overrides) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The train and validation points of a config, float64."""
    data = {**yaml.safe_load((CONFIGS / name).read_text())["data"], **overrides}
    datamodule = QuadraticDataModule(**data)
    datamodule.setup("fit")
    splits = (datamodule.train_x, datamodule.train_y, datamodule.val_x, datamodule.val_y)
    return tuple(t.double().numpy() for t in splits)


def ridge_val_mse(degree: int, weight_decay: float, train_x, train_y, val_x, val_y) -> tuple[float, float]:
    """Train and validation MSE of min MSE + λ/2·‖coefficients‖² over raw polynomials (λ = 0: lstsq)."""
    vandermonde = np.vander(train_x, degree + 1, increasing=True)
    if weight_decay == 0:
        theta = np.linalg.lstsq(vandermonde, train_y, rcond=None)[0]
    else:
        n = len(train_x)
        hessian = 2 / n * vandermonde.T @ vandermonde + weight_decay * np.eye(degree + 1)
        theta = np.linalg.solve(hessian, 2 / n * vandermonde.T @ train_y)
    val_prediction = np.vander(val_x, degree + 1, increasing=True) @ theta
    return float(np.mean((vandermonde @ theta - train_y) ** 2)), float(np.mean((val_prediction - val_y) ** 2))


def test_capacity_sweep_underfits_then_overfits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real sweep, as configured: degrees 0..12, 3 steps each (a few seconds).
    monkeypatch.chdir(tmp_path)
    points, _ = sweep(["--config", str(CONFIGS / "capacity.yaml")])
    degrees = [p.value for p in points]
    assert degrees == list(range(13))
    train = np.array([p.train_mse for p in points])
    val = np.array([p.val_mse for p in points])
    sigma2 = points[0].noise_floor
    assert sigma2 == pytest.approx(0.09)
    # The training MSE's own floor, drawn beside σ²: σ²(n − p)/n on 15 points with p = degree + 1 parameters.
    assert [p.train_floor for p in points] == pytest.approx([sigma2 * (15 - (d + 1)) / 15 for d in degrees])

    # Each trained model is its least-squares optimum, computed here independently.
    data = config_data("capacity.yaml")
    for point in points:
        reference_train, reference_val = ridge_val_mse(point.value, 0.0, *data)
        assert point.train_mse == pytest.approx(reference_train, rel=1e-6, abs=1e-12)
        assert point.val_mse == pytest.approx(reference_val, rel=1e-6)
        assert point.gap < 1e-4

    # The shape the issue asks for.
    assert np.all(np.diff(train) <= 1e-9 * train[:-1]), train  # non-increasing in degree
    assert val.argmin() in (2, 3), val
    assert val.min() < 1.5 * sigma2  # the minimum is close to the noise floor
    assert val[0] > 3 * sigma2 and val[1] > 3 * sigma2 and train[1] > 2 * sigma2  # underfitting
    assert np.all(val[10:] >= 2 * val.min()), val  # overfitting
    assert train[12] < sigma2

    folder = tmp_path / "runs" / "capacity" / "version_0"
    with (folder / "sweep.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(row["degree"]) for row in rows] == degrees
    assert [float(row["val_mse"]) for row in rows] == [p.val_mse for p in points]
    # TensorBoard: one run, "sweep", with the degree as its x-axis: the U of sweep.png in SCALARS.
    events = EventAccumulator(str(folder / "sweep"))
    events.Reload()
    logged = [(event.step, event.value) for event in events.Scalars("sweep/val_mse")]
    assert [step for step, _ in logged] == degrees
    assert [value for _, value in logged] == pytest.approx([p.val_mse for p in points], rel=1e-6)
    # Every value's run has a fit's HPARAMS columns (the optimizer's, the scheduler's, the precision), whichever
    # run TensorBoard reads first.
    hparams = yaml.safe_load((folder / points[0].run / "hparams.yaml").read_text())
    assert {"optimizer", "optimizer.lr", "optimizer.momentum", "lr_scheduler", "precision"} <= set(hparams)
    assert hparams["optimizer"] == "SGD" and hparams["lr_scheduler"] == "none"


def test_learning_curve_approaches_the_noise_floor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(CONFIGS / "learning_curve.yaml"), "--sweep.values", "[4, 1000]", "--trainer.max_steps", "2",
            "--sweep.draws", "1"]  # fmt: skip
    (few, many), _ = sweep(args)
    sigma2 = few.noise_floor
    assert few.val_mse > 1.5 * sigma2
    assert many.val_mse == pytest.approx(sigma2, rel=0.15)
    assert many.train_mse == pytest.approx(sigma2, rel=0.15)
    assert few.gap < 1e-5 and many.gap < 1e-5


def test_weight_decay_sweep_reaches_the_ridge_optimum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two of the config's values; 3000 steps is past the ~2700 the slowest (λ = 0.03) needs.
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(CONFIGS / "weight_decay.yaml"), "--sweep.values", "[0.03, 1.0]", "--sweep.draws", "1"]
    points, _ = sweep([*args, "--trainer.max_steps", "3000"])
    data = config_data("weight_decay.yaml")
    for point in points:
        reference_train, reference_val = ridge_val_mse(12, point.value, *data)
        assert point.train_mse == pytest.approx(reference_train, rel=1e-4)
        assert point.val_mse == pytest.approx(reference_val, rel=1e-4)
        assert point.gap < 1e-5
    moderate, strong = points
    assert moderate.val_mse < 2 * moderate.noise_floor  # tamed: the unregularized fit's is ~10⁷
    assert strong.train_mse > 5 * strong.noise_floor  # too much decay underfits


def plain_gradient_descent_val_losses(steps: int, every: int) -> list[float]:
    """The early-stopping config's training as a plain PyTorch loop: the validation loss every `every` steps."""
    config = yaml.safe_load((CONFIGS / "overfit_early_stop.yaml").read_text())
    train_x, train_y, val_x, val_y = (torch.from_numpy(a).float() for a in config_data("overfit_early_stop.yaml"))
    degree, lr = config["model"]["degree"], config["model"]["lr"]
    weights = torch.zeros(degree + 1, requires_grad=True)  # the config starts from zero

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x**k for k in range(degree + 1)], dim=-1) @ weights

    optimizer = torch.optim.SGD([weights], lr=lr)
    losses = []
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(predict(train_x), train_y).backward()
        optimizer.step()
        if step % every == 0:
            with torch.no_grad():
                losses.append(torch.nn.functional.mse_loss(predict(val_x), val_y).item())
    return losses


@pytest.mark.slow
def test_early_stopping_keeps_the_validation_minimum(tmp_path: Path) -> None:
    run_fitquad("fit", "--config", str(CONFIGS / "overfit_early_stop.yaml"), cwd=tmp_path)
    folder = only_run_folder(tmp_path, "overfit_early_stop")
    summary = read_summary(folder)
    assert summary["optimizer_steps"] < 20000  # stopped early, not at max_steps

    events = EventAccumulator(str(folder))
    events.Reload()
    # Lightning logs a validation at its count of training_steps before the current one: the textbook module's
    # validation after optimizer step 10 is at TensorBoard step 9.
    logged = [(event.step + 1, event.value) for event in events.Scalars("val/loss")]
    best_step, best_loss = min(logged, key=lambda pair: pair[1])
    last_step, last_loss = logged[-1]
    # It stopped because the validation loss turned up: patience (20 checks, 200 steps) after the minimum.
    assert last_step - best_step == 200
    assert last_loss > 1.2 * best_loss

    # The validation curve and its minimum are those of a plain PyTorch loop.
    reference = plain_gradient_descent_val_losses(last_step, every=10)
    assert [value for _, value in logged] == pytest.approx(reference, rel=1e-4)
    assert 10 * (int(np.argmin(reference)) + 1) == best_step

    # The best checkpoint is the one at the minimum, and restoring it gives that model back.
    best_path = tmp_path / summary["best_checkpoint"]  # relative to where fitquad ran
    assert best_path.name == f"best-step{best_step}.ckpt"
    checkpoint = torch.load(best_path, weights_only=False)
    assert checkpoint["global_step"] == best_step
    restored = QuadraticRegression.load_from_checkpoint(best_path)
    _, _, val_x, val_y = config_data("overfit_early_stop.yaml")
    with torch.no_grad():
        restored_loss = torch.nn.functional.mse_loss(restored(torch.from_numpy(val_x).float()), torch.from_numpy(val_y))
    assert restored_loss.item() == pytest.approx(best_loss, rel=1e-6)


@pytest.mark.slow
def test_sweep_command_writes_table_figure_and_side_by_side_runs(tmp_path: Path) -> None:
    run_fitquad(
        "sweep", "--config", str(CONFIGS / "capacity.yaml"), "--sweep.values", "[0, 2, 12]", "--trainer.max_steps", "2",
        cwd=tmp_path,
    )  # fmt: skip
    folder = only_run_folder(tmp_path, "capacity")
    assert (folder / "sweep.png").stat().st_size > 0
    table = (folder / "sweep.md").read_text()
    assert "Validation minimum at degree = 2" in table
    with (folder / "sweep.csv").open() as file:
        assert [row["run"] for row in csv.DictReader(file)] == ["degree_00", "degree_02", "degree_12"]
    for run, degree in (("degree_00", 0), ("degree_02", 2), ("degree_12", 12)):
        assert list((folder / run).glob("events.out.tfevents.*"))
        assert yaml.safe_load((folder / run / "hparams.yaml").read_text())["degree"] == degree
        assert read_summary(folder / run)["optimizer_steps"] == 2


def test_saved_sweep_config_reruns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sweep(["--config", str(CONFIGS / "capacity.yaml"), "--sweep.values", "[0]", "--trainer.max_steps", "1"])
    saved = tmp_path / "runs" / "capacity" / "version_0" / "config.yaml"
    (point,), _ = sweep(["--config", str(saved), "--sweep.values", "[1]"])
    assert point.optimizer_steps == 1  # the override saved with it
    # Saved with its name: the re-run lands beside the first run, not under runs/config/.
    assert (tmp_path / "runs" / "capacity" / "version_1" / "degree_1" / "summary.json").exists()
    assert not (tmp_path / "runs" / "config").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--sweep.parameter", "model.nope"], "sweep.parameter must be a setting of the data, model or trainer"),
        (["--sweep.values", "[0, 1.5]"], "sweep.values: 1.5 is not a value model.degree takes (model.degree must be"),
        (["--sweep.values", "[]"], "sweep.values must list at least one value"),
        # Blamed on the value only where the base config passes the same check: too many points for memory at any
        # degree is the base config's data.n_train; at the base config's own size, the swept value's.
        (["--data.n_train", "100000000000"], "fitquad: error: data.n_train 100000000000, n_val"),
        (
            ["--sweep.parameter", "data.file", "--sweep.values", "[missing.csv]"],
            "sweep.values: data.file 'missing.csv'",
        ),
        # DDP would start the whole sweep again in each new process (it hung): one device, in this process.
        (
            ["--trainer.devices", "2", "--trainer.accelerator", "cpu"],
            "trainer.devices must be 1 and trainer.num_nodes 1",
        ),
        (
            ["--sweep.parameter", "data.n_train", "--sweep.values", "[10, 100000000000]"],
            "fitquad: error: sweep.values: data.n_train 100000000000, n_val",
        ),
        (
            ["--sweep.parameter", "model.init_coefficients", "--sweep.values", "[[0, 0, 0], [1, 1, 1]]"],
            "sweep.values: [[0, 0, 0], [1, 1, 1]] holds lists or mappings",
        ),
        # runs/<name>: a name that leads out of runs/ would write into the current folder or anywhere.
        (["--name", "../escaped"], "name must name a folder inside runs/ (no leading / and no .. part)"),
    ],
)
def test_bad_sweep_input_is_one_line(
    override: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        fitquad(["sweep", "--config", str(CONFIGS / "capacity.yaml"), *override])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
    assert not (tmp_path / "runs").exists()  # nothing trained


def test_the_sweep_figure_frames_the_u_not_the_largest_error() -> None:
    from fitquad.commands.sweep_figures import frame
    from fitquad.commands.sweep_report import SweepPoint

    def point(degree: int, train: float, val: float) -> SweepPoint:
        return SweepPoint(degree, train, val, 0.09, train, val, 0.0, 10, 1, f"degree_{degree}")

    points = [point(0, 0.25, 0.9), point(2, 0.05, 0.11), point(6, 0.03, 1.2), point(12, 0.02, 1e7)]
    bottom, top = frame(points)
    assert bottom == pytest.approx(0.01) and top == pytest.approx(30 * 0.11)  # degree 12's 10⁷ is off the frame
    assert all(p.val_mse < top for p in points[:3])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sweep.values", '[1, "a"]'], "sweep.values: 'a' is not a value model.degree takes"),
        (
            ["--sweep.parameter", "trainer.max_epochs", "--sweep.values", "[1, -5]"],
            "sweep.values: trainer.max_epochs -5 is refused by Lightning: `max_epochs` must be a non-negative",
        ),
    ],
)
def test_every_swept_value_is_checked_before_anything_trains(tmp_path, monkeypatch, capsys, extra, message) -> None:
    # The value Lightning refuses comes second: nothing may train, and no folder may be made, before it is found.
    from fitquad.commands.cli import main as fitquad_main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        fitquad_main(["sweep", "--config", str(CONFIGS / "capacity.yaml"), *extra])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.strip().startswith(f"fitquad: error: {message}") and "\n" not in captured.err.strip()
    assert not (tmp_path / "runs").exists() and "fitquad sweep:" not in captured.out


def test_a_sweep_over_null_and_a_batch_size_trains_full_batch_then_mini_batches(tmp_path, monkeypatch) -> None:
    # data.batch_size null (full batch) is a value a learner sweeps against mini-batches: the table, the folders and
    # the figure's category axis call it null.
    monkeypatch.chdir(tmp_path)
    options = ["--sweep.parameter", "data.batch_size", "--sweep.values", "[null, 5]", "--trainer.max_steps", "3"]
    points, folder = sweep(["--config", str(CONFIGS / "capacity.yaml"), *options])
    assert [p.value for p in points] == ["null", "5"]
    batch_sizes = [yaml.safe_load((folder / p.run / "hparams.yaml").read_text())["batch_size"] for p in points]
    assert batch_sizes == [None, 5]
    assert "| null |" in (folder / "sweep.md").read_text()
    # Full batch is plain gradient descent: the closed-form optimum after 3 steps of the capacity config's lr 0.5 on
    # whitened features (Hessian 2·I: one step lands on it); 3 mini-batch steps of 5 points do not.
    assert points[0].gap < 1e-6 < points[1].gap


@pytest.mark.parametrize(
    ("command", "config_text", "message"),
    [
        ("sweep", "model:\n  degre: 1\n", "fitquad: error: model.degre is not an option; did you mean --model.degree?"),
        ("sweep", "sweep:\n  draw: 3\n", "fitquad: error: sweep.draw is not an option; did you mean --sweep.draws?"),
        ("compare", "losses: mse\n", "fitquad: error: losses must be a list, [a, b, ...], got mse"),
    ],
)
def test_a_mistyped_key_in_a_sweep_or_compare_config_file_is_named_in_full(
    command: str, config_text: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mistake.yaml").write_text(config_text)
    base = {"sweep": "capacity.yaml", "compare": "sgd_article_grid.yaml"}[command]
    with pytest.raises(SystemExit) as exit_info:
        fitquad([command, "--config", str(CONFIGS / base), "--config", "mistake.yaml"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(message), error
    assert not (tmp_path / "runs").exists()


def test_a_true_or_false_setting_sweeps_as_two_named_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # capacity.yaml's whitened MSE has Hessian 2·I and lr 0.5: with momentum 0.9, plain momentum overshoots after
    # its first exact step (error −0.81 of the start's after 3 steps), while Nesterov's error is exactly 0 after 2.
    monkeypatch.chdir(tmp_path)
    nesterov = ["--sweep.parameter", "model.nesterov", "--sweep.values", "[false, true]", "--model.momentum", "0.9"]
    fitquad(["sweep", "--config", str(CONFIGS / "capacity.yaml"), *nesterov])
    folder = only_run_folder(tmp_path, "capacity")
    assert (folder / "nesterov_false").is_dir() and (folder / "nesterov_true").is_dir()
    rows = {row["nesterov"]: row for row in csv.DictReader((folder / "sweep.csv").read_text().splitlines())}
    assert float(rows["true"]["train_mse"]) == pytest.approx(float(rows["true"]["optimum_train_mse"]), rel=1e-9)
    assert float(rows["false"]["train_mse"]) > 2 * float(rows["false"]["optimum_train_mse"])


def test_a_value_lightning_would_refuse_as_its_fit_starts_is_refused_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # capacity.yaml's epoch is one step: validating every 1000 training batches is refused by Lightning only as that
    # value's fit starts, after the values before it had trained.
    monkeypatch.chdir(tmp_path)
    values = [
        "--sweep.parameter",
        "trainer.val_check_interval",
        "--sweep.values",
        "[1, 1000]",
        "--sweep.batched",
        "false",
    ]
    with pytest.raises(SystemExit) as exit_info:
        fitquad(["sweep", "--config", str(CONFIGS / "capacity.yaml"), *values])
    assert exit_info.value.code == 2
    assert "sweep.values: trainer.val_check_interval must be at most the 1 training batches" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_sweep_without_its_section_says_where_the_required_options_go(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        fitquad(["sweep", "--config", str(CONFIGS / "lesson3.yaml")])  # a fit config: no sweep section
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "required: sweep.parameter, sweep.values: give them on the command" in error
