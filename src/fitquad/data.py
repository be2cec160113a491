"""The data: a noisy quadratic y = a·x² + b·x + c + noise_std·N(0, 1), generated in memory.

Training, validation and test points are independent draws of the same process from one seeded
numpy RandomState, in that order, each drawing x first and then the noise. Drawing the training set
first means its points do not depend on how many validation or test points are asked for, so the
SGD article's 50 points (seed 20240215) come out exactly.

Batches are served straight from in-memory tensors (`InMemoryBatches`): Lightning's usual
DataLoader over a TensorDataset indexes and collates one sample at a time, which measured 30 to
300 times slower than slicing tensors on this problem.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import lightning as L
import numpy as np
import torch

XDistribution = Literal["grid", "normal", "uniform"]


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
    """Draw n points (x first, then the noise) as float32 arrays, the way the SGD article does.

    x is cast to float32 before y is computed from it, and y = a·x² + b·x + c is evaluated on the
    float32 x before the float64 noise is added and the sum cast to float32: that is the article's
    own order of operations, so its data is reproduced bit for bit.
    """
    if x_distribution == "grid":
        # An evenly spaced grid draws no random numbers: only the noise consumes the stream.
        x = np.linspace(x_min, x_max, n).astype(np.float32)
    elif x_distribution == "uniform":
        x = rng.uniform(x_min, x_max, n).astype(np.float32)
    elif x_distribution == "normal":
        x = (x_mean + x_std * rng.randn(n)).astype(np.float32)
    else:
        raise ValueError(f"data.x_distribution must be one of grid, normal, uniform; got {x_distribution!r}")
    y = (true_a * x**2 + true_b * x + true_c + noise_std * rng.randn(n)).astype(np.float32)
    return x, y


class InMemoryBatches:
    """An iterable that Lightning uses as a dataloader: it yields (x, y) batches sliced from tensors.

    Each item is a pair of tensors of shape (steps, batch_size): `steps` consecutive batches, one
    optimizer step each, that the training module runs inside a single training_step. Fusing steps
    this way amortises Lightning's per-training_step cost (about 0.5 ms, measured) over many cheap
    optimizer steps; with fused_steps=1 it is the textbook one-batch-per-step loop.

    Full batch: every step sees all the points (a broadcast view, no copy). Mini-batches: the points
    are reshuffled at every pass over the data with a seeded generator, gathered once, and cut into
    contiguous views; the short last batch of a pass, if any, is served on its own. A pass may span
    epochs: the position in it is kept from one epoch to the next.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int | None,
        steps_per_epoch: int | None,
        fused_steps: int,
        seed: int,
    ) -> None:
        self.x, self.y = x, y
        self.n = len(x)
        self.batch_size = self.n if batch_size is None else min(batch_size, self.n)
        self.full_batch = self.batch_size == self.n
        self.fused_steps = fused_steps
        self.steps_per_epoch = steps_per_epoch or math.ceil(self.n / self.batch_size)
        self.generator = torch.Generator().manual_seed(seed)
        self.position = self.n  # in the current shuffled pass; n means "draw a new pass first"

    def _item_shapes(self, position: int) -> Iterator[tuple[int, int, int]]:
        """(steps, batch width, start position) of each item of one epoch, starting at `position`."""
        left = self.steps_per_epoch
        while left > 0:
            if self.full_batch:
                steps, width, start = min(self.fused_steps, left), self.n, 0
            else:
                start = 0 if position >= self.n else position
                full_batches_left = (self.n - start) // self.batch_size
                if full_batches_left:
                    steps, width = min(self.fused_steps, full_batches_left, left), self.batch_size
                else:
                    steps, width = 1, self.n - start
                position = start + steps * width
            yield steps, width, start
            left -= steps

    def __len__(self) -> int:
        """Training steps (Lightning batches) in the next epoch."""
        return sum(1 for _ in self._item_shapes(self.position))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for steps, width, start in self._item_shapes(self.position):
            if self.full_batch:
                yield self.x.expand(steps, width), self.y.expand(steps, width)
                continue
            if start == 0:
                order = torch.randperm(self.n, generator=self.generator)
                self.shuffled_x, self.shuffled_y = self.x[order], self.y[order]
            stop = start + steps * width
            # Move on before yielding: Lightning stops at len(self) without resuming the generator.
            self.position = stop
            yield self.shuffled_x[start:stop].view(steps, width), self.shuffled_y[start:stop].view(steps, width)


