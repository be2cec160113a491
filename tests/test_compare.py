"""`fitquad compare` run as a user runs it, on a reduced grid, checked against a plain PyTorch loop."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from matplotlib.image import imread

from conftest import CONFIGS, assert_one_line_error, plain_sgd_path, run_fitquad
from fitquad.commands.cli import main
from fitquad.commands.compare_grid import ARTICLE_SETTINGS
from fitquad.core.data import QuadraticDataModule
from fitquad.core.model import PolynomialModel

STEPS = 40


def plain_gd(x: torch.Tensor, y: torch.Tensor, loss_fn: torch.nn.Module, **sgd) -> tuple[list[float], float, float]:
    """The article's neuron trained by hand: the full-batch loss at every point of the path, final w and b."""
    neuron = PolynomialModel(degree=1)  # torch.nn.Linear(1, 1) underneath
    with torch.no_grad():
        neuron.linear.weight.fill_(6.0)
        neuron.linear.bias.fill_(-3.0)
    path = plain_sgd_path(neuron, x, y, STEPS, loss_fn, **sgd)
    losses = [loss_fn(b + w * x, y).item() for b, w in path]
    return losses, path[-1, 1].item(), path[-1, 0].item()


@pytest.mark.slow
def test_compare_on_a_reduced_grid(tmp_path) -> None:
    result = run_fitquad(
        "compare",
        "--config", str(CONFIGS / "sgd_article_grid.yaml"),
        "--losses", "[mse, l1]",
        "--settings", "[{name: plain}, {name: momentum, momentum: 0.9}]",
        "--max_steps", str(STEPS),
        "--data.steps_per_epoch", str(STEPS),
        "--resolution", "31",
        cwd=tmp_path,
    )  # fmt: skip
    folder = tmp_path / "runs" / "sgd_article_grid" / "version_0"
    assert f"compare finished in {folder.relative_to(tmp_path)}" in result.stdout

    pixels = imread(folder / "compare.png")
    assert pixels[..., :3].std() > 0.1  # four panels of contours and paths, not a blank canvas
    rows = list(csv.DictReader((folder / "compare.csv").read_text().splitlines()))
    assert [(r["loss"], r["setting"]) for r in rows] == [
        ("mse", "plain"), ("mse", "momentum"), ("l1", "plain"), ("l1", "momentum")
    ]  # fmt: skip
    markdown = (folder / "compare.md").read_text().splitlines()
    assert len(markdown) == 2 + len(rows)
    assert markdown[0].startswith("| loss | setting | final loss | final w | final b")
    assert (folder / "config.yaml").exists()

    datamodule = QuadraticDataModule(n_train=50, n_val=0, n_test=0, seed=20240215)
    datamodule.setup("fit")
    x, y = datamodule.train_x, datamodule.train_y
    design = np.stack([np.ones(50), x.double().numpy()], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, y.double().numpy())
    mse_optimum = np.mean((design @ coefficients - y.double().numpy()) ** 2)
    for row, sgd in zip(rows[:2], [dict(lr=0.1), dict(lr=0.1, momentum=0.9)], strict=True):
        losses, w, b = plain_gd(x, y, torch.nn.MSELoss(), **sgd)
        assert float(row["final_w"]) == w and float(row["final_b"]) == b
        np.testing.assert_allclose(float(row["final_loss"]), losses[-1], rtol=1e-6)
        np.testing.assert_allclose(float(row["optimum_loss"]), mse_optimum, rtol=1e-12)
        # The step from which the loss stays within 1% to the end (a run that passes through and leaves has not).
        outside = [k for k, loss in enumerate(losses) if loss > 1.01 * mse_optimum]
        arrived = 0 if not outside else None if outside[-1] == len(losses) - 1 else outside[-1] + 1
        assert row["steps_to_within_1pct"] == ("" if arrived is None else str(arrived))
    for row in rows[2:]:
        losses, w, b = plain_gd(x, y, torch.nn.L1Loss(), lr=0.1, momentum=0.9 if row["momentum"] != "0.0" else 0)
        assert float(row["final_w"]) == w and float(row["final_b"]) == b


