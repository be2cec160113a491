"""`fitquad lr-find`: Lightning's range test works under manual optimization, and 2/λmax is numpy's."""

from __future__ import annotations

import re

import numpy as np
import pytest
from matplotlib.image import imread

from conftest import CONFIGS, only_run_folder, run_fitquad
from fitquad.commands.lr_find import main


def numpy_stable_lr(design: np.ndarray) -> float:
    return 2.0 / np.linalg.eigvalsh(2.0 / len(design) * design.T @ design)[-1]


def test_lr_find_on_lesson3(tmp_path, monkeypatch, capsys) -> None:
    # lesson3 fuses 10 steps per training_step: lr-find must still take one learning rate per step.
    monkeypatch.chdir(tmp_path)
    min_lr, max_lr, steps = 1e-3, 3.0, 40
    import fitquad.commands.lr_find

    plotted = {}
    save_plot = fitquad.commands.lr_find.save_plot

    def recording_save_plot(finder, suggestion, stable_lr, raw_losses, path):
        plotted.update(raw=raw_losses, smoothed=finder.results["loss"])
        save_plot(finder, suggestion, stable_lr, raw_losses, path)

    monkeypatch.setattr(fitquad.commands.lr_find, "save_plot", recording_save_plot)
    main([
        "--config", str(CONFIGS / "lesson3.yaml"),
        "--lr_find.min_lr", str(min_lr), "--lr_find.max_lr", str(max_lr), "--lr_find.num_training", str(steps),
        "--lr_find.early_stop_threshold", "null",
    ])  # fmt: skip
    out = capsys.readouterr().out

    # One learning rate per optimizer step, reaching max_lr exactly at the last one: lr_find's schedule
    # advanced once a step (never stepped, it would stay at min_lr; twice a step, pass max_lr halfway).
    tried = re.search(r"tried (\d+) learning rates from (\S+) to (\S+)\n", out)
    assert int(tried[1]) == steps
    assert float(tried[2]) == pytest.approx(min_lr, rel=1e-3)
    assert float(tried[3]) == pytest.approx(max_lr, rel=1e-3)

    t = np.arange(20.0)  # lesson3's t = 0..19, standardised by the model
    z = (t - t.mean()) / t.std()
    printed = float(re.search(r"2/λmax = (\S+) ", out)[1])
    assert printed == pytest.approx(numpy_stable_lr(np.stack([z**0, z, z**2], axis=1)), rel=1e-3)
    suggestion = float(re.search(r"suggests lr = (\S+),", out)[1])
    assert min_lr <= suggestion <= max_lr

    # The plot shows each step's own loss beside Lightning's smoothed curve: one per learning rate tried, the
    # first being the loss at the start (the smoothed curve's first point is not: see lr_find.save_plot).
    assert len(plotted["raw"]) == steps and all(np.isfinite(plotted["raw"]))
    assert plotted["raw"][0] > plotted["smoothed"][0]
    folder = only_run_folder(tmp_path, "lesson3")
    assert not list(folder.glob("events.out.tfevents.*"))  # no TensorBoard run beside the fits
    pixels = imread(folder / "lr_find.png")
    assert pixels[..., :3].std() > 0.1


@pytest.mark.slow
def test_lr_find_through_a_pipe_draws_no_progress_bar(tmp_path) -> None:
    # Lightning's finder draws its own tqdm bar: 100 redrawn frames in a log file, unless fitquad turns it off.
    result = run_fitquad("lr-find", "--config", str(CONFIGS / "lesson3.yaml"), cwd=tmp_path)
    assert "Finding best initial lr" not in result.stderr and "\r" not in result.stderr, result.stderr[-300:]
    assert "lr finder suggests lr" in result.stdout


def test_a_loss_that_blows_up_ends_the_range_test_not_the_command(tmp_path, monkeypatch, capsys) -> None:
    # With its own early stop off, the test climbs past the largest stable lr until fitquad's divergence guard (the
    # loss 10⁴ × its first) ends it: the plot and the suggestion are still made, not a "training diverged" error.
    monkeypatch.chdir(tmp_path)
    main(["--config", str(CONFIGS / "lesson3.yaml"), "--lr_find.max_lr", "100", "--lr_find.num_training", "300",
          "--lr_find.early_stop_threshold", "null"])  # fmt: skip
    out = capsys.readouterr().out
    tried = int(re.search(r"lr finder tried (\d+) learning rates", out)[1])
    assert tried < 300  # stopped where the loss blew up
    assert (only_run_folder(tmp_path, "lesson3") / "lr_find.png").is_file()


def test_too_few_learning_rates_for_a_suggestion_say_what_to_raise(tmp_path, monkeypatch, capsys) -> None:
    # Lightning's suggestion needs more finite losses than 5 learning rates give: the plot is still drawn, without
    # a suggestion, and fitquad's line names the options that give it more.
    monkeypatch.chdir(tmp_path)
    main(["--config", str(CONFIGS / "lesson3.yaml"), "--lr_find.num_training", "5"])
    out = capsys.readouterr().out
    assert "made no suggestion" in out and "raise lr_find.num_training" in out
    assert (only_run_folder(tmp_path, "lesson3") / "lr_find.png").is_file()
