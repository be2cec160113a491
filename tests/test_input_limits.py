"""Inputs that are each in range but cannot be run: values whose arithmetic overflows the run's precision,
sizes beyond the machine's memory, epochs too long to count one by one; and the extra commands' (sweep,
compare, lr-find) options, all checked before anything trains or a folder is made."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, assert_one_line_error, read_summary
from fitquad.checks.limits import check_representable
from fitquad.checks.validation import InvalidInput
from fitquad.commands.cli import main
from fitquad.core.batches import InMemoryBatches

SGD_ARTICLE = str(CONFIGS / "sgd_article.yaml")

# (options after `fitquad fit --config configs/sgd_article.yaml`, words the one line must contain)
OVERFLOWS = [
    (["--model.lr", "1e308"], ["model.lr must be below float32's largest number, 3.4e+38, got 1e+308"]),
    (["--data.noise_std", "1e308"], ["data.noise_std", "makes y reach"]),
    (["--data.true_a", "1e308"], ["data.true_a", "beyond float32"]),
    (["--data.true_b", "1e36"], ["data.true_b", "loss overflow float32"]),
    (["--data.true_a", "1e25"], ["data.true_a", "loss overflow float32"]),
    (["--data.x_distribution", "uniform", "--data.x_max", "1e308"], ["data.x_max", "beyond float32"]),
    (["--data.x_std", "1e30"], ["data.x_std", "beyond float32"]),
    (["--trainer.precision", "16-mixed", "--data.true_c", "1e6"], ["data.true_c", "float16"]),
    (["--data.n_train", "10000000000"], ["data.n_train 10000000000", "GiB of memory", "is available"]),
    (
        ["--model.degree", "100000", "--model.init_coefficients", "null", "--data.n_train", "200000"],
        ["n_train 200000", "model.degree 100000", "of memory"],
    ),
]


# Checked exactly on the drawn data (a bound from the options alone would refuse too much), before the run folder
# is made too.
AT_THE_START = [
    (
        ["--model.init_coefficients", "[1e30, 0]"],
        ["model.init_coefficients makes the loss overflow float32 at the start"],
    ),
    (["--model.lr", "1e38"], ["model.lr 1e+38 makes the first step overflow float32: lr × gradient reaches"]),
    (
        ["--model.degree", "40", "--model.init_coefficients", "null", "--data.x_std", "10", "--data.n_train", "60"],
        ["model.degree 40", "model.feature_scaling none", "overflows float32 (largest 3.4e+38)"],
    ),
]


@pytest.mark.parametrize(
    ("extra", "words"), OVERFLOWS + AT_THE_START, ids=[" ".join(extra) for extra, _ in OVERFLOWS + AT_THE_START]
)
def test_values_that_overflow_or_do_not_fit_are_one_line(
    extra: list[str], words: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", SGD_ARTICLE, *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fitquad: error: ") and "\n" not in err, err
    assert all(word in err for word in words), err
    assert not (tmp_path / "runs").exists()


def test_a_high_degree_that_fits_in_float32_is_not_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # x^30 of 50 normal draws stays near 1e12: a bound from the options (x up to 8, 8^30 ≈ 1e27) would refuse
    # it. The check on the drawn data lets it run.
    monkeypatch.chdir(tmp_path)
    options = ["--model.degree", "30", "--model.init_coefficients", "null", "--model.lr", "1e-30"]
    main(["fit", "--config", SGD_ARTICLE, *options, "--trainer.max_steps", "3"])
    assert read_summary(next((tmp_path / "runs").glob("*/version_0")))["optimizer_steps"] == 3


def test_float64_runs_what_float32_cannot_represent() -> None:
    data = dict(true_a=1e25, true_b=1.0, true_c=2.0, noise_std=0.3, x_distribution="normal", x_mean=0.0, x_std=1.0)
    data.update(n_train=50, x_min=-2.0, x_max=2.0)
    model = dict(degree=2, lr=0.1, feature_scaling="none", init_coefficients=None)
    with pytest.raises(InvalidInput, match="overflow float32"):
        check_representable(data, model, "32-true")
    check_representable(data, model, "64-true")  # |y|² · n ≈ 10⁵⁵: fine in float64


def test_every_shipped_fit_config_passes_the_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The limits only refuse what cannot run: one step of each config still trains.
    monkeypatch.chdir(tmp_path)
    for name in (
        "lesson3",
        "lesson3_raw",
        "lesson3_whiten",
        "lesson3_lr_too_high",
        "sgd_article",
        "overfit_early_stop",
    ):
        main(["fit", "--config", str(CONFIGS / f"{name}.yaml"), "--trainer.max_steps", "1"])
    assert len(list((tmp_path / "runs").glob("*/version_0/summary.json"))) == 6


def test_epoch_length_in_closed_form_matches_counting_item_by_item() -> None:
    rng = random.Random(0)
    for _ in range(1500):
        n = rng.randint(1, 40)
        batch_size = rng.choice([None, *range(1, 45)])
        steps_per_epoch = rng.choice([None, rng.randint(1, 200)])
        batches = InMemoryBatches(
            torch.zeros(n), torch.zeros(n), batch_size, steps_per_epoch, rng.randint(1, 9), 0,
            rng.choice(["every_pass", "blocks"]),
        )  # fmt: skip
        for start in range(batches.batches_per_pass + 1):
            assert batches.count_items(start) == sum(1 for _ in batches._item_steps(start))


def test_an_epoch_of_a_trillion_steps_trains_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = InMemoryBatches(torch.zeros(50), torch.zeros(50), 7, 10**12, 3, 0)
    started = time.perf_counter()
    # 50 points in batches of 7: a pass is 7 full batches (3 items of ≤ 3 fused steps) and a short one (1 item).
    assert len(batches) == 10**12 // 8 * 4
    assert time.perf_counter() - started < 1.0  # counted, not enumerated (enumerating would take hours)
    monkeypatch.chdir(tmp_path)
    options = ["--data.batch_size", "7", "--data.steps_per_epoch", str(10**12), "--trainer.max_steps", "20"]
    main(["fit", "--config", SGD_ARTICLE, *options])
    assert read_summary(next((tmp_path / "runs").glob("*/version_0")))["optimizer_steps"] == 20


COMPARE = ["compare", "--config", str(CONFIGS / "sgd_article_grid.yaml")]
LR_FIND = ["lr-find", "--config", SGD_ARTICLE]

COMPARE_MISTAKES = [
    (COMPARE, ["--losses", "[]"], "losses must list at least one loss"),
    (COMPARE, ["--settings", "[]"], "settings must list at least one optimizer setting"),
    (COMPARE, ["--settings", "[plain]"], "settings must list mappings of options, e.g. [{name: plain"),
    (COMPARE, ["--levels", "1"], "levels must be ≥ 2"),
    (COMPARE, ["--resolution", "100000"], "resolution must be in [2, 2001]"),
    (COMPARE, ["--resolution", "1"], "resolution must be in [2, 2001]"),
    (COMPARE, ["--margin", "-0.5"], "margin must be a finite number ≥ 0"),
    (COMPARE, ["--max_steps", "0"], "max_steps must be in [1, 100,000]"),
    (COMPARE, ["--max_steps", "100000000"], "max_steps must be in [1, 100,000]"),
    (COMPARE, ["--losses", "[mse, l1, mse]"], "losses must be distinct: 'mse' appears twice"),
    # Each setting's first step, on the drawn points, as `fitquad fit` checks it: before any run trains. A fault of
    # the model section is named as its own; a setting's alone, as the setting's.
    (COMPARE, ["--model.lr", "1e38"], "fitquad: error: model.lr 1e+38 makes the first step overflow float32"),
    (COMPARE, ["--settings", "[{name: big, lr: 1e38}]"], "settings 'big': lr 1e+38 makes the first step overflow"),
    (COMPARE, ["--model.degree", "2"], "fitquad: error: model.init_coefficients must have model.degree + 1 = 3"),
    (
        COMPARE,
        [
            "--model.degree",
            "40",
            "--model.feature_scaling",
            "none",
            "--model.init_coefficients",
            "null",
            "--data.x_std",
            "10",
        ],
        "fitquad: error: model.degree 40 with model.feature_scaling none",
    ),
    (COMPARE, ["--parameters", "[w, w]"], "parameters must be two different names among ['b', 'w']"),
    (COMPARE, ["--parameters", "[w, q]"], "parameters must be two different names among ['b', 'w']"),
    (COMPARE, ["--settings", '[{"name": "a", "momentum": 2}]'], "settings 'a': momentum must be in [0, 1)"),
    (COMPARE, ["--settings", '[{"name": "a"}, {"name": "a"}]'], "settings must be distinct: 'a' appears twice"),
    (
        COMPARE,
        ["--settings", '[{"name": "a", "nesterov": true}]'],
        "settings 'a': nesterov needs momentum > 0",
    ),
    (COMPARE, ["--model.lr", "1e308"], "model.lr must be below float32's largest number"),
    # Fewer points than parameters: the optimum every path is measured against is not unique.
    (COMPARE, ["--data.n_train", "1"], "data.n_train must be ≥ model.degree + 1 = 2"),
    (
        COMPARE,
        ["--data.file", str(CONFIGS.parent / "tests" / "helpers" / "one_point.csv"), "--data.val_fraction", "0"],
        "the training data has 1 point (data.file's points less those data.val_fraction",
    ),
]

LR_FIND_MISTAKES = [
    (LR_FIND, ["--lr_find.min_lr", "0"], "lr_find.min_lr must be > 0, got 0.0"),
    (
        LR_FIND,
        ["--lr_find.min_lr", "10", "--lr_find.max_lr", "1"],
        "lr_find.max_lr must be > lr_find.min_lr = 10.0, got 1.0",
    ),
    (LR_FIND, ["--lr_find.num_training", "0"], "lr_find.num_training must be ≥ 2 (learning rates tried), got 0"),
    (LR_FIND, ["--lr_find.mode", "cubic"], "lr_find.mode must be one of exponential, linear, got 'cubic'"),
    (LR_FIND, ["--lr_find.early_stop_threshold", "-1"], "lr_find.early_stop_threshold must be > 0 or null, got -1.0"),
]


@pytest.mark.parametrize(
    ("command", "extra", "message"),
    COMPARE_MISTAKES + LR_FIND_MISTAKES,
    ids=[" ".join(command[:1] + extra) for command, extra, _ in COMPARE_MISTAKES + LR_FIND_MISTAKES],
)
def test_compare_and_lr_find_check_every_option_before_training(
    command: list[str], extra: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([*command, *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fitquad: error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "runs").exists()


def test_sweep_refuses_repeated_values_and_checks_each_value_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    weight_decay = str(CONFIGS / "weight_decay.yaml")
    for values, message in [
        ("[0.1, 0.1]", "sweep.values must be distinct: 0.1 appears twice"),
        ("[0.1, -1]", "model.weight_decay must be ≥ 0, got -1.0"),
        ("[0.1, 1e308]", "model.weight_decay must be below float32's largest number"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["sweep", "--config", weight_decay, "--sweep.values", values])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    # The first step of each value, on the drawn points, as `fitquad fit` checks it before training.
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--config", weight_decay, "--sweep.parameter", "model.lr", "--sweep.values", "[0.1, 1e38]"])
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "sweep.values: model.lr 1e+38", "first step overflow float32")
    assert not (tmp_path / "runs").exists()


def test_a_diverging_sweep_value_is_tabulated_and_the_others_still_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    options = ["--sweep.parameter", "model.lr", "--sweep.values", "[0.1, 5.0, 0.3]", "--trainer.max_steps", "20"]
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--config", str(CONFIGS / "capacity.yaml"), *options])
    assert exit_info.value.code == 1  # as `fitquad fit` exits for a diverged run
    captured = capsys.readouterr()
    assert "1 run(s) diverged (5.0)" in captured.err and "Traceback" not in captured.err
    folder = tmp_path / "runs" / "capacity" / "version_0"
    rows = (folder / "sweep.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["0.1", "5.0", "0.3"]  # every value, in order
    assert "lr = 5.0 diverged: training diverged at step" in (folder / "sweep.md").read_text()
    assert (folder / "sweep.png").is_file()
