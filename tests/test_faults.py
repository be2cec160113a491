"""Faults: a signal mid-fit saves a checkpoint and stops cleanly, the resumed fit ends bit for bit where
an uninterrupted one does, checkpoint writes are atomic, and bad checkpoint files are refused."""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.utilities.exceptions import SIGTERMException

from conftest import (
    CONFIGS,
    assert_one_line_error,
    fit_in_process,
    only_run_folder,
    read_summary,
    regression,
    run_fitquad,
)
from fitquad.callbacks.interrupts import CheckpointOnSignal
from fitquad.checks.checkpoint_io import SafeCheckpointIO, load_checkpoint
from fitquad.checks.validation import InvalidInput
from fitquad.commands.cli import main
from fitquad.core.data import InMemoryBatches, QuadraticDataModule
from fitquad.core.module import QuadraticRegression

# Mini-batches whose fused items straddle epochs and passes: 20 points in batches of 6 (three full
# batches and a short one per pass), 2 steps per item, 5 steps per epoch.
# fused_steps: the loader's steps per item, and the module (FusedQuadraticRegression; 1: the textbook module).
MINI_BATCH = dict(n_train=20, batch_size=6, fused_steps=2, steps_per_epoch=5)
FULL_BATCH = dict(n_train=20, batch_size=None, fused_steps=3, steps_per_epoch=7)
TEXTBOOK = dict(MINI_BATCH, fused_steps=1)
BLOCKS = dict(MINI_BATCH, shuffle="blocks")


@pytest.mark.parametrize(
    "options", [MINI_BATCH, FULL_BATCH, BLOCKS, TEXTBOOK], ids=["mini-batch", "full-batch", "blocks", "textbook"]
)
def test_batches_resumed_from_state_dict_continue_the_same_sequence(options: dict) -> None:
    x, y = torch.arange(20.0), -torch.arange(20.0)
    loader_options = dict(
        batch_size=options["batch_size"],
        steps_per_epoch=options["steps_per_epoch"],
        fused_steps=options["fused_steps"],
        seed=3,
        shuffle=options.get("shuffle", "every_pass"),
    )
    reference = InMemoryBatches(x, y, **loader_options)
    expected = [batch for _ in range(6) for batch in reference]

    for stop_after in range(1, 12):  # stop after every item position, mid-epoch or not
        loader = InMemoryBatches(x, y, **loader_options)
        served = []
        while len(served) < stop_after:
            for batch in loader:
                served.append(batch)
                if len(served) == stop_after:
                    break
        resumed = InMemoryBatches(x, y, **loader_options)
        resumed.load_state_dict(loader.state_dict())
        # Lightning takes len() as the whole epoch's length and expects only the items not yet served.
        rest_of_epoch = list(resumed)
        assert len(rest_of_epoch) == len(loader) - loader.items_served
        served.extend(rest_of_epoch)
        while len(served) < len(expected):
            served.extend(resumed)
        assert len(served) == len(expected)
        for (got_x, got_y), (want_x, want_y) in zip(served, expected, strict=True):
            # An item is a (steps, size) tensor, a tuple of 1-D tensors under block shuffling, or one 1-D batch.
            assert torch.equal(flat(got_x), flat(want_x)) and torch.equal(flat(got_y), flat(want_y))


def flat(batches) -> torch.Tensor:
    """An item's points in order: one 1-D batch, a (steps, size) tensor, or a tuple of 1-D tensors."""
    return batches if isinstance(batches, torch.Tensor) and batches.dim() == 1 else torch.cat(list(batches))


class SignalAtItem(L.Callback):
    """Sends this process a signal after the given number of training_steps (items)."""

    def __init__(self, item: int, signum: int) -> None:
        self.item, self.signum, self.seen = item, signum, 0

    def on_train_batch_end(self, *args) -> None:
        self.seen += 1
        if self.seen == self.item:
            os.kill(os.getpid(), self.signum)


def build(options: dict) -> tuple[QuadraticRegression, QuadraticDataModule]:
    # Momentum, so the optimizer's state matters too.
    fused_steps = options["fused_steps"] if options["fused_steps"] > 1 else None
    model = regression(fused_steps, degree=2, feature_scaling="standardize", lr=0.05, momentum=0.9)
    data_options = {name: value for name, value in options.items() if name != "fused_steps"}
    return model, QuadraticDataModule(seed=7, **data_options)


