"""Run under torchrun by tests/test_ddp.py: each process draws its shard of the training points and computes every
whole-data statistic fitquad takes of them (combined across the processes), then saves what it got for the test to
compare with one process holding all the points.

Usage: python -m torch.distributed.run --nproc_per_node N shard_statistics.py OUTPUT_FOLDER
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from fitquad.checks.limits import check_first_step
from fitquad.core.data import QuadraticDataModule
from fitquad.core.model import PolynomialModel
from fitquad.theory import streaming
from fitquad.theory.conditioning import OptimizerSettings, conditioning
from fitquad.theory.passes import evaluate, with_parameters
from fitquad.theory.reference import loss_resolution, optimum
from fitquad.theory.shards import Shards

POINTS = 3_000  # with chunks of 400 points: several chunks per shard, and a part chunk at the end
LOSSES = {"mse": nn.MSELoss(), "huber": nn.HuberLoss(delta=0.2), "l1": nn.L1Loss()}


def statistics(x: torch.Tensor, y: torch.Tensor, shards: Shards) -> dict:
    """Every whole-data statistic fitquad takes of the training points, on this process's points and shards."""
    found = {}
    for scaling in ("standardize", "whiten"):
        model = PolynomialModel(4, scaling)
        model.fit_feature_scaling(x, shards)
        found[scaling] = {name: value.clone() for name, value in model.state_dict().items() if "linear" not in name}
    check_first_step(model, x, y, 0.1, 0.0, "32-true", "model.init_seed", shards)
    for name, loss_fn in LOSSES.items():
        for weight_decay in (0.0, 0.01):
            best = optimum(model, x, y, loss_fn, weight_decay, shards)
            found[f"{name}_{weight_decay}"] = (best.parameters, best.train_loss, best.train_mse)
    best = optimum(model, x, y, nn.MSELoss(), shards=shards)
    found["conditioning"] = conditioning(model, x, nn.MSELoss(), OptimizerSettings(lr=0.1), shards).eigenvalues
    found["evaluate"] = evaluate(with_parameters(model, best.parameters), x, y, nn.HuberLoss(), shards)
    found["resolution"] = loss_resolution(model, x, y, best.parameters, torch.float32, False, shards)
    return found


def main(output: Path) -> None:
    torch.distributed.init_process_group("gloo")
    rank, count = torch.distributed.get_rank(), torch.distributed.get_world_size()
    streaming.CHUNK_POINTS = 400
    data = QuadraticDataModule(n_train=POINTS, n_val=10, x_distribution="uniform")
    strategy = SimpleNamespace(root_device=torch.device("cpu"))
    data.trainer = SimpleNamespace(strategy=strategy, global_rank=rank, world_size=count)
    data.setup("fit")
    found = statistics(data.train_x, data.train_y, data.shards)
    found["shard"] = (data.train_x, data.train_y, data.train_size, data.val_x)
    found["samples"] = (data.training_sample(100), data.training_sample(POINTS))
    torch.save(found, output / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
