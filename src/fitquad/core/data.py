"""The data: a noisy quadratic y = a·x² + b·x + c + noise_std·N(0, 1), generated in memory, and its batches.

Training, validation and test points are independent draws of the same process from one seeded
numpy RandomState, in that order, each drawing x first and then the noise. Drawing the training set
first means its points do not depend on how many validation or test points are asked for, so the
SGD article's 50 points (seed 20240215) come out exactly.

Batches are served straight from in-memory tensors (InMemoryBatches, batches.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import lightning as L
import numpy as np
import torch

from . import InvalidInput
from .batches import InMemoryBatches, Shuffle

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
) -> tuple[np.ndarray, np.ndarray]:
    """Draw n points (all of x first, then the noise) as float32 arrays, the way the SGD article does.

    x is cast to float32 before y is computed from it, and y = a·x² + b·x + c is evaluated on the
    float32 x before the float64 noise is added and the sum cast to float32: that is the article's
    own order of operations, so its data is reproduced bit for bit. The draws go DRAW_CHUNK points at a
    time straight into the float32 arrays: numpy's legacy generator gives the same numbers drawn in pieces
    as drawn at once, so only the float64 temporaries shrink (16 bytes a point drawn at once).
    """
    if x_distribution not in ("grid", "uniform", "normal"):
        raise InvalidInput(f"data.x_distribution must be one of grid, normal, uniform; got {x_distribution!r}")
    x, y = np.empty(n, dtype=np.float32), np.empty(n, dtype=np.float32)
    chunks = [slice(start, min(start + DRAW_CHUNK, n)) for start in range(0, n, DRAW_CHUNK)]
    for part in chunks:
        if x_distribution == "grid":  # evenly spaced: no random numbers, only the noise consumes the stream
            x[part] = _grid_part(x_min, x_max, n, part.start, part.stop)
        elif x_distribution == "uniform":
            x[part] = rng.uniform(x_min, x_max, part.stop - part.start)
        else:
            x[part] = x_mean + x_std * rng.randn(part.stop - part.start)
    for part in chunks:
        y[part] = true_a * x[part] ** 2 + true_b * x[part] + true_c + noise_std * rng.randn(part.stop - part.start)
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
    """All the points, or `limit` of them drawn uniformly with replacement (seeded, no permutation of all the
    points), in their order: a sample that represents them all, not one end of a sorted grid."""
    if len(x) <= limit:
        return x, y
    chosen = torch.randint(len(x), (limit,), generator=torch.Generator().manual_seed(seed)).sort().values
    return x[chosen], y[chosen]


class QuadraticDataModule(L.LightningDataModule):
    """Train, validation and test splits of y = true_a·x² + true_b·x + true_c + noise_std·N(0, 1).

    After `setup()` the splits are available as float32 tensors in original units: `train_x`, `train_y`, `val_x`,
    `val_y`, `test_x`, `test_y`. Under DDP every process holds all the points and trains on its own part, every
    world_size-th point (as a DistributedSampler would split them): DDP averages the parts' gradients, which with
    equal parts is the gradient on all the points. With `shuffle: blocks` and mini-batches, the training points are
    in the one-time shuffled order once the training dataloader is made (the drawn order is not kept beside it).

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
        shuffle: Mini-batches only. "every_pass": reshuffle all points at every pass (textbook SGD);
            "blocks": shuffle once, then permute batch-sized blocks each pass (far cheaper for millions of points).
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
        shuffle: Shuffle = "every_pass",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.samples: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # training_sample's, by size
        self.in_block_order = False  # whether train_x is in shuffle: blocks' one-time order (train_dataloader)

    def load_splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The train, val and test splits as float32 (x, y) arrays: drawn here; a subclass may read them instead."""
        hp = self.hparams
        rng = np.random.RandomState(hp.seed)
        # Order matters: train, then validation, then test, so each split is independent of the sizes of the ones
        # drawn after it.
        sizes = {"train": hp.n_train, "val": hp.n_val, "test": hp.n_test}
        return {split: draw_quadratic(rng, n, **curve_options(hp)) for split, n in sizes.items()}

    def setup(self, stage: str) -> None:
        # Once, and again only for points a previous Trainer left in its block order.
        if hasattr(self, "train_x") and not self.in_block_order:
            return
        splits = {split: (torch.from_numpy(x), torch.from_numpy(y)) for split, (x, y) in self.load_splits().items()}
        (self.train_x, self.train_y), (self.val_x, self.val_y), (self.test_x, self.test_y) = splits.values()
        self.samples, self.in_block_order = {}, False

    @property
    def train_size(self) -> int:
        return len(self.train_x)

    @property
    def true_coefficients(self) -> list[float] | None:
        """The true curve's coefficients, constant term first (None where a subclass reads points: unknown)."""
        return [self.hparams.true_c, self.hparams.true_b, self.hparams.true_a]

    @property
    def true_noise_std(self) -> float | None:
        """The noise's true standard deviation σ (None where a subclass reads points: unknown)."""
        return self.hparams.noise_std

    def training_sample(self, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uniform_sample of the training points, seeded by data.seed and kept: the same at every call."""
        if limit not in self.samples:
            self.samples[limit] = uniform_sample(self.train_x, self.train_y, limit, self.hparams.seed)
        return self.samples[limit]

    def _placement(self) -> tuple[torch.device, int, int]:
        """(device, rank, number of processes) of this process: the Trainer's, or one CPU process without one."""
        if self.trainer is None:
            return torch.device("cpu"), 0, 1
        return self.trainer.strategy.root_device, self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> InMemoryBatches:
        hp = self.hparams
        device, rank, processes = self._placement()
        x, y = self.train_x, self.train_y
        if processes > 1:  # this process's part: every processes-th point, starting at its rank
            if len(x) % processes:
                raise InvalidInput(
                    f"the {len(x)} training points must be a multiple of the {processes} processes under DDP, "
                    "so that every process trains on an equal part"
                )
            x, y = x[rank::processes].contiguous(), y[rank::processes].contiguous()
        # A FusedQuadraticRegression takes `fused_steps` optimizer steps per batch (fused.py); the textbook module
        # has no such attribute and takes one.
        module = self.trainer.lightning_module if self.trainer is not None else None
        fused_steps = getattr(module, "fused_steps", 1)
        # Moved to the device once here, so no batch is ever copied (batch_to_device is then a no-op).
        loader = InMemoryBatches(
            x.to(device),
            y.to(device),
            batch_size=hp.batch_size,
            steps_per_epoch=hp.steps_per_epoch,
            fused_steps=fused_steps,
            seed=hp.seed + rank,
            shuffle=hp.shuffle,
            in_block_order=self.in_block_order,
        )
        if processes == 1 and loader.x.device == self.train_x.device and loader.x is not self.train_x:
            # shuffle: blocks shuffled the points once: that order replaces the drawn one here too, so millions of
            # points are held once, not twice. Nothing computed from them depends on their order.
            self.train_x, self.train_y, self.in_block_order = loader.x, loader.y, True
        return loader

    def _whole_split(self, x: torch.Tensor, y: torch.Tensor) -> InMemoryBatches | list:
        # Evaluation sees the whole split as one batch, in every process; an empty split is no dataloader at all.
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