@pytest.mark.parametrize(
    ("options", "item", "signum"),
    [
        (MINI_BATCH, 4, signal.SIGTERM),
        (MINI_BATCH, 3, signal.SIGINT),
        (FULL_BATCH, 5, signal.SIGINT),
        (TEXTBOOK, 7, signal.SIGTERM),
    ],
    ids=["mini-batch-sigterm-mid-epoch", "mini-batch-sigint-end-of-epoch", "full-batch-sigint", "textbook-sigterm"],
)
def test_signal_saves_a_checkpoint_and_resuming_gives_identical_parameters(
    options: dict, item: int, signum: int, tmp_path: Path
) -> None:
    max_steps = 40
    reference_model, datamodule = build(options)
    fit_in_process(reference_model, datamodule, tmp_path / "reference", max_steps=max_steps)

    model, datamodule = build(options)
    on_signal = CheckpointOnSignal()
    # SIGTERM keeps Lightning's own handling: it raises SIGTERMException after the training_step.
    stops = pytest.raises(SIGTERMException) if signum == signal.SIGTERM else contextlib.nullcontext()
    with stops:
        fit_in_process(
            model,
            datamodule,
            tmp_path / "interrupted",
            max_steps=max_steps,
            callbacks=[SignalAtItem(item, signum), on_signal],
            plugins=[SafeCheckpointIO()],
        )
    assert on_signal.received == signum
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored after the fit
    checkpoint = on_signal.checkpoint_path
    assert checkpoint == tmp_path / "interrupted" / "checkpoints" / "interrupted.ckpt" and checkpoint.is_file()
    assert 0 < load_checkpoint(checkpoint)["global_step"] < max_steps

    model, datamodule = build(options)
    trainer = fit_in_process(
        model, datamodule, tmp_path / "resumed", ckpt_path=checkpoint, max_steps=max_steps, plugins=[SafeCheckpointIO()]
    )
    assert trainer.global_step == max_steps
    for resumed, reference in zip(model.parameters(), reference_model.parameters(), strict=True):
        assert torch.equal(resumed, reference)


@pytest.mark.slow
def test_sigterm_to_the_real_command_saves_and_resume_matches_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lesson3 in mini-batches, with a ModelCheckpoint and no early stopping, long enough to be
    # signalled while training.
    config = yaml.safe_load((CONFIGS / "lesson3.yaml").read_text())
    config["data"].update(batch_size=6, steps_per_epoch=10)
    config["model"].update(momentum=0.9, lr=0.05)
    config["trainer"].update(max_steps=10**7, log_every_n_steps=50)
    config["trainer"]["callbacks"] = [
        c for c in config["trainer"]["callbacks"] if "EarlyStopping" not in c["class_path"]
    ]
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(config))

    # Output to files, not pipes: a pipe nobody reads fills up and blocks the run.
    stdout_file, stderr_file = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(stdout_file, "w") as stdout_sink, open(stderr_file, "w") as stderr_sink:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("fitquad")), "fit", "--config", "long.yaml"],
            cwd=tmp_path,
            stdout=stdout_sink,
            stderr=stderr_sink,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 120
        while "fitquad: training" not in stdout_file.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, stderr_file.read_text()
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        process.kill()
    stdout, stderr = stdout_file.read_text(), stderr_file.read_text()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    checkpoint = only_run_folder(tmp_path, "long") / "checkpoints" / "interrupted.ckpt"
    assert f"resume with --ckpt_path {checkpoint.relative_to(tmp_path)}" in stdout
    steps_done = load_checkpoint(checkpoint)["global_step"]
    assert steps_done > 0

    # Resume, and for reference run uninterrupted, to the same step (one that ends mid-epoch and
    # mid-item), through the command's own entry point in this process.
    max_steps = str(steps_done + 23)
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", "long.yaml", "--ckpt_path", str(checkpoint), "--trainer.max_steps", max_steps])
    (tmp_path / "runs" / "long").rename(tmp_path / "runs" / "interrupted")
    main(["fit", "--config", "long.yaml", "--trainer.max_steps", max_steps])
    resumed = read_summary(tmp_path / "runs" / "interrupted" / "version_1")
    uninterrupted = read_summary(only_run_folder(tmp_path, "long"))
    assert resumed["optimizer_steps"] == uninterrupted["optimizer_steps"] == int(max_steps)
    assert resumed["coefficients"] == uninterrupted["coefficients"]  # JSON floats round-trip exactly


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.ckpt"
    io = SafeCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def killed_mid_write(checkpoint: dict, file) -> None:
        file.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # as a kill would stop it

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no partial file left


