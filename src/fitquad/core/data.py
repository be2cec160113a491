"""The data: a noisy quadratic y = a·x² + b·x + c + noise_std·N(0, 1), generated in memory.

Training, validation and test points are independent draws of the same process from one seeded
numpy RandomState, in that order, each drawing x first and then the noise. Drawing the training set
first means its points do not depend on how many validation or test points are asked for, so the
SGD article's 50 points (seed 20240215) come out exactly.

Batches are served straight from in-memory tensors (fitquad.core.batches.InMemoryBatches).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Literal

import lightning as L
import numpy as np
import torch

from fitquad.checks.data_files import held_out_splits, read_points
from fitquad.checks.validation import InvalidInput, check_data_options, check_file_options, held_out_fraction
from fitquad.core.batches import InMemoryBatches, Shuffle
from fitquad.theory.shards import WHOLE, Shards

XDistribution = Literal["grid", "normal", "uniform"]


# Points drawn at a time: float64 temporaries of this size only, whatever the number of points.
DRAW_CHUNK = 1 << 20


def draw_quadratic(
    rng: np.random.RandomState,
    n: int,
    true_a: float,
    true_b: float,
    true_c: float,
    noise_std: float,
    x_distribution: XDistribution,
    x_min: float,
    x_max: float,
    x_mean: float,
    x_std: float,
    shards: Shards = WHOLE,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw n points (all of x first, then the noise) as float32 arrays, the way the SGD article does; under DDP
    only this process's shard of them (shards.take), exactly those points of the n.

    x is cast to float32 before y is computed from it, and y = a·x² + b·x + c is evaluated on the
    float32 x before the float64 noise is added and the sum cast to float32: that is the article's
    own order of operations, so its data is reproduced bit for bit. The draws go DRAW_CHUNK points at a
    time straight into the float32 arrays: numpy's legacy generator gives the same numbers drawn in pieces
    as drawn at once, so only the float64 temporaries shrink (16 bytes a point, at 10⁸ points 1.6 GB).
    A shard draws every chunk too (the stream has no way to skip ahead) and keeps its own points of each.
    """
    if x_distribution not in ("grid", "uniform", "normal"):
        raise ValueError(f"data.x_distribution must be one of grid, normal, uniform; got {x_distribution!r}")
    kept = len(range(n)[shards.take(n)])
    x, y = np.empty(kept, dtype=np.float32), np.empty(kept, dtype=np.float32)
    # Each chunk [start, stop) of the n points, and where its points of this shard go among the kept ones.
    chunks = [(start, min(start + DRAW_CHUNK, n)) for start in range(0, n, DRAW_CHUNK)]
    firsts = [(shards.rank - start) % shards.count for start, _ in chunks]
    places = [slice((start + first) // shards.count, (stop + shards.count - 1 - shards.rank) // shards.count)
              for (start, stop), first in zip(chunks, firsts, strict=True)]  # fmt: skip
    for (start, stop), first, place in zip(chunks, firsts, places, strict=True):
        if x_distribution == "grid":  # evenly spaced: no random numbers, only the noise consumes the stream
            x[place] = _grid_part(x_min, x_max, n, start, stop)[first :: shards.count]
        elif x_distribution == "uniform":
            x[place] = rng.uniform(x_min, x_max, stop - start)[first :: shards.count]
        else:
            x[place] = (x_mean + x_std * rng.randn(stop - start))[first :: shards.count]
    for (start, stop), first, place in zip(chunks, firsts, places, strict=True):
        part, noise = x[place], rng.randn(stop - start)[first :: shards.count]
        y[place] = true_a * part**2 + true_b * part + true_c + noise_std * noise
    return x, y


def _grid_part(x_min: float, x_max: float, n: int, start: int, stop: int) -> np.ndarray:
    """Points start..stop of numpy.linspace(x_min, x_max, n), computed as linspace computes them."""
    if n <= DRAW_CHUNK:
        return np.linspace(x_min, x_max, n)[start:stop]
    part = np.arange(start, stop, dtype=np.float64) * ((x_max - x_min) / (n - 1)) + x_min
    if stop == n:
        part[-1] = x_max  # linspace sets its last point to the end exactly
    return part


CURVE_OPTIONS = ("true_a", "true_b", "true_c", "noise_std", "x_distribution", "x_min", "x_max", "x_mean", "x_std")


def curve_options(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The data options that draw_quadratic takes: the true curve, the noise and where x comes from."""
    return {name: hparams[name] for name in CURVE_OPTIONS}


def uniform_sample(x: torch.Tensor, y: torch.Tensor, limit: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All the points, or `limit` of them drawn uniformly at random (seeded), in their order: a sample that
    represents them all, not one end of a sorted grid. Drawn with replacement, so no permutation of all the
    points is ever made."""
    if len(x) <= limit:
        return x, y
    chosen = sample_indices(len(x), limit, seed)
    return x[chosen], y[chosen]


def sample_indices(points: int, limit: int, seed: int) -> torch.Tensor:
    """`limit` indices among `points`, drawn uniformly with replacement (seeded), in increasing order."""
    return torch.randint(points, (limit,), generator=torch.Generator().manual_seed(seed)).sort().values


class QuadraticDataModule(L.LightningDataModule):
    """Train, validation and test splits of y = true_a·x² + true_b·x + true_c + noise_std·N(0, 1), or of your
    own points read from a file (data.file).

    After `setup("fit")` the splits are available as float32 tensors in original units:
    `train_x`, `train_y`, `val_x`, `val_y` (and `test_x`, `test_y` after `setup("test")`). Under DDP `train_x`
    and `train_y` are this process's shard, every world_size-th point (`shards`, fitquad.theory.shards), drawn without
    ever drawing the others; `train_size` counts them all. Validation and test points are whole in every process.
    With `shuffle: blocks` and mini-batches, the training points are in the one-time shuffled order once the
    training dataloader is made (the order they are trained in; the drawn order is not kept beside it).

    Args:
        true_a: The true curve's x² coefficient (the defaults are the SGD article's y = 0.75x² + 1.0x + 2.0).
        true_b: The true curve's x coefficient.
        true_c: The true curve's constant term.
        noise_std: Standard deviation σ of the Gaussian noise added to y; σ² is the noise floor.
        x_distribution: Where x comes from: "grid" (evenly spaced over [x_min, x_max]), "uniform" over
            [x_min, x_max], or "normal" with mean x_mean and standard deviation x_std.
        x_min: Lower end of x for grid and uniform.
        x_max: Upper end of x for grid and uniform.
        x_mean: Mean of x for normal.
        x_std: Standard deviation of x for normal.
        n_train: Training points.
        n_val: Validation points, a fresh draw (not held-out training points); 0: no validation.
        n_test: Test points, a fresh draw.
        seed: numpy's legacy RandomState seed for the data (the article's is 20240215); training points
            are drawn first, so they do not depend on n_val or n_test.
        batch_size: null: full batch (plain gradient descent); an integer: mini-batches of that size.
        steps_per_epoch: Optimizer steps per Lightning epoch: validation, checkpointing and early stopping
            run once per epoch. null: one pass over the training data (one step when full batch).
        fused_steps: Optimizer steps taken inside one training_step: 1 is the textbook loop; larger values
            amortise Lightning's cost per training_step and give the same numbers (README, "Speed").
        shuffle: Mini-batches only. "every_pass": reshuffle all points at every pass (textbook SGD);
            "blocks": shuffle once, then permute batch-sized blocks each pass (far cheaper for millions of points).
        file: Your own points instead of generated ones: a CSV or other text file of columns (header row
            optional), a .npy array or a .npz archive (fitquad.checks.data_files). The true curve and the noise are then
            unknown, and the diagnosis estimates σ² from the optimum's residuals. null: generate the data.
        x_column: The column of x in the file(s): its header name (or array name), or its position, 0 first.
        y_column: The column of y, likewise.
        val_file: Validation points from a second file, with the same columns.
        test_file: Test points from a file, with the same columns.
        val_fraction: The share of data.file's points held out for validation, picked at random (seeded by
            data.seed). null: 0.2, or none when data.val_file gives the validation points.
        test_fraction: The share of data.file's points held out for testing, likewise.
    """

    def __init__(
        self,
        true_a: float = 0.75,
        true_b: float = 1.0,
        true_c: float = 2.0,
        noise_std: float = 0.3,
        x_distribution: XDistribution = "normal",
        x_min: float = -2.0,
        x_max: float = 2.0,
        x_mean: float = 0.0,
        x_std: float = 1.0,
        n_train: int = 50,
        n_val: int = 50,
        n_test: int = 50,
        seed: int = 20240215,
        batch_size: int | None = None,
        steps_per_epoch: int | None = None,
        fused_steps: int = 1,
        shuffle: Shuffle = "every_pass",
        file: str | None = None,
        x_column: int | str = 0,
        y_column: int | str = 1,
        val_file: str | None = None,
        test_file: str | None = None,
        val_fraction: float | None = None,
        test_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_data_options(self.hparams)
        defaults = inspect.signature(QuadraticDataModule.__init__).parameters
        check_file_options(self.hparams, {name: option.default for name, option in defaults.items() if name != "self"})
        self.samples: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # training_sample's, by size
        self.shards = WHOLE  # which of the training points this process holds (all but under DDP)
        self.in_block_order = False  # whether train_x is in shuffle: blocks' one-time order (train_dataloader)

    def _draw_splits(self, shards: Shards) -> None:
        hp = self.hparams
        rng = np.random.RandomState(hp.seed)
        curve = curve_options(hp)
        # Order matters: train, then validation, then test, so each split is independent of the
        # sizes of the ones drawn after it.
        splits = {}
        for split, n in (("train", hp.n_train), ("val", hp.n_val), ("test", hp.n_test)):
            x, y = draw_quadratic(rng, n, **curve, shards=shards if split == "train" else WHOLE)
            splits[split] = (torch.from_numpy(x), torch.from_numpy(y))
        (self.train_x, self.train_y), (self.val_x, self.val_y), (self.test_x, self.test_y) = splits.values()
        self.train_size, self.shards = hp.n_train, shards

    def _read_splits(self) -> None:
        hp = self.hparams
        x, y = read_points("data.file", hp.file, hp.x_column, hp.y_column)
        splits = held_out_splits(x, y, held_out_fraction(hp, "val"), held_out_fraction(hp, "test"), hp.seed)
        for split, path in (("val", hp.val_file), ("test", hp.test_file)):
            if path is not None:
                splits[split] = read_points(f"data.{split}_file", path, hp.x_column, hp.y_column)
        tensors = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in splits.values()]
        (self.train_x, self.train_y), (self.val_x, self.val_y), (self.test_x, self.test_y) = tensors
        self.train_size, self.shards = len(self.train_x), WHOLE

    def setup(self, stage: str) -> None:
        shards = self._shards()
        if hasattr(self, "train_x") and shards == self.shards:
            return  # drawn or read already (a file is read before the Trainer starts), for this process
        if not hasattr(self, "train_x") or self.shards != WHOLE or self.in_block_order:
            # First, or after another Trainer's shard or block order: from the points as drawn or read.
            self._draw_splits(shards) if self.hparams.file is None else self._read_splits()
            self.samples, self.in_block_order = {}, False
        if shards != self.shards:  # points held whole (read from a file): keep this process's shard
            self.check_equal_shards(shards.count)
            keep = shards.take(self.train_size)
            self.train_x, self.train_y, self.shards = self.train_x[keep].clone(), self.train_y[keep].clone(), shards
            self.samples = {}

    def _shards(self) -> Shards:
        """This process's shard of the training points: under DDP, its rank among the Trainer's processes."""
        _, rank, world_size = self._placement()
        if world_size > 1 and self.hparams.file is None:
            self.check_equal_shards(world_size)
        return Shards(rank, world_size)

    def check_equal_shards(self, world_size: int) -> None:
        """InvalidInput unless the training points (generated, or read from data.file) split into equal shards among
        world_size processes: DDP averages the shards' gradients, which with equal shards is all the points'."""
        points = self.train_size if hasattr(self, "train_x") else self.hparams.n_train
        if points % world_size:
            hp = self.hparams
            what = "data.n_train" if hp.file is None else "the training points of data.file (after val_fraction)"
            raise InvalidInput(
                f"{what} must be a multiple of the {world_size} processes under DDP, so that every "
                f"process gets an equal shard; got {points}"
            )

    @property
    def true_coefficients(self) -> list[float] | None:
        """The true curve's coefficients, constant term first; None for points from a file (unknown)."""
        hp = self.hparams
        return [hp.true_c, hp.true_b, hp.true_a] if hp.file is None else None

    @property
    def true_noise_std(self) -> float | None:
        """The noise's true standard deviation σ; None for points from a file (unknown)."""
        return self.hparams.noise_std if self.hparams.file is None else None

    def training_sample(self, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uniform_sample of all the training points, seeded by data.seed and kept: the same at every call. Under
        DDP the same sample as one process takes, gathered from the shards (collective: every process calls it)."""
        if limit not in self.samples:
            if self.shards.count == 1:
                self.samples[limit] = uniform_sample(self.train_x, self.train_y, limit, self.hparams.seed)
            else:
                self.samples[limit] = self._gathered_sample(limit)
        return self.samples[limit]

    def _gathered_sample(self, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
        n, shards = self.train_size, self.shards
        chosen = torch.arange(n) if n <= limit else sample_indices(n, limit, self.hparams.seed)
        owner = chosen % shards.count  # point i is shard (i mod count)'s point i // count
        mine = chosen[owner == shards.rank] // shards.count
        x, y = torch.empty(len(chosen)), torch.empty(len(chosen))
        for rank, (shard_x, shard_y) in enumerate(shards.gather((self.train_x[mine], self.train_y[mine]))):
            x[owner == rank], y[owner == rank] = shard_x, shard_y
        return x, y

    def _placement(self) -> tuple[torch.device, int, int]:
        """(device, rank, number of processes) of this process: the Trainer's, or one CPU process without one."""
        if self.trainer is None:
            return torch.device("cpu"), 0, 1
        return self.trainer.strategy.root_device, self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> InMemoryBatches:
        hp = self.hparams
        device, rank, _ = self._placement()
        # Under DDP each process trains on its own shard (setup), and DDP averages the shards' gradients.
        # Moved to the device once here, so no batch is ever copied (batch_to_device is then a no-op).
        loader = InMemoryBatches(
            self.train_x.to(device),
            self.train_y.to(device),
            batch_size=hp.batch_size,
            steps_per_epoch=hp.steps_per_epoch,
            fused_steps=hp.fused_steps,
            seed=hp.seed + rank,
            shuffle=hp.shuffle,
            in_block_order=self.in_block_order,
        )
        if loader.x.device == self.train_x.device and loader.x is not self.train_x:
            # shuffle: blocks shuffled the points once: that order replaces the drawn one here too, so millions of
            # points are held once, not twice. Nothing fitquad computes from them depends on their order.
            self.train_x, self.train_y, self.in_block_order = loader.x, loader.y, True
        return loader

    def _whole_split(self, x: torch.Tensor, y: torch.Tensor) -> InMemoryBatches | list:
        # Evaluation sees the whole split as one batch, in every process; an empty split is no
        # dataloader at all.
        if len(x) == 0:
            return []
        device, _, _ = self._placement()
        return InMemoryBatches(x.to(device), y.to(device), batch_size=None, steps_per_epoch=1, fused_steps=1, seed=0)

    def val_dataloader(self) -> InMemoryBatches | list:
        return self._whole_split(self.val_x, self.val_y)

    def test_dataloader(self) -> InMemoryBatches | list:
        return self._whole_split(self.test_x, self.test_y)

    def predict_dataloader(self) -> InMemoryBatches | list:
        return self._whole_split(self.test_x, self.test_y)
