"""Many runs as one batched model (fitquad.commands.many_runs and sweep_batched), checked against the same runs trained
alone: a plain PyTorch loop per run, and `fitquad sweep` with one Trainer per value (sweep.batched false)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from conftest import CONFIGS, only_run_folder, run_fitquad
from fitquad.callbacks.clipping import GradientClipping
from fitquad.commands.cli import main as fitquad
from fitquad.commands.many_runs import ManyRuns, ManyRunsData
from fitquad.commands.sweep_runs import sweep
from fitquad.core.data import QuadraticDataModule
from fitquad.core.losses import make_loss
from fitquad.core.model import PolynomialModel
from fitquad.core.module import initialize

MODEL_DEFAULTS = dict(init_coefficients=None, init_seed=0, huber_delta=1.0, smooth_l1_beta=1.0, lr=0.1, momentum=0.0,
                      dampening=0.0, nesterov=False, weight_decay=0.0)  # fmt: skip
# Every loss and SGD option, degrees 0 to 3, and a different number of points per group (padding).
GROUPS = [
    dict(degree=2, feature_scaling="whiten", loss="mse", lr=0.3, momentum=0.9, nesterov=True, n_train=20),
    dict(degree=3, feature_scaling="standardize", loss="l1", lr=0.05, momentum=0.5, dampening=0.8, n_train=12),
    dict(degree=1, feature_scaling="none", loss="huber", huber_delta=0.5, lr=0.1, weight_decay=0.01, n_train=30),
    dict(degree=0, feature_scaling="none", loss="smooth_l1", smooth_l1_beta=0.3, lr=0.2, init_seed=3, n_train=7),
]
DRAWS = 2
STEPS = 25


def group_options(group: dict) -> dict:
    return {**MODEL_DEFAULTS, **{k: v for k, v in group.items() if k != "n_train"}}


def draw(group: dict, k: int) -> QuadraticDataModule:
    data = QuadraticDataModule(x_distribution="uniform", n_train=group["n_train"], n_val=9, seed=100 + k)
    data.setup("fit")
    return data


def plain_loop(options: dict, x: torch.Tensor, y: torch.Tensor, steps: int, clip: float | None) -> torch.Tensor:
    """The run trained alone in float64: torch.optim.SGD, torch's own loss, clip_grad_norm_."""
    model = PolynomialModel(options["degree"], options["feature_scaling"])
    initialize(model, x, options["init_coefficients"], options["init_seed"])
    model.double()
    sgd = {k: options[k] for k in ("lr", "momentum", "dampening", "nesterov", "weight_decay")}
    optimizer = torch.optim.SGD(model.parameters(), **sgd)
    loss_fn = make_loss(options["loss"], options["huber_delta"], options["smooth_l1_beta"])
    features = model.features(x.double())
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(model.forward_features(features), y.double()).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
    return model.model_parameters()


def train_many(groups: list[dict], steps: int, clip: float | None) -> tuple[ManyRuns, list[QuadraticDataModule]]:
    data_modules = [draw(group, k) for group in groups for k in range(DRAWS)]
    data = ManyRunsData([(d.train_x, d.train_y) for d in data_modules], [(d.val_x, d.val_y) for d in data_modules],
                        steps_per_epoch=10, fused_steps=4)  # fmt: skip
    module = ManyRuns([group_options(g) for g in groups], DRAWS)
    trainer = L.Trainer(max_steps=steps, precision="64-true", accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=[GradientClipping(clip)] if clip else [])  # fmt: skip
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == steps
    return module, data_modules


