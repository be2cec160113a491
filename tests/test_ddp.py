"""Multi-process DDP on CPU (gloo): each process trains on its own shard, gradients are averaged at
every optimizer step (also inside a fused training_step), and full-batch DDP on 2 processes lands
where one process does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import CONFIGS, only_run_folder, read_summary, read_train_losses, run_fitquad
from fitquad.cli import main
from fitquad.data import QuadraticDataModule
from fitquad.run_folders import make_run_folder
from fitquad.validation import InvalidInput


def attach_fake_trainer(datamodule: QuadraticDataModule, rank: int, world_size: int, device: str) -> None:
    """What train_dataloader reads from the Trainer: the process's device, rank and number of processes."""
    strategy = SimpleNamespace(root_device=torch.device(device))
    datamodule.trainer = SimpleNamespace(strategy=strategy, global_rank=rank, world_size=world_size)


def test_each_process_gets_its_own_shard_on_its_own_device() -> None:
    shards = []
    for rank in range(2):
        datamodule = QuadraticDataModule(n_train=20, x_distribution="grid")
        datamodule.setup("fit")
        # "meta": a device that is not the CPU, to see the tensors moved once, when the loader is made.
        attach_fake_trainer(datamodule, rank, world_size=2, device="meta")
        loader = datamodule.train_dataloader()
        assert loader.x.device.type == loader.y.device.type == "meta"
        attach_fake_trainer(datamodule, rank, world_size=2, device="cpu")
        shards.append(datamodule.train_dataloader().x)
    assert len(shards[0]) == len(shards[1]) == 10
    assert torch.equal(torch.sort(torch.cat(shards)).values, torch.sort(datamodule.train_x).values)


def test_unequal_shards_are_refused() -> None:
    datamodule = QuadraticDataModule(n_train=21)
    datamodule.setup("fit")
    attach_fake_trainer(datamodule, rank=0, world_size=2, device="cpu")
    with pytest.raises(InvalidInput, match="data.n_train must be a multiple of the 2 processes under DDP"):
        datamodule.train_dataloader()


def test_full_batch_ddp_on_two_processes_matches_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # lesson3: 20 grid points, full batch, 10 optimizer steps fused per training_step. The two shards
    # (even and odd points) have different gradients, so the parameters only agree with one process's
    # if the gradients are averaged at every step.
    config = ["--config", str(CONFIGS / "lesson3.yaml"), "--trainer.max_steps", "25"]
    (tmp_path / "ddp").mkdir()
    run_fitquad("fit", *config, "--trainer.strategy", "ddp", "--trainer.devices", "2", cwd=tmp_path / "ddp")
    monkeypatch.chdir(tmp_path)
    main(["fit", *config])
    ddp_folder, single_folder = only_run_folder(tmp_path / "ddp", "lesson3"), only_run_folder(tmp_path, "lesson3")
    ddp, single = read_summary(ddp_folder), read_summary(single_folder)
    assert ddp["optimizer_steps"] == single["optimizer_steps"] == 25
    # float32 sums in a different order: equal to rounding.
    torch.testing.assert_close(
        torch.tensor(list(ddp["coefficients"].values())), torch.tensor(list(single["coefficients"].values()))
    )
    # The recorded losses are the mean over the two shards: the loss on all the data.
    torch.testing.assert_close(
        torch.tensor(read_train_losses(ddp_folder)), torch.tensor(read_train_losses(single_folder))
    )


def test_torchrun_launches_every_rank_into_one_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # torchrun (like SLURM's srun) starts every rank itself with the same command line: they must agree on one
    # run folder without talking (the job's id names it), rank 0 alone makes it, and the fit lands where one
    # process does. Lightning's sync_dist warnings about epoch-level metrics do not appear (they are synced).
    config = ["--config", str(CONFIGS / "lesson3.yaml"), "--trainer.max_steps", "25"]
    (tmp_path / "ddp").mkdir()
    fitquad = str(Path(sys.executable).with_name("fitquad"))
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--rdzv-backend", "c10d",
              "--rdzv-endpoint", "localhost:0", "--rdzv-id", "job7", fitquad]  # fmt: skip
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    result = subprocess.run([*launch, "fit", *config, *ddp], cwd=tmp_path / "ddp", capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sync_dist" not in result.stderr
    assert [p.name for p in (tmp_path / "ddp" / "runs" / "lesson3").iterdir()] == ["version_torchrun-job7"]
    ddp_summary = read_summary(tmp_path / "ddp" / "runs" / "lesson3" / "version_torchrun-job7")
    monkeypatch.chdir(tmp_path)
    main(["fit", *config])
    single = read_summary(only_run_folder(tmp_path, "lesson3"))
    assert ddp_summary["optimizer_steps"] == single["optimizer_steps"] == 25
    torch.testing.assert_close(
        torch.tensor(list(ddp_summary["coefficients"].values())), torch.tensor(list(single["coefficients"].values()))
    )


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