class PicklePayload:
    """Unpickling this runs open(path, "w"), which creates the file: the proof a payload ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.slow
def test_a_checkpoint_carrying_a_pickle_payload_is_refused_without_running_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"degree": 2}, "payload": PicklePayload(marker)}, evil)
    assert not marker.exists()

    with pytest.raises(InvalidInput, match="refused: it holds pickled objects"):
        SafeCheckpointIO().load_checkpoint(evil, weights_only=False)  # refused even when asked otherwise
    arguments = ["--config", str(CONFIGS / "lesson3.yaml"), "--ckpt_path", str(evil)]
    result = run_fitquad("fit", *arguments, cwd=tmp_path, check=False)  # the real command
    assert result.returncode == 2
    assert_one_line_error(result.stderr, f"ckpt_path {evil}", "refused", "pickled objects (io.open)")
    with pytest.raises(SystemExit) as exit_info:  # and validate, through the same entry point in this process
        main(["validate", *arguments])
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, f"ckpt_path {evil}", "refused", "pickled objects (io.open)")
    assert not marker.exists()


def test_resuming_a_finished_run_from_last_ckpt_continues_it_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lesson3 has EarlyStopping, and its last.ckpt is saved at the end of an epoch: Lightning's own
    # EarlyStopping used to fail on such a resume (no val/loss yet).
    monkeypatch.chdir(tmp_path)
    lesson3 = ["fit", "--config", str(CONFIGS / "lesson3.yaml")]
    main([*lesson3, "--trainer.max_steps", "30"])
    main([*lesson3, "--trainer.max_steps", "40", "--ckpt_path", "runs/lesson3/version_0/checkpoints/last.ckpt"])
    main([*lesson3, "--trainer.max_steps", "40"])
    resumed = read_summary(tmp_path / "runs" / "lesson3" / "version_1")
    uninterrupted = read_summary(tmp_path / "runs" / "lesson3" / "version_2")
    assert resumed["optimizer_steps"] == uninterrupted["optimizer_steps"] == 40
    assert resumed["coefficients"] == uninterrupted["coefficients"]


@pytest.fixture(scope="module")
def article_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A full and a weights-only checkpoint of a 5-step sgd_article fit, as `fitquad fit` trains it."""
    folder = tmp_path_factory.mktemp("article_checkpoints")
    model = QuadraticRegression(degree=1, feature_scaling="none", init_coefficients=[-3.0, 6.0], lr=0.1)
    trainer = fit_in_process(model, QuadraticDataModule(), folder, max_steps=5, plugins=[SafeCheckpointIO()])
    paths = {"full": folder / "full.ckpt", "weights": folder / "weights.ckpt"}
    trainer.save_checkpoint(paths["full"])
    trainer.save_checkpoint(paths["weights"], weights_only=True)
    return paths


def test_a_checkpoint_cut_anywhere_or_with_a_flipped_bit_is_one_line(article_checkpoints, tmp_path) -> None:
    whole = article_checkpoints["full"].read_bytes()
    damaged = tmp_path / "damaged.ckpt"
    for cut in range(0, len(whole), max(1, len(whole) // 40)):  # 40 cut points from the first byte to the end
        damaged.write_bytes(whole[:cut])
        with pytest.raises(InvalidInput, match=r"^ckpt_path \S+ is truncated or corrupt: [^\n]*$"):
            load_checkpoint(damaged)
    # One bit flipped inside a weight: torch.load would read a wrong weight; the record's CRC catches it.
    with zipfile.ZipFile(article_checkpoints["full"]) as archive:
        record = next(info for info in archive.infolist() if "/data/" in info.filename)
    name_length, extra_length = struct.unpack("<HH", whole[record.header_offset + 26 : record.header_offset + 30])
    flipped = bytearray(whole)
    flipped[record.header_offset + 30 + name_length + extra_length] ^= 1
    damaged.write_bytes(bytes(flipped))
    with pytest.raises(InvalidInput, match=f"record {record.filename} fails its CRC check"):
        load_checkpoint(damaged)
    torch.save({"state_dict": {}}, damaged)
    with pytest.raises(InvalidInput, match="its state_dict holds no model weights"):
        load_checkpoint(damaged)


@pytest.mark.parametrize(
    ("command", "checkpoint", "extra", "message"),
    [
        (
            "fit",
            "full",
            ["--model.lr", "0.01"],
            "was trained with model.lr 0.1, but this run asks for 0.01: a checkpoint keeps the model it was "
            "trained as (set model.lr to 0.1, or start a new fit)",
        ),
        (
            "validate",
            "full",
            ["--model.degree", "2", "--model.init_coefficients", "null"],
            "was trained with model.degree 1, but this run asks for 2",
        ),
        ("fit", "weights", [], "holds the weights only (no optimizer or loop state): a fit cannot resume from it"),
    ],
    ids=["explicit-option-dropped", "other-experiment", "weights-only-resume"],
)
def test_a_checkpoint_that_contradicts_the_run_is_refused_in_one_line(
    article_checkpoints, command, checkpoint, extra, message, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    path = article_checkpoints[checkpoint]
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--config", str(CONFIGS / "sgd_article.yaml"), "--ckpt_path", str(path), *extra])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"fitquad: error: ckpt_path {path} {message}") and error.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # refused before any run folder is made


def test_a_weights_only_checkpoint_still_validates(article_checkpoints, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    main(
        ["validate", "--config", str(CONFIGS / "sgd_article.yaml"), "--ckpt_path", str(article_checkpoints["weights"])]
    )
    assert "val/mse" in capsys.readouterr().out
