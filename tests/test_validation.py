"""Bad input: each of a table of mistakes gets one line naming the field and what is allowed, status 2,
no traceback. Run in-process through `fitquad.commands.cli.main` (the command's own entry point), and a few
through the real command in a subprocess."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, assert_one_line_error, run_fitquad
from fitquad.commands.cli import main

LESSON3 = str(CONFIGS / "lesson3.yaml")

# (arguments after `fitquad fit --config configs/lesson3.yaml`, what its one line names: the option at fault,
# what is allowed and what was given; the wording around them is free to change). {tmp} is the test's folder,
# where bad_files() below writes bad config and checkpoint files.
BAD_INPUTS = [
    (["--data.noise_std", "-1"], ("data.noise_std", "must be ≥ 0", "got -1.0")),
    (["--data.noise_std", "nan"], ("data.noise_std", "must be a number", "got nan")),
    (["--data.n_train", "2"], ("data.n_train", "must be ≥ model.degree + 1 = 3", "got 2")),
    (["--data.n_train", "0"], ("data.n_train", "must be ≥ 1", "got 0")),
    (["--data.n_val", "1"], ("data.n_val", "must be 0", "got 1")),
    (["--data.n_val", "0"], ("data.n_val", "must be ≥ 1 when a callback monitors a validation metric", "got 0")),
    (["--data.batch_size", "0"], ("data.batch_size", "must be ≥ 1, or null for full batch", "got 0")),
    (["--data.batch_size", "x"], ("data.batch_size", "must be an integer or null", "got x")),
    (
        ["--model", "FusedQuadraticRegression", "--model.fused_steps", "0"],
        ("model.fused_steps", "must be ≥ 1", "got 0"),
    ),
    (
        ["--data.steps_per_epoch", "-3"],
        ("data.steps_per_epoch", "must be ≥ 1, or null for one pass over the data", "got -3"),
    ),
    (
        ["--data.x_max", "-1"],
        ("data.x_max", "must be > data.x_min for x_distribution grid", "got x_min 0.0, x_max -1.0"),
    ),
    (["--data.x_std", "0"], ("data.x_std", "must be > 0", "got 0.0")),
    (["--data.seed", "-1"], ("data.seed", "must be in [0, 2**32)", "got -1")),
    (["--model.degree", "-1"], ("model.degree", "must be ≥ 0", "got -1")),
    (["--model.degree", "2.5"], ("model.degree", "must be an integer", "got 2.5")),
    (["--model.lr", "0"], ("model.lr", "must be > 0", "got 0.0")),
    (["--model.lr", "abc"], ("model.lr", "must be a number", "got abc")),
    (["--model.momentum", "1"], ("model.momentum", "must be in [0, 1)", "got 1.0")),
    (["--model.momentum", "-0.5"], ("model.momentum", "must be in [0, 1)", "got -0.5")),
    (["--model.dampening", "2"], ("model.dampening", "must be in [0, 1]", "got 2.0")),
    (["--model.weight_decay", "-0.1"], ("model.weight_decay", "must be ≥ 0", "got -0.1")),
    (
        ["--model.nesterov", "true", "--model.momentum", "0.9", "--model.dampening", "0.1"],
        ("model.nesterov", "needs model.momentum > 0 and model.dampening = 0", "got momentum 0.9, dampening 0.1"),
    ),
    (
        ["--model.nesterov", "true"],
        ("model.nesterov", "needs model.momentum > 0 and model.dampening = 0", "got momentum 0.0, dampening 0.0"),
    ),
    (
        ["--optimizer", "SGD", "--optimizer.lr", "0.1", "--optimizer.nesterov", "true"],
        (
            "optimizer.nesterov",
            "needs optimizer.momentum > 0 and optimizer.dampening = 0",
            "got momentum 0.0, dampening 0.0",
        ),
    ),
    (["--optimizer", "Adam", "--optimizer.lr", "-1"], ("optimizer.lr", "must be > 0", "got -1.0")),
    (["--model.loss", "hinge"], ("model.loss", "must be one of mse, l1, huber, smooth_l1", "got hinge")),
    (["--model.huber_delta", "0"], ("model.huber_delta", "must be > 0", "got 0.0")),
    (
        ["--model.init_coefficients", "[1, 2]"],
        ("model.init_coefficients", "must have model.degree + 1 = 3 values", "got [1.0, 2.0]"),
    ),
    (
        ["--trainer.gradient_clip_val", "-1"],
        ("trainer.gradient_clip_val", "must be ≥ 0, or null for no clipping", "got -1"),
    ),
    (["--trainer.log_every_n_steps", "0"], ("trainer.log_every_n_steps", "must be ≥ 1", "got 0")),
    (["--trainer.max_steps", "-5"], ("trainer.max_steps", "must be ≥ 0, or -1 for no limit", "got -5")),
    (["--max_steps", "5"], ("--max_steps", "did you mean --trainer.max_steps?")),
    (["--model.lrr", "1"], ("model.lrr", "is not an option of QuadraticRegression", "did you mean --model.lr?")),
    (
        ["--model", "FusedQuadraticRegression", "--model.fused_step", "1"],
        ("model.fused_step", "is not an option of FusedQuadraticRegression", "did you mean --model.fused_steps?"),
    ),
    (["--model.nope", "1"], ("model.nope", "is not an option of QuadraticRegression")),
    (["--config", "{tmp}/unknown_key.yaml"], ("data.noise", "did you mean --data.noise_std?")),
    (["--config", "{tmp}/missing.yaml"], ("{tmp}/missing.yaml", "does not exist")),
    (["--config", "{tmp}/not_yaml.yaml"], ("--config", "must be a YAML file")),
    (["--config", "{tmp}/broken.yaml"], ("--config", "is not valid YAML", "while parsing a flow sequence")),
    (["--ckpt_path", "{tmp}/missing.ckpt"], ("ckpt_path", "must be a checkpoint file", "got '{tmp}/missing.ckpt'")),
    (["--ckpt_path", "{tmp}/truncated.ckpt"], ("ckpt_path {tmp}/truncated.ckpt", "is truncated or corrupt")),
    (["--ckpt_path", "{tmp}/empty.ckpt"], ("ckpt_path {tmp}/empty.ckpt", "is truncated or corrupt")),
    (
        ["--ckpt_path", "{tmp}/not_lightning.ckpt"],
        ("ckpt_path {tmp}/not_lightning.ckpt", "is not a Lightning checkpoint"),
    ),
    (["--weights_only", "false"], ("weights_only", "must be true or null")),
    (["--model", "FusedQuadraticRegression", "--optimizer", "LBFGS"], ("optimizer LBFGS", "needs a closure")),
    (["--config", "{tmp}/duplicate.yaml"], ("--config", "is not valid YAML", "key 'lr' appears twice in one mapping")),
    (["--config", "{tmp}/bomb.yaml"], ("--config", "is not valid YAML", "it expands to more than 100,000 values")),
    (["--trainer.val_check_interval", "0"], ("trainer.val_check_interval", "must be > 0", "got 0")),
    # Lightning compares an integer val_check_interval with an epoch's batches only as the fit starts.
    (["--trainer.val_check_interval", "1000"], ("trainer.val_check_interval", "at most the 10 training batches")),
    (
        ["--trainer.val_check_interval", "8", "--trainer.limit_train_batches", "0.5"],
        ("trainer.val_check_interval", "at most the 5 training batches", "got 8"),
    ),
    (["--seed_everything", "99999999999"], ("seed_everything", "must be in [0, 2**32)", "got 99999999999")),
    (["--trainer.devices", "-1"], ("trainer.devices -1", "every GPU", "CPU processes ≥ 1")),
    (["--trainer.accelerator", "tpu"], ("trainer.accelerator tpu", "needs a TPU and torch_xla")),
    # Lightning and torch take these unchecked and fail mid-fit (a division by zero, a metric it cannot find).
    (["--trainer.accumulate_grad_batches", "0"], ("trainer.accumulate_grad_batches", "must be ≥ 1", "got 0")),
    (
        ["--optimizer", "Adam", "--lr_scheduler", "StepLR", "--lr_scheduler.step_size", "0"],
        ("lr_scheduler.step_size", "must be ≥ 1", "got 0"),
    ),
    (["--lr_scheduler", "CosineAnnealingLR", "--lr_scheduler.T_max", "0"], ("lr_scheduler.T_max", "must be ≥ 1")),
    (["--lr_scheduler", "ExponentialLR", "--lr_scheduler.gamma", "-1"], ("lr_scheduler.gamma", "must be > 0", "-1")),
    (
        ["--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor", "val/nope"],
        ("trainer.callbacks", "EarlyStopping monitors 'val/nope'", "val/mse", "val/r2"),
    ),
    (["--trainer.limit_train_batches", "-1"], ("trainer.limit_train_batches is refused by Lightning", "-1")),
    # A class that refuses its arguments as it is built: the section that built it.
    (
        ["--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.save_top_k", "-5"],
        ("trainer.callbacks is refused", "save_top_k=-5"),
    ),
    (["--optimizer", "Adam", "--optimizer.betas", "[2, 0.5]"], ("optimizer is refused", "beta parameter")),
    (
        ["--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath", "{tmp}/elsewhere"],
        ("trainer.callbacks is refused", "more than one stateful callback of type `ModelCheckpoint`"),
    ),
    (
        ["--lr_scheduler", "ExponentialLR", "--lr_scheduler.gamma", "0.5", "--lr_scheduler.last_epoch", "5"],
        ("lr_scheduler is refused", "initial_lr"),
    ),
    (
        ["--trainer.logger.init_args.name", "../../escaped"],
        ("trainer.logger.init_args.name", "must name a folder inside its save_dir", "'../../escaped'"),
    ),
    # A section given a value: read as a YAML file of its options (lr-find and sweep take no model class).
    (["--data", "missing.yaml"], ("--data takes a YAML file of data's options", "'missing.yaml' is no such file")),
    # Another command's config: the command to run it with.
    (
        ["--config", str(CONFIGS / "capacity.yaml")],
        ("sweep.parameter", "sweep belongs to fitquad sweep: run this with fitquad sweep"),
    ),
    (["--ckpt_path", "registry:my-model"], ("ckpt_path registry:my-model", "pip install litmodels")),
    (["--model.lr", "-inf"], ("expected one argument", "after '='")),  # argparse reads -inf as an option
    (["--config", "{tmp}"], ("--config: Path is not a file",)),
    (["--model.class_path", "foo.Bar"], ("model.class_path foo.Bar", "cannot be used", "No module named 'foo'")),
    (["--model", "torch.nn.Linear"], ("model must be QuadraticRegression (or a subclass)", "got torch.nn.Linear")),
    # A union of Literals: every allowed name, not only the first Literal's (64, 32, 16).
    (["--trainer.precision", "13"], ("trainer.precision", "16-mixed", "bf16-mixed", "64-true", "null", "got 13")),
]
if importlib.util.find_spec("transformer_engine") is None:  # a precision plugin whose package is missing
    missing_plugin = ("trainer.precision is refused", "transformer_engine")
    BAD_INPUTS.append((["--trainer.precision", "transformer-engine"], missing_plugin))
if not torch.cuda.is_available():
    BAD_INPUTS.append((["--trainer.accelerator", "gpu"], ("trainer.accelerator gpu", "needs a CUDA GPU")))


@pytest.fixture
def bad_files(tmp_path: Path) -> Path:
    (tmp_path / "unknown_key.yaml").write_text("data:\n  noise: 1.0\n")  # given after lesson3.yaml
    (tmp_path / "not_yaml.yaml").write_text("just a sentence, not a mapping\n")
    (tmp_path / "broken.yaml").write_text("data: [1, 2\n")
    (tmp_path / "duplicate.yaml").write_text("model:\n  lr: 0.1\n  momentum: 0.5\n  lr: 0.2\n")
    # Six lines of nested aliases that would expand to a million values.
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]" for a, b in zip("abcde", "bcdef", strict=True)]
    (tmp_path / "bomb.yaml").write_text("\n".join(levels) + "\n")
    torch.save({"state_dict": {}}, tmp_path / "whole.ckpt")
    whole = (tmp_path / "whole.ckpt").read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "empty.ckpt").write_bytes(b"")
    torch.save({"weights": torch.ones(2)}, tmp_path / "not_lightning.ckpt")
    return tmp_path


def _arguments(extra: list[str], tmp: Path) -> list[str]:
    return ["fit", "--config", LESSON3, *(a.replace("{tmp}", str(tmp)) for a in extra)]


@pytest.mark.parametrize(("extra", "named"), BAD_INPUTS, ids=[" ".join(extra) for extra, _ in BAD_INPUTS])
def test_bad_input_is_one_line_naming_the_field(
    extra: list[str], named: tuple[str, ...], bad_files: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    monkeypatch.chdir(bad_files)
    with pytest.raises(SystemExit) as exit_info:
        main(_arguments(extra, bad_files))
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    named = [name.replace("{tmp}", str(bad_files)) for name in named]
    assert_one_line_error(captured.err, *named)


# The real command, for a few of them: nothing else on stderr (no usage text, warnings, traceback).
NOT_YAML = next(index for index, (extra, _) in enumerate(BAD_INPUTS) if "not_yaml" in " ".join(extra))


@pytest.mark.slow
@pytest.mark.parametrize("case", [0, NOT_YAML], ids=["range", "non-yaml-config"])
def test_the_real_command_prints_one_line_and_exits_2(case: int, bad_files: Path) -> None:
    extra, named = BAD_INPUTS[case]
    result = run_fitquad(*_arguments(extra, bad_files), cwd=bad_files, check=False)
    assert result.returncode == 2
    # stdout: only the line saying what is about to run, printed before PyTorch loads (fitquad.commands.entry).
    assert result.stdout.splitlines() == [
        f"fitquad: {' '.join(_arguments(extra, bad_files))}: starting (loading PyTorch and Lightning)"
    ]
    assert_one_line_error(result.stderr, *(name.replace("{tmp}", str(bad_files)) for name in named))


FUSED = ["--model", "FusedQuadraticRegression", "--model.fused_steps", "10"]


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (
            [*FUSED, "--trainer.callbacks+=LearningRateMonitor"],
            ("LearningRateMonitor", "10 optimizer steps each", "model.fused_steps 1", "logging_interval epoch"),
        ),
        (
            [*FUSED, "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.every_n_train_steps", "25"],
            ("ModelCheckpoint.every_n_train_steps", "a multiple of model.fused_steps = 10", "got 25"),
        ),
        (
            [
                "--trainer.callbacks+=fitquad.callbacks.clipping.GradientClipping",
                "--trainer.callbacks.gradient_clip_val",
                "0",
            ],
            ("GradientClipping.gradient_clip_val", "must be > 0", "got 0.0"),
        ),
    ],
    ids=["lr-monitor-under-fusion", "checkpoint-steps-under-fusion", "clipping-zero"],
)
def test_callbacks_that_fused_steps_or_their_own_ranges_rule_out_are_one_line(
    extra: list[str],
    named: tuple[str, ...],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(_arguments(extra, tmp_path))
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, *named)
    assert not (tmp_path / "runs").exists()


def without_a_checkpoint(command: str) -> tuple[str, ...]:
    return (f"{command} needs --ckpt_path", "untrained model")


def not_a_command(command: str, hint: str) -> tuple[str, ...]:
    return (f"{command!r} is not a command", hint, "fit, validate, test, predict, sweep, compare, lr-find")


@pytest.mark.parametrize(
    ("command", "named"),
    [
        *((command, without_a_checkpoint(command)) for command in ("validate", "test", "predict")),
        ("fitt", not_a_command("fitt", "did you mean fit?")),  # the nearest command, for a typo
        ("train", not_a_command("train", "")),
    ],
)
def test_a_command_that_cannot_run_as_given_is_one_line(command: str, named: tuple[str, ...], capsys) -> None:
    # validate, test and predict without a checkpoint would evaluate an untrained model; an unknown command names
    # every command (LightningCLI's own error names its four).
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--config", LESSON3])
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, *named)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        # A callback that refuses the Trainer's settings as the fit starts (MisconfigurationException).
        (
            ["--trainer.callbacks+=StochasticWeightAveraging", "--trainer.callbacks.swa_lrs", "0.01"],
            ("trainer.callbacks is refused", "swa_epoch_start"),
        ),
    ],
)
def test_what_lightning_refuses_as_the_fit_starts_is_one_line(extra, named, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", LESSON3, *extra, "--fit_diagnosis.figures", "false"])
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, *named)


def test_a_trainer_option_lightning_refuses_from_its_fit_loop_is_named() -> None:
    # What no check before the fit catches (under DDP a process's batches are not counted ahead) still reads as one
    # line: the ValueError Lightning's fit loop raises, naming the option.
    import lightning as L

    from fitquad.commands.fit_cli import refused_at_fit_start
    from fitquad.core.data import QuadraticDataModule
    from fitquad.core.module import QuadraticRegression

    trainer = L.Trainer(val_check_interval=1000, max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    with pytest.raises(ValueError) as raised:
        trainer.fit(QuadraticRegression(), datamodule=QuadraticDataModule(batch_size=5))
    refused = refused_at_fit_start(raised.value)
    assert refused is not None and str(refused).startswith("trainer.val_check_interval is refused by Lightning")


def test_a_value_error_of_fitquads_own_stays_a_traceback() -> None:
    # Only a Trainer option that Lightning refuses becomes one line: any other ValueError is a bug to see whole.
    from fitquad.commands.fit_cli import refused_at_fit_start

    try:
        int("not a number")
    except ValueError as error:
        assert refused_at_fit_start(error) is None
    try:
        raise ValueError("`max_steps` is wrong")  # names an option, but raised here, not by Lightning
    except ValueError as error:
        assert refused_at_fit_start(error) is None
