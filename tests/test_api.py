"""fitquad from Python: fitquad.fit, sweep and compare give what the shell commands give, and refuse the same
input with the same line, raised instead of printed."""

from __future__ import annotations

import logging
import warnings

import pytest

import fitquad
from conftest import CONFIGS, article_data, only_run_folder, read_summary, read_train_losses, run_fitquad
from fitquad.commands.api import command_line
from fitquad.commands.cli import main

SGD_ARTICLE = str(CONFIGS / "sgd_article.yaml")


def test_keywords_are_the_command_lines_options():
    assert command_line("c.yaml", {"model": {"lr": 0.1, "loss": "l1"}, "ckpt_path": "a b.ckpt"}) == [
        "--config", "c.yaml", "--model.lr", "0.1", "--model.loss", "l1", "--ckpt_path", "a b.ckpt",
    ]  # fmt: skip
    assert command_line(None, {"model.lr": 0.1, "trainer": {"callbacks": [{"class_path": "X"}]}}) == [
        "--model.lr", "0.1", "--trainer.callbacks", '[{"class_path": "X"}]',
    ]  # fmt: skip


@pytest.mark.slow
def test_fit_from_python_gives_what_the_command_gives(tmp_path, monkeypatch):
    (tmp_path / "shell").mkdir()
    run_fitquad("fit", "--config", SGD_ARTICLE, "--model.lr", "0.05", cwd=tmp_path / "shell")
    shell = only_run_folder(tmp_path / "shell", "sgd_article")
    monkeypatch.chdir(tmp_path)
    filters, levels = list(warnings.filters), [logging.getLogger(n).level for n in ("lightning.pytorch", "lightning")]

    result = fitquad.fit(SGD_ARTICLE, model={"lr": 0.05})

    assert result.run_folder == tmp_path / "runs" / "sgd_article" / "version_0"
    expected = {**read_summary(shell), "run_folder": str(result.run_folder.relative_to(tmp_path))}
    for section in ("diagnosis", "reference", "conditioning"):  # each number named where one differs
        got, want = result.summary[section], expected[section]
        assert {k: v for k, v in got.items() if want.get(k) != v} == {}, {k: want.get(k) for k in got}
    assert result.summary == expected
    assert result.losses.tolist() == read_train_losses(shell)
    assert result.module.coefficients() == result.summary["coefficients"]  # the trained module itself
    assert result.trainer.global_step == len(result.losses) and len(result.datamodule.train_x) == 50
    assert set(result.figures) == {"fit", "residuals", "loss_landscape"}
    assert result.verdict == result.summary["diagnosis"]["verdict"] == "underfitting"  # a line through a parabola
    html = result._repr_html_()  # what Jupyter shows for the result: the diagnosis, then the figures inline
    assert result.summary["diagnosis"]["in_plain_words"] in html
    assert html.count('<img src="data:image/png;base64,') == len(result.figures)
    # The command's warning filters and Lightning's log level were set for the call only.
    assert warnings.filters == filters
    assert [logging.getLogger(n).level for n in ("lightning.pytorch", "lightning")] == levels


# (command-line arguments, the same as keyword arguments)
BAD_INPUT = [
    (["--model.lr", "-1"], {"model": {"lr": -1}}),
    (["--model.lr", "abc"], {"model.lr": "abc"}),
    (["--model.no_such_option", "1"], {"model": {"no_such_option": 1}}),
    (["--data.file", "missing.csv"], {"data": {"file": "missing.csv"}}),
    (["--ckpt_path", "best"], {"ckpt_path": "best"}),
]


@pytest.mark.parametrize("args, keywords", BAD_INPUT)
def test_bad_input_raises_the_line_the_command_prints(tmp_path, monkeypatch, capsys, args, keywords):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["fit", "--config", SGD_ARTICLE, *args])
    assert exited.value.code == 2
    printed = capsys.readouterr().err.strip()
    with pytest.raises(fitquad.InvalidInput) as raised:
        fitquad.fit(SGD_ARTICLE, **keywords)
    assert f"fitquad: error: {raised.value}" == printed
    assert not (tmp_path / "runs").exists()


def test_a_fit_that_blows_up_raises_training_diverged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(fitquad.TrainingDiverged, match="training diverged at step .* with lr 5"):
        fitquad.fit(str(CONFIGS / "lesson3.yaml"), model={"lr": 5.0})


def test_sweep_and_compare_from_python_return_their_tables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    swept = fitquad.sweep(str(CONFIGS / "capacity.yaml"), sweep={"values": [1, 2]})
    assert [row["degree"] for row in swept.rows] == [1, 2] and swept.rows[1]["run"] == "degree_2"
    assert swept.markdown == (swept.run_folder / "sweep.md").read_text() and set(swept.figures) == {"sweep"}
    draws = fitquad.sweep(str(CONFIGS / "capacity_draws.yaml"), sweep={"values": [1, 2], "draws": 5})
    assert [row["draws"] for row in draws.rows] == [5, 5] and set(draws.figures) == {"sweep", "bias_variance"}
    assert draws.rows[0]["bias_squared"] > draws.rows[1]["bias_squared"]  # the line misses the curve, degree 2 not
    grid = fitquad.compare(
        str(CONFIGS / "sgd_article_grid.yaml"), losses=["mse"], settings=[{"name": "plain"}], max_steps=5,
        resolution=11, data={"steps_per_epoch": 5},
    )  # fmt: skip
    assert [(row["loss"], row["setting"]) for row in grid.rows] == [("mse", "plain")]
    assert set(grid.figures) == {"compare"} and "<pre>" in grid._repr_html_()
    with pytest.raises(fitquad.InvalidInput, match="^losses must list at least one loss"):
        fitquad.compare(str(CONFIGS / "sgd_article_grid.yaml"), losses=[])


def test_fit_takes_your_points_as_arrays_and_can_be_quiet(tmp_path, monkeypatch, capsys):
    # x and y as arrays are fitted as the same points in a file are: saved once, held out as a file's, re-runnable.
    monkeypatch.chdir(tmp_path)
    x, y = article_data()
    options = dict(model={"degree": 1, "lr": 0.1}, trainer={"max_steps": 30})
    result = fitquad.fit(SGD_ARTICLE, x=x.numpy(), y=y.tolist(), quiet=True, **options)
    assert capsys.readouterr().out == ""  # quiet: nothing printed, everything in the result
    (saved,) = (tmp_path / "runs" / "arrays").glob("points-*.npz")
    assert result.datamodule.hparams.file == str(saved.relative_to(tmp_path))
    assert result.datamodule.train_size + len(result.datamodule.val_x) == 50
    from_file = fitquad.fit(SGD_ARTICLE, data={"file": str(saved)}, **options)
    assert from_file.summary["coefficients"] == result.summary["coefficients"]
    assert "fitquad: run finished in" in capsys.readouterr().out  # not quiet: the lines, as the command prints them
    with pytest.raises(fitquad.InvalidInput, match="x and y must hold as many points: x has 3, y 2"):
        fitquad.fit(x=[1.0, 2.0, 3.0], y=[1.0, 2.0])
    with pytest.raises(fitquad.InvalidInput, match="give both, or neither"):
        fitquad.fit(x=[1.0, 2.0, 3.0])