class QuadraticDataModule(L.LightningDataModule):
    """Train, validation and test splits of y = true_a·x² + true_b·x + true_c + noise_std·N(0, 1).

    After `setup("fit")` the splits are available as float32 tensors in original units:
    `train_x`, `train_y`, `val_x`, `val_y` (and `test_x`, `test_y` after `setup("test")`).
    """

    def __init__(
        self,
        # The curve. The defaults are the SGD article's: y = 0.75x² + 1.0x + 2.0 + 0.3·N(0, 1).
        true_a: float = 0.75,
        true_b: float = 1.0,
        true_c: float = 2.0,
        noise_std: float = 0.3,
        # Where x comes from: "grid" (evenly spaced over [x_min, x_max]), "uniform" over
        # [x_min, x_max], or "normal" with mean x_mean and standard deviation x_std.
        x_distribution: XDistribution = "normal",
        x_min: float = -2.0,
        x_max: float = 2.0,
        x_mean: float = 0.0,
        x_std: float = 1.0,
        # How many points in each split; validation and test are fresh draws, not held-out training points.
        n_train: int = 50,
        n_val: int = 50,
        n_test: int = 50,
        # numpy's legacy RandomState seed for the data (the article's is 20240215).
        seed: int = 20240215,
        # None: full batch (plain gradient descent). An integer: mini-batches of that size,
        # reshuffled at every pass over the training data.
        batch_size: int | None = None,
        # Optimizer steps per Lightning epoch; validation, checkpointing and early stopping run once
        # per epoch. None: one pass over the training data (one step when full batch).
        steps_per_epoch: int | None = None,
        # Optimizer steps fused into one training_step: 1 is the textbook loop; larger values
        # amortise Lightning's fixed per-call cost and give the same numbers (see benchmarks/).
        fused_steps: int = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()

    def _draw_splits(self) -> None:
        hp = self.hparams
        rng = np.random.RandomState(hp.seed)
        curve = dict(
            true_a=hp.true_a,
            true_b=hp.true_b,
            true_c=hp.true_c,
            noise_std=hp.noise_std,
            x_distribution=hp.x_distribution,
            x_min=hp.x_min,
            x_max=hp.x_max,
            x_mean=hp.x_mean,
            x_std=hp.x_std,
        )
        # Order matters: train, then validation, then test, so each split is independent of the
        # sizes of the ones drawn after it.
        splits = {}
        for split, n in (("train", hp.n_train), ("val", hp.n_val), ("test", hp.n_test)):
            x, y = draw_quadratic(rng, n, **curve)
            splits[split] = (torch.from_numpy(x), torch.from_numpy(y))
        (self.train_x, self.train_y), (self.val_x, self.val_y), (self.test_x, self.test_y) = splits.values()

    def setup(self, stage: str) -> None:
        if not hasattr(self, "train_x"):
            self._draw_splits()

    def train_dataloader(self) -> InMemoryBatches:
        hp = self.hparams
        return InMemoryBatches(
            self.train_x,
            self.train_y,
            batch_size=hp.batch_size,
            steps_per_epoch=hp.steps_per_epoch,
            fused_steps=hp.fused_steps,
            seed=hp.seed,
        )

    def _whole_split(self, x: torch.Tensor, y: torch.Tensor) -> InMemoryBatches | list:
        # Evaluation sees the whole split as one batch; an empty split is no dataloader at all.
        if len(x) == 0:
            return []
        return InMemoryBatches(x, y, batch_size=None, steps_per_epoch=1, fused_steps=1, seed=0)

    def val_dataloader(self) -> InMemoryBatches | list:
        return self._whole_split(self.val_x, self.val_y)

    def test_dataloader(self) -> InMemoryBatches | list:
        return self._whole_split(self.test_x, self.test_y)

    def predict_dataloader(self) -> InMemoryBatches | list:
        return self._whole_split(self.test_x, self.test_y)
