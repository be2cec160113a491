"""Multi-process DDP on CPU (gloo): every process holds all the points and trains on its own part, gradients are
averaged at every optimizer step, and full-batch DDP on 2 processes lands where one process does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from conftest import CONFIGS, only_run_folder, read_summary, read_train_losses, run_fitquad
from fitquad.checks.validation import InvalidInput
from fitquad.commands.cli import main
from fitquad.commands.lr_find import stable_lrs
from fitquad.commands.run_folders import make_run_folder
from fitquad.core.data import QuadraticDataModule
from fitquad.core.module import QuadraticRegression, initialize


def attach_fake_trainer(datamodule: QuadraticDataModule, rank: int, world_size: int, device: str) -> None:
    """What the datamodule reads from the Trainer: the process's device, rank and number of processes."""
    strategy = SimpleNamespace(root_device=torch.device(device))
    datamodule.trainer = SimpleNamespace(
        strategy=strategy, global_rank=rank, world_size=world_size, lightning_module=None
    )


@pytest.mark.parametrize("shuffle", ["every_pass", "blocks"])
@pytest.mark.parametrize("processes", [2, 3])
def test_every_process_holds_all_the_points_and_trains_on_its_own_part(processes, shuffle) -> None:
    # As a DistributedSampler splits a dataset: process r trains on points r, r + n, r + 2n, … and every
    # statistic of the training points is taken locally, the same number as in one process.
    whole = QuadraticDataModule(n_train=12, batch_size=2, shuffle=shuffle)
    whole.setup("fit")
    parts = []
    for rank in range(processes):
        datamodule = QuadraticDataModule(n_train=12, batch_size=2, shuffle=shuffle)
        attach_fake_trainer(datamodule, rank, processes, "cpu")
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        assert torch.equal(datamodule.train_x, whole.train_x) and datamodule.train_size == 12
        parts.append(torch.cat([x for x, _ in loader]))
    # Together the parts are every training point once.
    assert torch.equal(torch.cat(parts).sort().values, whole.train_x.sort().values)


def test_a_processs_part_is_moved_to_its_device_once() -> None:
    datamodule = QuadraticDataModule(n_train=20, x_distribution="grid")
    # "meta": a device that is not the CPU, to see the tensors moved once, when the loader is made.
    attach_fake_trainer(datamodule, 1, world_size=2, device="meta")
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert loader.x.device.type == loader.y.device.type == "meta" and len(loader.x) == 10


def test_unequal_parts_are_refused() -> None:
    datamodule = QuadraticDataModule(n_train=21)
    attach_fake_trainer(datamodule, rank=0, world_size=2, device="cpu")
    datamodule.setup("fit")
    with pytest.raises(InvalidInput, match="21 training points must be a multiple of the 2 processes under DDP"):
        datamodule.train_dataloader()


