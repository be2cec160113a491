"""Your own data (data.file): read as numpy reads it, split as asked, every bad file one line, and a fit on a file
that lands where the same points generated in memory do, checked against numpy's least squares."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import (
    CONFIGS,
    REPO,
    assert_one_line_error,
    fitquad_in_process,
    only_run_folder,
    read_summary,
    run_fitquad,
)
from fitquad.checks.data_files import held_out_splits, read_points
from fitquad.checks.file_data import FileDataModule
from fitquad.checks.validation import InvalidInput
from fitquad.core.data import QuadraticDataModule

POINTS = "x,y\n1,2\n2,5\n3,10\n4,17\n"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "name, text, x_column, y_column",
    [
        ("header.csv", POINTS, 0, 1),
        ("names.csv", POINTS, "x", "y"),
        ("swapped.csv", "y,x\n2,1\n5,2\n10,3\n17,4\n", "x", "y"),
        ("no_header.csv", "1,2\n2,5\n3,10\n4,17\n", 0, 1),
        ("comments.csv", "# from the lab\nx,y\n1,2\n\n2,5  # a note\n3,10\n4,17\n", "x", "y"),
        ("spaces.txt", "1 2\n2   5\n3 10\n4 17\n", 0, 1),
        ("tabs.tsv", "t\tx\ty\n0\t1\t2\n0\t2\t5\n0\t3\t10\n0\t4\t17\n", "x", "y"),
        ("excel.csv", '\ufeff"x";"y"\r\n"1";2\r\n2;5\r\n3;10\r\n4;17\r\n', "x", "y"),  # BOM, quotes, CRLF, ;
        ("pandas.csv", ",x,y\n0,1,2\n1,2,5\n2,3,10\n3,4,17\n", "x", "y"),  # DataFrame.to_csv's index column
    ],
)
def test_text_files_are_read_with_or_without_a_header(tmp_path, name, text, x_column, y_column):
    x, y = read_points("data.file", write(tmp_path, name, text), x_column, y_column)
    assert x.dtype == y.dtype == np.float32
    assert x.tolist() == [1, 2, 3, 4] and y.tolist() == [2, 5, 10, 17]


def test_npy_and_npz_files_are_read_by_position_or_name(tmp_path):
    x, y = np.array([1.0, 2.0, 3.0]), np.array([2.0, 5.0, 10.0])
    np.save(tmp_path / "plain.npy", np.stack([np.zeros(3), x, y], axis=1))
    structured = np.zeros(3, dtype=[("x", "f8"), ("y", "f8")])
    structured["x"], structured["y"] = x, y
    np.save(tmp_path / "fields.npy", structured)
    np.savez(tmp_path / "arrays.npz", y=y, x=x)
    for path, columns in [("plain.npy", (1, 2)), ("fields.npy", ("x", "y")), ("arrays.npz", ("x", "y"))]:
        read_x, read_y = read_points("data.file", tmp_path / path, *columns)
        assert read_x.tolist() == x.tolist() and read_y.tolist() == y.tolist(), path


BAD_FILES = [
    ("missing.csv", None, 0, 1, "data.file '{path}': no such file"),
    ("points.json", "{}", 0, 1,
     "data.file '{path}': unknown kind of file '.json'; allowed: .csv, .txt, .tsv, .dat, .npy, .npz"),
    ("word.csv", "x,y\n1,2\n3,abc\n", 0, 1, "data.file '{path}': line 3: column 'y' holds 'abc', not a number"),
    ("short.csv", "x,y\n1,2\n3\n", "x", "y", "data.file '{path}': line 3 has 1 column, no column 'y'"),
    ("nan.csv", "1,2\n\n3,nan\n", 0, 1, "data.file '{path}': line 3: y is nan, not a finite number"),
    ("inf.csv", "x,y\n-inf,2\n", 0, 1, "data.file '{path}': line 2: x is -inf, not a finite number"),
    ("huge.csv", "x,y\n1,2\n3,1e39\n", 0, 1, "data.file '{path}': line 3: y is 1e+39, beyond float32's largest number"),
    ("empty.csv", "# nothing yet\n\n", 0, 1, "data.file '{path}' holds no points"),
    ("header_only.csv", "x,y\n", 0, 1, "data.file '{path}' holds no points"),
    ("column.csv", POINTS, "speed", "y",
     "data.x_column 'speed' is not a column of data.file '{path}'; its columns are x, y"),
    ("position.csv", POINTS, 0, 2, "data.y_column 2 is not a column of data.file '{path}': it has 2 columns, 0 to 1"),
    ("nameless.csv", "1,2\n3,4\n", "x", "y",
     "data.x_column 'x' names a column, but data.file '{path}' does not name its columns (no header row): give its "
     "position, 0 first"),
    ("pandas.csv", ",x,y\n0,1,2\n1,3,4\n", 0, 1,
     "data.x_column 0 is the unnamed column of data.file '{path}', a row index (pandas' to_csv writes one unless "
     "index=False): choose the columns by name (e.g. data.x_column x), or save the file without its index"),
    ("latin1.csv", b"x,y\n1,2\n\xe9,3\n", 0, 1,
     "data.file '{path}' is not UTF-8 text: give a text file of columns, or a .npy or .npz file"),
]  # fmt: skip


@pytest.mark.parametrize("name, content, x_column, y_column, message", BAD_FILES)
def test_a_bad_file_is_one_line_naming_the_file_the_line_and_the_problem(
    tmp_path, name, content, x_column, y_column, message
):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(InvalidInput) as raised:
        read_points("data.file", path, x_column, y_column)
    assert str(raised.value) == message.format(path=path)


def test_bad_numpy_files_are_one_line(tmp_path):
    np.save(tmp_path / "vector.npy", np.arange(3.0))
    np.save(tmp_path / "text.npy", np.array([["a", "b"], ["c", "d"]]))
    np.savez(tmp_path / "ragged.npz", x=np.arange(3.0), y=np.arange(4.0))
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    cases = {
        "vector.npy": "holds an array of shape (3,): give a 2-D array, one column per variable, or a structured array",
        "text.npy": "the column data.x_column picks holds <U1 values, not real numbers",
        "ragged.npz": "x ('x') has 3 values and y ('y') has 4",
        "broken.npz": "is not a .npz archive numpy can read",
    }
    for name, message in cases.items():
        columns = ("x", "y") if name == "ragged.npz" else (0, 1)
        with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_points("data.file", tmp_path / name, *columns)


def test_a_file_too_large_for_the_memory_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = write(tmp_path, "points.csv", POINTS * 100)
    monkeypatch.setattr("fitquad.checks.limits.available_memory", lambda: 1000)
    message = r"^data.file '.*points.csv' \(2,200 bytes\) would need about .* of memory, .*: use fewer points"
    with pytest.raises(InvalidInput, match=message):
        read_points("data.file", path, 0, 1)


def test_held_out_splits_are_seeded_disjoint_and_in_file_order():
    x = np.arange(100, dtype=np.float32)
    splits = held_out_splits(x, -x, val_fraction=0.2, test_fraction=0.1, seed=3)
    sizes = {name: len(split[0]) for name, split in splits.items()}
    assert sizes == {"train": 70, "val": 20, "test": 10}
    together = np.concatenate([split[0] for split in splits.values()])
    assert sorted(together.tolist()) == x.tolist()  # every point in exactly one split
    for split_x, split_y in splits.values():
        assert (np.diff(split_x) > 0).all() and (split_y == -split_x).all()
    again = held_out_splits(x, -x, 0.2, 0.1, seed=3)
    assert all((again[name][0] == splits[name][0]).all() for name in splits)
    assert not (held_out_splits(x, -x, 0.2, 0.1, seed=4)["val"][0] == splits["val"][0]).all()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"val_file": "v.csv"}, "data.val_file is for points read from a file: it needs data.file"),
        ({"file": "a.csv", "val_file": "v.csv", "val_fraction": 0.1}, "data.val_fraction and data.val_file both give"),
        ({"file": "a.csv", "x_column": "t", "y_column": "t"}, "data.x_column and data.y_column must be two columns"),
        ({"file": "a.csv", "val_fraction": 1.0}, r"data.val_fraction must be in \[0, 1\)"),
        ({"file": "a.csv", "x_column": -1}, "data.x_column must be a column's name, or its position ≥ 0"),
    ],
)
def test_file_options_that_cannot_go_together_are_refused(options, message):
    with pytest.raises(InvalidInput, match=message):
        FileDataModule(**options)


def test_a_held_out_split_of_one_point_is_refused(tmp_path):
    # R², a validation metric, needs two points: 6 points with the default 0.2 held out would give one.
    path = tmp_path / "six.csv"
    path.write_text("x,y\n" + "".join(f"{i},{2 * i}\n" for i in range(6)))
    datamodule = FileDataModule(file=str(path))
    with pytest.raises(InvalidInput, match="data.val_fraction gives 1 validation point, and R² needs at least 2"):
        datamodule.setup("fit")


def save_csv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    # %.9g prints every float32 exactly (9 significant digits round-trip it), so the file holds the same points.
    np.savetxt(path, np.stack([x, y], axis=1), fmt="%.9g", delimiter=",", header="x,y", comments="")


def least_squares(x: np.ndarray, y: np.ndarray, degree: int) -> tuple[np.ndarray, float]:
    design = np.vander(x.astype(np.float64), degree + 1, increasing=True)
    coefficients, *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
    return coefficients, float(np.mean((design @ coefficients - y) ** 2))


@pytest.mark.slow
def test_a_fit_on_a_csv_lands_where_the_same_points_generated_do(tmp_path, monkeypatch):
    """The real command on a CSV of the points fitquad generates: the same trained coefficients, the same
    verdict, the closed-form reference equal to numpy's least squares on the file's points, and σ² estimated
    from its residuals (labelled so) where the generated run knows it."""
    generated = QuadraticDataModule(n_train=40, n_val=30, n_test=0, seed=7, noise_std=0.5)
    generated.setup("fit")
    save_csv(tmp_path / "train.csv", generated.train_x.numpy(), generated.train_y.numpy())
    save_csv(tmp_path / "val.csv", generated.val_x.numpy(), generated.val_y.numpy())
    training = ["--model.feature_scaling", "standardize", "--model.lr", "0.3", "--trainer.max_steps", "120"]
    (tmp_path / "generated").mkdir()
    fitquad_in_process(
        "fit", "--data.n_train", "40", "--data.n_val", "30", "--data.seed", "7", "--data.noise_std", "0.5", *training,
        cwd=tmp_path / "generated", monkeypatch=monkeypatch,
    )  # fmt: skip
    result = run_fitquad(
        "fit", "--data.file", "train.csv", "--data.val_file", "val.csv", "--trainer.logger.init_args.name", "mine",
        *training, cwd=tmp_path,
    )  # fmt: skip
    from_file = read_summary(only_run_folder(tmp_path, "mine"))
    from_memory = read_summary(only_run_folder(tmp_path / "generated", "fitquad"))
    assert from_file["coefficients"] == from_memory["coefficients"]  # bit for bit: the same float32 points
    assert from_file["val_mse"] == from_memory["val_mse"]
    assert from_file["diagnosis"]["verdict"] == from_memory["diagnosis"]["verdict"] == "converged"

    x, y = generated.train_x.numpy(), generated.train_y.numpy()
    coefficients, mse = least_squares(x, y, degree=2)
    reference = from_file["reference"]
    np.testing.assert_allclose(list(reference["coefficients"].values()), coefficients, rtol=1e-9)
    np.testing.assert_allclose(reference["train_mse_optimum"], mse, rtol=1e-9)
    sigma_hat = np.sqrt(mse * 40 / (40 - 3))  # residual variance with n − p degrees of freedom
    np.testing.assert_allclose(reference["noise_std"], sigma_hat, rtol=1e-9)
    assert reference["noise_std_estimated"] is True
    assert from_memory["reference"]["noise_std"] == 0.5 and from_memory["reference"]["noise_std_estimated"] is False
    assert "σ̂² estimated from the optimum's residuals" in result.stdout
    assert (only_run_folder(tmp_path, "mine") / "fit.png").stat().st_size > 0


@pytest.mark.slow
def test_a_bad_file_stops_the_command_with_one_line_and_no_run_folder(tmp_path):
    write(tmp_path, "points.csv", "x,y\n1,2\n2,5\n3,oops\n4,17\n")
    result = run_fitquad("fit", "--data.file", "points.csv", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "data.file 'points.csv'", "line 4", "column 'y'", "'oops'", "not a number")
    assert not (tmp_path / "runs").exists()
    write(tmp_path, "few.csv", "x,y\n1,2\n2,5\n")
    result = run_fitquad("fit", "--data.file", "few.csv", "--data.val_fraction", "0", cwd=tmp_path, check=False)
    assert result.returncode == 2 and not (tmp_path / "runs").exists()
    assert_one_line_error(
        result.stderr, "the training data has 2 points", "data.val_fraction", "model.degree 2 needs at least 3"
    )


@pytest.mark.slow
def test_the_capacity_sweep_on_your_own_data_matches_numpys_least_squares(tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("*.ipynb"))
    config = str(CONFIGS / "your_data_capacity.yaml")
    run_fitquad("sweep", "--config", config, "--sweep.values", "[1, 2, 3]", cwd=tmp_path)
    folder = only_run_folder(tmp_path, "your_data_capacity")
    table = (folder / "sweep.md").read_text()
    assert "Noise floor σ² unknown (your own data" in table and "Validation minimum at degree = 2" in table
    x, y = read_points("data.file", REPO / "examples/stopping_distances.csv", "speed_kmh", "distance_m")
    splits = held_out_splits(x, y, val_fraction=0.25, test_fraction=0.0, seed=0)
    (train_x, train_y), (val_x, val_y) = splits["train"], splits["val"]
    rows = [line.split(",") for line in (folder / "sweep.csv").read_text().split()[1:]]
    for degree, row in zip((1, 2, 3), rows, strict=True):
        coefficients, train_mse = least_squares(train_x, train_y, degree)
        val_design = np.vander(val_x.astype(np.float64), degree + 1, increasing=True)
        val_mse = np.mean((val_design @ coefficients - val_y) ** 2)
        assert int(row[0]) == degree
        np.testing.assert_allclose([float(row[1]), float(row[2])], [train_mse, val_mse], rtol=1e-9)
        assert math.isnan(float(row[3]))  # the noise floor: unknown


def test_the_your_data_config_runs_and_estimates_the_noise(tmp_path, monkeypatch):
    shutil.copytree(REPO / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("*.ipynb"))
    fitquad_in_process("fit", "--config", str(CONFIGS / "your_data.yaml"), cwd=tmp_path, monkeypatch=monkeypatch)
    summary = read_summary(only_run_folder(tmp_path, "your_data"))
    assert summary["diagnosis"]["verdict"] == "converged" and summary["reference"]["noise_std_estimated"] is True
    assert 2.0 < summary["reference"]["noise_std"] < 4.0  # the file's scatter is 3 m (its header says how it was made)


def test_test_and_predict_on_your_own_data_use_the_held_out_test_points(tmp_path, monkeypatch, capsys):
    shutil.copytree(REPO / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("*.ipynb"))
    config = str(CONFIGS / "your_data.yaml")
    fitquad_in_process("fit", "--config", config, "--data.test_fraction", "0.2", cwd=tmp_path, monkeypatch=monkeypatch)
    folder = only_run_folder(tmp_path, "your_data")
    checkpoint = str(folder / "checkpoints" / "last.ckpt")
    fitquad_in_process("test", "--config", str(folder / "config.yaml"), "--ckpt_path", checkpoint, cwd=tmp_path,
                       monkeypatch=monkeypatch)  # fmt: skip
    fitquad_in_process("predict", "--config", str(folder / "config.yaml"), "--ckpt_path", checkpoint, cwd=tmp_path,
                       monkeypatch=monkeypatch)  # fmt: skip
    x, y = read_points("data.file", REPO / "examples/stopping_distances.csv", "speed_kmh", "distance_m")
    test_x, test_y = held_out_splits(x, y, val_fraction=0.25, test_fraction=0.2, seed=0)["test"]
    c, b, a = read_summary(folder)["coefficients"].values()
    prediction = a * test_x.astype(np.float64) ** 2 + b * test_x + c
    metrics = json.loads((folder / "test_metrics.json").read_text())
    np.testing.assert_allclose(metrics["test/mse"], np.mean((prediction - test_y) ** 2), rtol=1e-5)
    predicted = np.loadtxt(folder / "predictions.csv", delimiter=",", skiprows=1)
    assert predicted[:, 0].tolist() == test_x.tolist() and len(test_x) == 12
    np.testing.assert_allclose(predicted[:, 1], prediction, rtol=1e-5)
    with pytest.raises(SystemExit):
        fitquad_in_process("test", "--config", str(folder / "config.yaml"), "--data.test_fraction", "0",
                           "--ckpt_path", checkpoint, cwd=tmp_path, monkeypatch=monkeypatch)  # fmt: skip
    assert (
        capsys.readouterr().err.strip().endswith("test needs test points: set data.test_fraction > 0 or data.test_file")
    )


def test_any_config_can_be_pointed_at_a_file_and_its_generated_data_options_are_unused(tmp_path, monkeypatch, capsys):
    save_csv(tmp_path / "points.csv", *(np.arange(12, dtype=np.float32),) * 2)
    lesson3 = str(CONFIGS / "lesson3.yaml")  # sets true_a, noise_std, n_train 20, ... for generated data
    fitquad_in_process("fit", "--config", lesson3, "--data.file", "points.csv", "--trainer.max_steps", "10",
                       cwd=tmp_path, monkeypatch=monkeypatch)  # fmt: skip
    assert "fitquad: data: 10 training and 2 validation points from points.csv" in capsys.readouterr().out
    assert len(read_summary(only_run_folder(tmp_path, "lesson3"))["reference"]["coefficients"]) == 3
    with pytest.raises(SystemExit):
        fitquad_in_process("sweep", "--config", str(CONFIGS / "learning_curve.yaml"), "--data.file", "points.csv",
                           cwd=tmp_path, monkeypatch=monkeypatch)  # fmt: skip
    assert "sweep.parameter data.n_train is for generated data" in capsys.readouterr().err


@pytest.mark.slow
def test_a_sweep_on_a_bad_file_stops_before_its_folder_is_made(tmp_path):
    write(tmp_path, "points.csv", "speed_kmh,distance_m\n1,2\n2,5\n3,oops\n4,17\n")
    config = str(CONFIGS / "your_data_capacity.yaml")
    result = run_fitquad("sweep", "--config", config, "--data.file", "points.csv", cwd=tmp_path, check=False)
    assert result.returncode == 2 and not (tmp_path / "runs").exists()
    assert_one_line_error(result.stderr, "data.file 'points.csv'", "line 4", "column 'distance_m'", "not a number")
