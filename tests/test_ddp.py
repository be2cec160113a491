"""Multi-process DDP on CPU (gloo): each process trains on its own shard, gradients are averaged at
every optimizer step (also inside a fused training_step), and full-batch DDP on 2 processes lands
where one process does."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

import fitquad.core.data
from conftest import CONFIGS, HELPERS, only_run_folder, read_summary, read_train_losses, run_fitquad
from fitquad.checks.validation import InvalidInput
from fitquad.commands.cli import main
from fitquad.commands.lr_find import stable_lrs
from fitquad.commands.run_folders import make_run_folder
from fitquad.core.data import QuadraticDataModule
from fitquad.core.module import QuadraticRegression
from fitquad.theory.shards import WHOLE, Shards


def attach_fake_trainer(datamodule: QuadraticDataModule, rank: int, world_size: int, device: str) -> None:
    """What the datamodule reads from the Trainer: the process's device, rank and number of processes."""
    strategy = SimpleNamespace(root_device=torch.device(device))
    datamodule.trainer = SimpleNamespace(strategy=strategy, global_rank=rank, world_size=world_size)


@pytest.mark.parametrize("distribution", ["grid", "uniform", "normal"])
@pytest.mark.parametrize("processes", [2, 3])
def test_each_process_draws_exactly_its_own_shard_and_no_other_point(monkeypatch, distribution, processes) -> None:
    # Chunks of 1,000 points of 6,000 (and a grid longer than one chunk): a shard's points of each chunk are kept
    # as the chunk is drawn, and the arrays are the shard's size from the start.
    monkeypatch.setattr(fitquad.core.data, "DRAW_CHUNK", 1000)
    whole = QuadraticDataModule(n_train=6000, n_val=7, x_distribution=distribution)
    whole.setup("fit")
    shard_x = []
    for rank in range(processes):
        datamodule = QuadraticDataModule(n_train=6000, n_val=7, x_distribution=distribution)
        attach_fake_trainer(datamodule, rank, processes, "cpu")
        datamodule.setup("fit")
        assert datamodule.shards == Shards(rank, processes) and datamodule.train_size == 6000
        assert torch.equal(datamodule.train_x, whole.train_x[rank::processes])  # bit for bit
        assert torch.equal(datamodule.train_y, whole.train_y[rank::processes])
        assert torch.equal(datamodule.val_x, whole.val_x) and torch.equal(datamodule.val_y, whole.val_y)
        assert datamodule.train_dataloader().x.data_ptr() == datamodule.train_x.data_ptr()  # no copy on the CPU
        shard_x.append(datamodule.train_x)
    # Together, the shards are exactly the single process's points.
    assert torch.equal(torch.stack(shard_x, dim=1).flatten(), whole.train_x)


def test_a_datamodule_reused_by_another_trainer_takes_that_trainers_shard(tmp_path) -> None:
    # A shard, or points reordered by shuffle: blocks, are not the points as drawn or read: another Trainer's
    # processes start again from those, whether the points are generated or read from a file.
    points = tmp_path / "points.csv"
    points.write_text("x,y\n" + "".join(f"{i},{2 * i}\n" for i in range(12)))
    for options in ({"n_train": 12}, {"file": str(points), "val_fraction": 0.0}):
        whole = QuadraticDataModule(**options, batch_size=4, shuffle="blocks")
        whole.setup("fit")
        datamodule = QuadraticDataModule(**options, batch_size=4, shuffle="blocks")
        for rank, world_size in ((1, 2), (2, 3), (0, 1)):
            attach_fake_trainer(datamodule, rank, world_size, "cpu")
            datamodule.setup("fit")
            assert torch.equal(datamodule.train_x, whole.train_x[rank::world_size])
            assert datamodule.train_size == 12
            datamodule.train_dataloader()  # reorders the points into blocks
        order = datamodule.train_x.clone()
        datamodule.setup("fit")  # the same Trainer again: the points it trains on are kept, in their block order
        assert torch.equal(datamodule.train_x, order)


def test_a_shard_is_moved_to_its_processs_device_once() -> None:
    datamodule = QuadraticDataModule(n_train=20, x_distribution="grid")
    # "meta": a device that is not the CPU, to see the tensors moved once, when the loader is made.
    attach_fake_trainer(datamodule, 1, world_size=2, device="meta")
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert loader.x.device.type == loader.y.device.type == "meta" and len(loader.x) == 10