@pytest.mark.slow
def test_unequal_parts_are_one_line_before_any_process_starts_or_folder_is_made(tmp_path) -> None:
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    result = run_fitquad("fit", "--data.n_train", "21", *ddp, cwd=tmp_path, check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("fitquad: error:")]
    assert len(errors) == 1 and "data.n_train must be a multiple of the 2 processes" in errors[0]
    assert "got 21" in errors[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_ddp_by_lightning_and_by_torchrun_lands_where_one_process_does(tmp_path: Path, monkeypatch) -> None:
    # lesson3: 20 grid points, full batch, the textbook module. The two processes' parts
    # (even and odd points) have different gradients, so the parameters only agree with one process's
    # if the gradients are averaged at every step. Launched twice: by Lightning itself (--trainer.devices 2), and
    # by torchrun, which (like SLURM's srun) starts every rank with the same command line: they must agree on one
    # run folder without talking (the job's id names it), and rank 0 alone makes it. Lightning's sync_dist
    # warnings about epoch-level metrics do not appear (they are synced).
    config = ["--config", str(CONFIGS / "lesson3.yaml"), "--trainer.max_steps", "25"]
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    for launcher in ("lightning", "torchrun"):
        (tmp_path / launcher).mkdir()
    run_fitquad("fit", *config, *ddp, cwd=tmp_path / "lightning")
    fitquad = str(Path(sys.executable).with_name("fitquad"))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", "localhost:0", "--rdzv-id", "job7", fitquad]  # fmt: skip
    result = subprocess.run(
        [*torchrun, "fit", *config, *ddp], cwd=tmp_path / "torchrun", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sync_dist" not in result.stderr
    assert "fitquad: data: 20 training points; each of 2 processes trains on its own 10" in result.stdout
    assert [p.name for p in (tmp_path / "torchrun" / "runs" / "lesson3").iterdir()] == ["version_torchrun-job7"]
    monkeypatch.chdir(tmp_path)
    main(["fit", *config])
    single_folder = only_run_folder(tmp_path, "lesson3")
    single = read_summary(single_folder)
    for ddp_folder in (
        only_run_folder(tmp_path / "lightning", "lesson3"),
        only_run_folder(tmp_path / "torchrun", "lesson3"),
    ):
        summary = read_summary(ddp_folder)
        assert summary["optimizer_steps"] == single["optimizer_steps"] == 25
        # float32 sums in a different order: equal to rounding.
        torch.testing.assert_close(
            torch.tensor(list(summary["coefficients"].values())), torch.tensor(list(single["coefficients"].values()))
        )
        # The recorded losses are the mean over the two parts: the loss on all the data.
        torch.testing.assert_close(
            torch.tensor(read_train_losses(ddp_folder)), torch.tensor(read_train_losses(single_folder))
        )


@pytest.mark.slow
def test_ddp_spawn_hands_its_weights_back_and_lands_where_one_process_does(tmp_path: Path, monkeypatch) -> None:
    # ddp_spawn saves rank 0's trained weights, a plain state_dict, through the checkpoint plugin and reads them back
    # in the main process: fitquad's weights-only plugin must read what Lightning wrote (it refused it before).
    config = ["--config", str(CONFIGS / "lesson3.yaml"), "--trainer.max_steps", "5"]
    spawn = ["--trainer.strategy", "ddp_spawn", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    (tmp_path / "spawn").mkdir()
    result = run_fitquad("fit", *config, *spawn, cwd=tmp_path / "spawn")
    assert "Traceback" not in result.stderr and "error" not in result.stderr, result.stderr
    monkeypatch.chdir(tmp_path)
    main(["fit", *config])
    single, spawned = only_run_folder(tmp_path, "lesson3"), only_run_folder(tmp_path / "spawn", "lesson3")
    torch.testing.assert_close(
        torch.tensor(list(read_summary(spawned)["coefficients"].values())),
        torch.tensor(list(read_summary(single)["coefficients"].values())),
    )


@pytest.mark.slow
def test_ddp_with_the_fused_module_lands_where_one_process_does(tmp_path: Path, monkeypatch) -> None:
    # The fused module's manual steps under DDP: every manual_backward syncs the gradients, inside a training_step.
    config = ["--config", str(CONFIGS / "lesson3.yaml"), "--trainer.max_steps", "25"]
    fused = ["--model", "FusedQuadraticRegression", "--model.fused_steps", "10"]
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    (tmp_path / "ddp").mkdir()
    run_fitquad("fit", *config, *fused, *ddp, cwd=tmp_path / "ddp")
    monkeypatch.chdir(tmp_path)
    main(["fit", *config, *fused])
    single, ddp_run = only_run_folder(tmp_path, "lesson3"), only_run_folder(tmp_path / "ddp", "lesson3")
    assert read_summary(ddp_run)["optimizer_steps"] == read_summary(single)["optimizer_steps"] == 25
    torch.testing.assert_close(
        torch.tensor(list(read_summary(ddp_run)["coefficients"].values())),
        torch.tensor(list(read_summary(single)["coefficients"].values())),
    )
    torch.testing.assert_close(torch.tensor(read_train_losses(ddp_run)), torch.tensor(read_train_losses(single)))


@pytest.mark.parametrize("launcher", ["torchrun", "srun"])
def test_a_launchers_ranks_share_the_jobs_run_folder_and_refuse_a_used_one(tmp_path, monkeypatch, launcher) -> None:
    # What each rank sees under torchrun (TORCHELASTIC_RUN_ID, RANK) or srun (SLURM_JOB_ID, SLURM_PROCID).
    for name in ("LOCAL_RANK", "FITQUAD_RUN_FOLDER", "TORCHELASTIC_RUN_ID", "WORLD_SIZE", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    if launcher == "torchrun":
        job, rank = {"TORCHELASTIC_RUN_ID": "job7", "WORLD_SIZE": "2"}, "RANK"
    else:
        job, rank = {"SLURM_JOB_ID": "123", "SLURM_STEP_ID": "4", "SLURM_NTASKS": "2"}, "SLURM_PROCID"
    for name, value in job.items():
        monkeypatch.setenv(name, value)
    expected = tmp_path / "runs" / ("version_torchrun-job7" if launcher == "torchrun" else "version_slurm-123.4")
    monkeypatch.setenv(rank, "1")
    assert make_run_folder(tmp_path / "runs", "name") == expected and not expected.exists()  # only rank 0 makes it
    monkeypatch.setenv(rank, "0")
    assert make_run_folder(tmp_path / "runs", "name") == expected and expected.is_dir()
    (expected / "summary.json").write_text("{}")  # a run landed there: the same job id again is refused by all
    for rank_value in ("0", "1"):
        monkeypatch.setenv(rank, rank_value)
        with pytest.raises(InvalidInput, match="of this job id already holds a run: give the launcher another job id"):
            make_run_folder(tmp_path / "runs", "name")


@pytest.mark.slow
def test_lr_find_under_ddp_prints_once_the_single_process_numbers(tmp_path) -> None:
    # Every process holds all the points: the largest stable lr is that of all of them, and one process writes the
    # plot and prints.
    config = ["lr-find", "--config", str(CONFIGS / "lesson3.yaml"), "--lr_find.num_training", "20"]
    output = run_fitquad(*config, "--trainer.strategy", "ddp", "--trainer.devices", "2", cwd=tmp_path).stdout
    # lesson3 in one process: its data, its model (standardize, from init_seed 0) and its SGD.
    lesson3 = yaml.safe_load((CONFIGS / "lesson3.yaml").read_text())
    data = QuadraticDataModule(**lesson3["data"])
    data.setup("fit")
    model = QuadraticRegression(**lesson3["model"])
    initialize(model.model, data.train_x, None, lesson3["model"]["init_seed"])
    stable, own = stable_lrs(model, model.configure_optimizers(), data.train_x)
    assert (
        f"2/λmax = {stable:.4g} (feature_scaling standardize); with this config's loss and SGD settings: {own:.4g}"
        in output
    )
    assert output.count("lr finder suggests") == 1
    assert [p.name for p in (tmp_path / "runs" / "lesson3").iterdir()] == ["version_0"]