@pytest.mark.parametrize("clip", [None, 0.5])
def test_each_batched_run_is_the_run_trained_alone(clip: float | None) -> None:
    module, data_modules = train_many(GROUPS, STEPS, clip)
    trained = module.parameters_now()
    for run, data in enumerate(data_modules):
        options = group_options(GROUPS[run // DRAWS])
        alone = plain_loop(options, data.train_x, data.train_y, STEPS, clip)
        batched = trained[run]
        # Same arithmetic up to the order of float64 additions; the padding stays exactly 0.
        torch.testing.assert_close(batched[: len(alone)], alone, rtol=1e-10, atol=1e-12)
        assert (batched[len(alone) :] == 0).all()
    assert not module.frozen.any()


def test_a_diverging_run_is_frozen_and_the_others_train_on() -> None:
    wild = dict(degree=2, feature_scaling="none", loss="mse", lr=3.0, n_train=20)  # far above 2/λmax
    groups = [GROUPS[0], wild, GROUPS[2]]
    module, data_modules = train_many(groups, STEPS, None)
    assert module.frozen.tolist() == [False, False, True, True, False, False]
    trained = module.parameters_now()
    for run in (0, 1, 4, 5):
        data = data_modules[run]
        alone = plain_loop(group_options(groups[run // DRAWS]), data.train_x, data.train_y, STEPS, None)
        torch.testing.assert_close(trained[run, : len(alone)], alone, rtol=1e-10, atol=1e-12)
    for run in (2, 3):  # frozen at the parameters before the first step whose loss was bad
        data = data_modules[run]
        step = int(module.diverged_step[run])
        assert 1 < step < STEPS
        before = plain_loop(group_options(wild), data.train_x, data.train_y, step - 2, None)
        torch.testing.assert_close(trained[run], before, rtol=1e-10, atol=1e-12)


def sweep_table(folder: Path) -> list[dict]:
    with (folder / "sweep.csv").open() as file:
        return list(csv.DictReader(file))


SWEEPS = {
    # float64, whitened, degrees up to 12: to float64 rounding
    "capacity": (["--config", str(CONFIGS / "capacity.yaml"), "--sweep.values", "[0, 2, 5, 12]"], 1e-9),
    # float32 with momentum 0.99 on raw powers: to float32 rounding, grown over 300 steps
    "weight_decay": (
        [
            "--config",
            str(CONFIGS / "weight_decay.yaml"),
            "--sweep.values",
            "[0.01, 0.3]",
            "--trainer.max_steps",
            "300",
            "--sweep.draws",
            "1",
        ],
        1e-4,
    ),  # fmt: skip
    # a different number of points per value (padding), float32
    "learning_curve": (
        ["--config", str(CONFIGS / "learning_curve.yaml"), "--sweep.values", "[4, 15, 100]", "--sweep.draws", "1"],
        1e-5,
    ),  # fmt: skip
    # a loss per value (values given as names), float64
    "losses": (
        [
            "--config",
            str(CONFIGS / "capacity.yaml"),
            "--sweep.parameter",
            "model.loss",
            "--sweep.values",
            "[mse, l1, huber, smooth_l1]",
            "--trainer.max_steps",
            "30",
            "--model.huber_delta",
            "0.2",
        ],
        1e-9,
    ),  # fmt: skip
    # gradient clipping by norm, per run
    "clipped": (
        [
            "--config",
            str(CONFIGS / "capacity.yaml"),
            "--sweep.parameter",
            "model.lr",
            "--sweep.values",
            "[0.2, 0.4]",
            "--trainer.max_steps",
            "10",
            "--trainer.gradient_clip_val",
            "0.5",
        ],
        1e-9,
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", SWEEPS)
def test_a_batched_sweep_gives_the_numbers_of_one_trainer_per_value(name, tmp_path, monkeypatch) -> None:
    args, tolerance = SWEEPS[name]
    monkeypatch.chdir(tmp_path)
    batched, batched_folder = sweep([*args, "--sweep.batched", "true"])
    alone, alone_folder = sweep([*args, "--sweep.batched", "false"])
    for one, other in zip(batched, alone, strict=True):
        assert (one.value, one.optimizer_steps, one.epochs) == (other.value, other.optimizer_steps, other.epochs)
        for field in ("train_mse", "val_mse", "optimum_train_mse", "optimum_val_mse"):
            assert getattr(one, field) == pytest.approx(getattr(other, field), rel=tolerance), field
        assert one.gap == pytest.approx(other.gap, rel=1e-3, abs=1e-6)
    assert [row["run"] for row in sweep_table(batched_folder)] == [row["run"] for row in sweep_table(alone_folder)]


def test_a_diverging_value_in_a_batched_sweep_says_what_one_trainer_says(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["sweep", "--config", str(CONFIGS / "capacity.yaml"), "--sweep.parameter", "model.lr", "--sweep.values",
            "[0.1, 5.0, 0.3]", "--trainer.max_steps", "20"]  # fmt: skip
    tables = []
    for batched in ("true", "false"):
        with pytest.raises(SystemExit) as exit_info:
            fitquad([*args, "--sweep.batched", batched])
        assert exit_info.value.code == 1
        assert "1 run(s) diverged (5.0)" in capsys.readouterr().err
        tables.append((newest_folder(tmp_path) / "sweep.md").read_text())
    batched_table, alone_table = tables
    line = next(line for line in alone_table.splitlines() if "diverged" in line)
    assert line in batched_table.splitlines()  # the same step, loss and advice


def newest_folder(cwd: Path) -> Path:
    return max((cwd / "runs" / "capacity").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def test_draw_k_is_the_value_trained_alone_on_seed_plus_k(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    base = ["--config", str(CONFIGS / "capacity.yaml"), "--sweep.values", "[3]"]
    _, folder = sweep([*base, "--sweep.draws", "3"])
    per_draw = json.loads((folder / "degree_3" / "summary.json").read_text())["per_draw"]
    assert [d["seed"] for d in per_draw] == [1, 2, 3]
    (alone,), _ = sweep([*base, "--data.seed", "3", "--sweep.batched", "false"])
    assert per_draw[2]["train_mse"] == pytest.approx(alone.train_mse, rel=1e-9)
    assert per_draw[2]["val_mse"] == pytest.approx(alone.val_mse, rel=1e-9)


def test_bias_and_variance_against_numpy_and_the_measured_error(tmp_path, monkeypatch) -> None:
    # Degrees 0-3 land on their least-squares optimum in one step (capacity.yaml): numpy's lstsq on each draw's
    # points gives the same models, and from them bias² and variance at the same evaluation points.
    monkeypatch.chdir(tmp_path)
    draws, degrees = 100, [0, 1, 2, 3]
    points, folder = sweep(["--config", str(CONFIGS / "capacity_draws.yaml"), "--sweep.values", str(degrees),
                            "--sweep.draws", str(draws)])  # fmt: skip
    config = yaml.safe_load((CONFIGS / "capacity_draws.yaml").read_text())["data"]
    x_eval = ((np.arange(2000) + 0.5) / 2000 * 2 - 1).astype(np.float32).astype(np.float64)  # uniform on [-1, 1]
    truth = 2 * x_eval**2 + x_eval + 2
    datasets = []
    for k in range(draws):
        data = QuadraticDataModule(**{**config, "seed": config["seed"] + k})
        data.setup("fit")
        datasets.append((data.train_x.double().numpy(), data.train_y.double().numpy()))
    for point, degree in zip(points, degrees, strict=True):
        predictions = []
        for x, y in datasets:
            theta = np.linalg.lstsq(np.vander(x, degree + 1, increasing=True), y, rcond=None)[0]
            predictions.append(np.vander(x_eval, degree + 1, increasing=True) @ theta)
        predictions = np.array(predictions)
        # Unbiased: the variance with K − 1, and bias² less the scatter of the draws' mean, variance/K.
        variance = predictions.var(axis=0, ddof=1).mean()
        assert point.variance == pytest.approx(variance, rel=1e-6)
        bias_squared = ((predictions.mean(axis=0) - truth) ** 2).mean() - variance / draws
        assert point.bias_squared == pytest.approx(bias_squared, rel=1e-6, abs=1e-9)
        per_draw = json.loads((folder / point.run / "summary.json").read_text())["per_draw"]
        assert point.val_mse_median == pytest.approx(np.median([d["val_mse"] for d in per_draw]), rel=1e-9)
        # The decomposition predicts the mean validation MSE, measured on each draw's own fresh points, to within
        # its Monte-Carlo error (4 standard errors: a 1-in-15,000 miss for each of the 4 degrees).
        predicted = point.bias_squared + point.variance + point.noise_floor
        assert abs(predicted - point.val_mse) < 4 * point.val_mse_error
    assert min(points, key=lambda p: p.val_mse).value == 2  # the true degree, on average


@pytest.mark.slow
def test_the_draws_config_writes_bands_bias_variance_and_one_run_per_value(tmp_path) -> None:
    run_fitquad("sweep", "--config", str(CONFIGS / "capacity_draws.yaml"), "--sweep.values", "[0, 2, 8]",
                "--sweep.draws", "20", cwd=tmp_path)  # fmt: skip
    folder = only_run_folder(tmp_path, "capacity_draws")
    assert (folder / "sweep.png").stat().st_size > 0 and (folder / "bias_variance.png").stat().st_size > 0
    rows = sweep_table(folder)
    assert [row["draws"] for row in rows] == ["20"] * 3
    for row in rows:
        assert float(row["val_mse_p10"]) <= float(row["val_mse_p90"])
        assert math.isfinite(float(row["bias_squared"])) and float(row["variance"]) > 0
    assert "bias² + var + σ²" in (folder / "sweep.md").read_text()
    for label, degree in (("degree_0", 0), ("degree_2", 2), ("degree_8", 8)):
        run = folder / label
        assert len(list(run.glob("events.out.tfevents.*"))) >= 1  # one TensorBoard run per value, not per draw
        assert yaml.safe_load((run / "hparams.yaml").read_text())["degree"] == degree
        summary = json.loads((run / "summary.json").read_text())
        assert len(summary["per_draw"]) == 20 and len(summary["per_draw"][0]["coefficients"]) == degree + 1
    # One TensorBoard run per degree (not per draw), and the sweep's own curve over the degrees.
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["degree_0", "degree_2", "degree_8", "sweep"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--sweep.draws", "0"], "sweep.draws must be ≥ 1, got 0"),
        (
            ["--sweep.draws", "5", "--data.batch_size", "5"],
            "sweep.draws 5 needs the runs batched, and these cannot be: data.batch_size makes mini-batches",
        ),
        (
            ["--sweep.batched", "true", "--trainer.precision", "bf16-mixed"],
            "sweep.batched true needs the runs batched, and these cannot be: trainer.precision bf16-mixed",
        ),
        (
            ["--sweep.draws", "2", "--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor", "val/loss"],
            "trainer.callbacks has EarlyStopping (batched runs take only GradientClipping)",
        ),
        (
            ["--sweep.draws", "2", "--sweep.batched", "false"],
            "sweep.draws 2 needs the runs batched: set sweep.batched null (or true), or sweep.draws 1",
        ),
        (
            ["--sweep.draws", "100000000"],
            "sweep.draws 100000000 × 2 values (200000000 runs of up to 215 points) would need about",
        ),
        (
            [
                "--sweep.draws",
                "2",
                "--data.file",
                str(Path(__file__).parents[1] / "examples" / "stopping_distances.csv"),
            ],
            "sweep.draws needs generated data: data.file has one draw",
        ),
    ],
)
def test_what_cannot_be_batched_is_one_line(options, message, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(CONFIGS / "capacity.yaml"), "--sweep.values", "[1, 2]"]
    with pytest.raises(SystemExit) as exit_info:
        fitquad(["sweep", *args, *options])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "\n" not in err.strip() and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists()