def test_points_from_a_file_are_read_whole_then_sharded(tmp_path) -> None:
    points = tmp_path / "points.csv"
    points.write_text("x,y\n" + "".join(f"{i},{2 * i}\n" for i in range(12)))
    whole = QuadraticDataModule(file=str(points), val_fraction=0.25)
    whole.setup("fit")
    datamodule = QuadraticDataModule(file=str(points), val_fraction=0.25)
    datamodule.setup("fit")  # as the CLI reads the file, before the Trainer exists
    attach_fake_trainer(datamodule, 1, world_size=3, device="cpu")
    datamodule.setup("fit")
    assert torch.equal(datamodule.train_x, whole.train_x[1::3]) and datamodule.train_size == 9


def test_unequal_shards_are_refused() -> None:
    datamodule = QuadraticDataModule(n_train=21)
    attach_fake_trainer(datamodule, rank=0, world_size=2, device="cpu")
    with pytest.raises(InvalidInput, match="data.n_train must be a multiple of the 2 processes under DDP"):
        datamodule.setup("fit")


def test_unequal_shards_are_one_line_before_any_process_starts_or_folder_is_made(tmp_path) -> None:
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    result = run_fitquad("fit", "--data.n_train", "21", *ddp, cwd=tmp_path, check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("fitquad: error:")]
    assert errors == [
        "fitquad: error: data.n_train must be a multiple of the 2 processes under DDP, so that every process gets an "
        "equal shard; got 21"
    ]
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


def test_every_whole_data_statistic_combined_from_shards_equals_one_processs(tmp_path) -> None:
    # Two real processes (torchrun, gloo), each holding half the points, against this process holding all of them:
    # the feature scaling, the optimum of every loss (with and without weight decay), the conditioning, the
    # evaluation, the loss resolution and the samples, each pass streamed in chunks and combined across processes.
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--rdzv-backend", "c10d",
              "--rdzv-endpoint", "localhost:0", str(HELPERS / "shard_statistics.py"), str(tmp_path)]  # fmt: skip
    result = subprocess.run(launch, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(2)]
    spec = importlib.util.spec_from_file_location("shard_statistics", HELPERS / "shard_statistics.py")
    shard_statistics = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shard_statistics)
    whole = QuadraticDataModule(n_train=shard_statistics.POINTS, n_val=10, x_distribution="uniform")
    whole.setup("fit")
    expected = shard_statistics.statistics(whole.train_x, whole.train_y, WHOLE)
    for rank, found in enumerate(ranks):
        x, y, size, val_x = found.pop("shard")
        assert len(x) == size // 2 and torch.equal(x, whole.train_x[rank::2]) and torch.equal(y, whole.train_y[rank::2])
        assert torch.equal(val_x, whole.val_x)
        samples = found.pop("samples")
        assert all(torch.equal(a, b) for a, b in zip(samples[0], whole.training_sample(100), strict=True))
        assert all(torch.equal(a, b) for a, b in zip(samples[1], (whole.train_x, whole.train_y), strict=True))
        assert found.keys() == expected.keys()
        for name, value in expected.items():  # whiten's too, signs included: R's diagonal is positive either way
            torch.testing.assert_close(found[name], value, rtol=1e-9, atol=1e-12, msg=name)


def test_ddp_by_lightning_and_by_torchrun_lands_where_one_process_does(tmp_path: Path, monkeypatch) -> None:
    # lesson3: 20 grid points, full batch, 10 optimizer steps fused per training_step. The two shards
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
    assert "fitquad: data: 20 training points, 10 in each of 2 processes" in result.stdout
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
        # The recorded losses are the mean over the two shards: the loss on all the data.
        torch.testing.assert_close(
            torch.tensor(read_train_losses(ddp_folder)), torch.tensor(read_train_losses(single_folder))
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


def test_lr_find_under_ddp_prints_once_the_single_process_numbers(tmp_path) -> None:
    # Each process holds half the points: the largest stable lr is still that of all of them (fitquad.theory.shards), and
    # one process writes the plot and prints.
    config = ["lr-find", "--config", str(CONFIGS / "lesson3.yaml"), "--lr_find.num_training", "20"]
    output = run_fitquad(*config, "--trainer.strategy", "ddp", "--trainer.devices", "2", cwd=tmp_path).stdout
    # lesson3 in one process: its data, its model (standardize, from init_seed 0) and its SGD.
    lesson3 = yaml.safe_load((CONFIGS / "lesson3.yaml").read_text())
    data = QuadraticDataModule(**lesson3["data"])
    data.setup("fit")
    model = QuadraticRegression(**lesson3["model"])
    model.initialize_parameters(data.train_x)
    stable, own = stable_lrs(model, model.configure_optimizers(), data.train_x)
    assert (
        f"2/λmax = {stable:.4g} (feature_scaling standardize); with this config's loss and SGD settings: {own:.4g}"
        in output
    )
    assert output.count("lr finder suggests") == 1
    assert [p.name for p in (tmp_path / "runs" / "lesson3").iterdir()] == ["version_0"]