@pytest.mark.slow
def test_compare_rejects_bad_input_in_one_line(tmp_path) -> None:
    result = run_fitquad("compare", "--losses", "[mse, cubic]", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("fitquad: error: losses")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_every_run_of_the_article_grid_is_bit_for_bit_the_run_alone(tmp_path) -> None:
    # Each of the 20 runs trains QuadraticRegression in its own Trainer; each must be a plain torch loop's path.
    run_fitquad("compare", "--config", str(CONFIGS / "sgd_article_grid.yaml"), "--resolution", "11", cwd=tmp_path)
    table = (tmp_path / "runs" / "sgd_article_grid" / "version_0" / "compare.csv").read_text()
    rows = list(csv.DictReader(table.splitlines()))
    assert len(rows) == 20
    datamodule = QuadraticDataModule(n_train=50, n_val=0, n_test=0, seed=20240215)
    datamodule.setup("fit")
    losses = {"mse": torch.nn.MSELoss(), "l1": torch.nn.L1Loss(), "huber": torch.nn.HuberLoss(),
              "smooth_l1": torch.nn.SmoothL1Loss()}  # fmt: skip
    for row in rows:
        sgd = {k: float(row[k]) for k in ("momentum", "dampening", "weight_decay")}
        neuron = PolynomialModel(degree=1)
        with torch.no_grad():
            neuron.linear.weight.fill_(6.0)
            neuron.linear.bias.fill_(-3.0)
        path = plain_sgd_path(neuron, datamodule.train_x, datamodule.train_y, 100, losses[row["loss"]], lr=0.1,
                              nesterov=row["nesterov"] == "True", **sgd)  # fmt: skip
        assert (float(row["final_w"]), float(row["final_b"])) == (path[-1, 1].item(), path[-1, 0].item()), row


@pytest.mark.slow
def test_a_diverging_run_is_marked_and_the_others_train_on(tmp_path) -> None:
    # lr 3 is above MSE's largest stable lr (0.976); L1's gradient is bounded, so its runs do not blow up.
    result = run_fitquad(
        "compare", "--config", str(CONFIGS / "sgd_article_grid.yaml"), "--losses", "[mse, l1]",
        "--settings", "[{name: plain}]", "--model.lr", "3", "--max_steps", str(STEPS), "--resolution", "11",
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().endswith("1 run(s) diverged (mse, plain): see the table")
    folder = tmp_path / "runs" / "sgd_article_grid" / "version_0"
    assert (folder / "compare.png").stat().st_size > 0
    mse, l1 = csv.DictReader((folder / "compare.csv").read_text().splitlines())
    assert (
        mse["diverged"].startswith("training diverged at step") and "the largest stable lr is 0.976" in mse["diverged"]
    )
    assert l1["diverged"] == ""
    datamodule = QuadraticDataModule(n_train=50, n_val=0, n_test=0, seed=20240215)
    datamodule.setup("fit")
    _, w, b = plain_gd(datamodule.train_x, datamodule.train_y, torch.nn.L1Loss(), lr=3.0)
    assert (float(l1["final_w"]), float(l1["final_b"])) == (w, b)
    assert "mse, plain: training diverged at step" in (folder / "compare.md").read_text()


def test_the_default_grid_is_written_to_a_config_that_runs_it_again(tmp_path, monkeypatch, capsys) -> None:
    # The article's settings are the default: config.yaml must hold them as settings a re-run reads back.
    monkeypatch.chdir(tmp_path)
    quick = ["--max_steps", "3", "--resolution", "5", "--losses", "[mse, l1]"]
    main(["compare", *quick])
    assert "Unable to serialize" not in capsys.readouterr().err
    first = tmp_path / "runs" / "compare" / "version_0"
    written = yaml.safe_load((first / "config.yaml").read_text())
    assert [setting["name"] for setting in written["settings"]] == [s.name for s in ARTICLE_SETTINGS]
    main(["compare", "--config", str(first / "config.yaml")])
    again = tmp_path / "runs" / "compare" / "version_1"
    assert (again / "compare.csv").read_text() == (first / "compare.csv").read_text()


def test_a_setting_named_with_commas_and_quotes_reads_back_from_compare_csv(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    name = 'momentum 0.5, "half"'
    settings = json.dumps([{"name": name, "momentum": 0.5}])  # JSON is YAML: as a shell user would quote it
    main(["compare", "--config", str(CONFIGS / "sgd_article_grid.yaml"), "--losses", "[mse]", "--settings", settings,
          "--max_steps", "5"])  # fmt: skip
    with next(tmp_path.glob("runs/*/version_0/compare.csv")).open(newline="") as table:
        rows = list(csv.DictReader(table))
    assert [row["setting"] for row in rows] == [name] and rows[0]["momentum"] == "0.5"


def test_a_compare_name_that_leads_out_of_runs_is_refused(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--config", str(CONFIGS / "sgd_article_grid.yaml"), "--name", "/tmp/elsewhere"])
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "name must name a folder inside runs/", "'/tmp/elsewhere'")
    assert not (tmp_path / "runs").exists() and not Path("/tmp/elsewhere").exists()


def test_a_setting_that_the_grid_sets_says_so(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--config", str(CONFIGS / "capacity.yaml")])  # a sweep config, whose model sets the loss
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "model.loss", "compare sets it for each row and column")
