"""The data: a noisy quadratic y = a·x² + b·x + c + noise_std·N(0, 1), generated in memory, and its batches.

Training, validation and test points are independent draws of the same process from one seeded
numpy RandomState, in that order, each drawing x first and then the noise. Drawing the training set
first means its points do not depend on how many validation or test points are asked for, so the
SGD article's 50 points (seed 20240215) come out exactly.

Batches are served straight from in-memory tensors (InMemoryBatches, below): Lightning's usual DataLoader over a
TensorDataset indexes and collates one sample at a time, which is far slower than slicing tensors on a problem this
small (benchmarks/README.md); any iterable with `__len__` (and, to be resumable, `state_dict`/`load_state_dict`)
serves as a Lightning dataloader.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import lightning as L
import numpy as np
import torch

from . import InvalidInput

XDistribution = Literal["grid", "normal", "uniform"]
Shuffle = Literal["every_pass", "blocks"]
Batches = torch.Tensor | tuple[torch.Tensor, ...]  # one batch per optimizer step: (steps, size) or a tuple


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


# ---- batches ----------------------------------------------------------------------------------------------------


# Points gathered at a time when shuffling: only this many indices are ever widened to int64.
GATHER_CHUNK = 1 << 22


def permutation(n: int, generator: torch.Generator) -> torch.Tensor:
    """torch.randperm(n) in int32 where n allows: 4 bytes a point instead of 8, the same permutation, and the
    generator left in the same state (so every later draw is unchanged)."""
    return torch.randperm(n, generator=generator, dtype=torch.int32 if n <= torch.iinfo(torch.int32).max else None)


def gathered(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """values[order], a chunk at a time: indexing takes int64 indices, and a whole int64 copy of the order would
    cost 8 bytes a point at the peak of the shuffle."""
    out = torch.empty_like(values)
    for start in range(0, len(order), GATHER_CHUNK):
        part = order[start : start + GATHER_CHUNK].to(values.device, torch.int64)
        out[start : start + len(part)] = values[part]
    return out


class InMemoryBatches:
    """An iterable that Lightning uses as a dataloader: it yields batches sliced from in-memory tensors.

    With fused_steps 1 (the textbook loop) each item is one batch, a pair (x, y) of 1-D tensors. With more, an
    item holds `steps` consecutive batches, one optimizer step each, that FusedQuadraticRegression runs inside a
    single training_step: a pair (xs, ys) of (steps, batch_size) tensors, or of tuples of `steps` 1-D tensors.

    - Full batch: every step sees all the points (a broadcast view, no copy).
    - shuffle="every_pass": the points are reshuffled at every pass over the data with a seeded
      generator, gathered once, and cut into contiguous views; a short last batch is served alone.
    - shuffle="blocks": the points are shuffled once (`x` and `y` are then that order: in_block_order says
      they already are), cut into batch-sized blocks, and each pass only permutes the order of the blocks
      (views, no copy). For millions of points this removes the per-pass randperm and gather that dominate
      an epoch (benchmarks/README.md); each batch keeps the same members from pass to pass.
    A pass may span epochs: the position in it is kept from one epoch to the next.

    Resumable: `state_dict` (which Lightning saves in every checkpoint) holds the generator's state, its state
    when the current pass was drawn (the pass is re-drawn on load, not stored) and how far into the epoch the
    batches have been served, so a fit resumed mid-epoch serves exactly the batches the interrupted one would.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int | None,
        steps_per_epoch: int | None,
        fused_steps: int,
        seed: int,
        shuffle: Shuffle = "every_pass",
        in_block_order: bool = False,
    ) -> None:
        self.n = len(x)
        self.batch_size = self.n if batch_size is None else min(batch_size, self.n)
        self.full_batch = self.batch_size == self.n
        self.fused_steps = fused_steps
        self.batches_per_pass = math.ceil(self.n / self.batch_size)
        self.steps_per_epoch = steps_per_epoch or self.batches_per_pass
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.x, self.y = x, y
        if shuffle == "blocks" and not self.full_batch:
            # Shuffled once, and only that order kept: the blocks are views of it, and x and y become it (the
            # datamodule then drops the drawn order: one copy of millions of points, not two). Points already in
            # that order (in_block_order: the datamodule making its loader again) are not shuffled twice, but the
            # permutation is still drawn, so that every pass's block order is the same as the first loader's.
            order = permutation(self.n, self.generator)
            if not in_block_order:
                self.x, self.y = gathered(x, order), gathered(y, order)
            del order
            self.blocks_x, self.blocks_y = self.x.split(self.batch_size), self.y.split(self.batch_size)
        self.batch_in_pass = self.batches_per_pass  # position in the current pass: at its end, so a new one starts
        self.epoch_start = self.batch_in_pass  # batch_in_pass where the current epoch started
        self.items_served = 0  # items of the current epoch already yielded
        self.pass_generator_state = self.generator.get_state()  # before the current pass was drawn
        self.block_order: list[int] = []  # blocks: the current pass's order of the blocks

    def _item_steps(self, batch_in_pass: int) -> Iterator[int]:
        """How many steps each item of the next epoch holds, starting `batch_in_pass` batches into a pass.

        An item never spans two passes, and under every_pass shuffling the short last batch of a pass
        (if any) is an item of its own, so that an item's batches stack into one (steps, batch_size) view.
        """
        full_batches = self.n // self.batch_size if self.shuffle == "every_pass" else self.batches_per_pass
        left = self.steps_per_epoch
        while left > 0:
            if self.full_batch:
                steps = min(self.fused_steps, left)
            else:
                batch_in_pass %= self.batches_per_pass
                steps = min(self.fused_steps, left, max(full_batches - batch_in_pass, 1))
                batch_in_pass += steps
            yield steps
            left -= steps

    def count_items(self, batch_in_pass: int) -> int:
        """How many items `_item_steps(batch_in_pass)` yields, in closed form: an epoch of 10¹² steps is
        counted at once, not one by one (Lightning asks for len() at every epoch's start)."""
        if self.full_batch:
            return math.ceil(self.steps_per_epoch / self.fused_steps)
        full_batches = self.n // self.batch_size if self.shuffle == "every_pass" else self.batches_per_pass

        def to_end_of_pass(start: int, left: int) -> tuple[int, int]:
            # (items, steps) from batch `start` of a pass to its end, at most `left` steps: the full batches in
            # items of fused_steps, then the short last batch (every_pass) as an item of its own.
            fused = min(max(full_batches - start, 0), left)
            short = min(self.batches_per_pass - max(start, full_batches), left - fused)
            return math.ceil(fused / self.fused_steps) + short, fused + short

        left = self.steps_per_epoch
        items, steps = to_end_of_pass(batch_in_pass % self.batches_per_pass, left)
        left -= steps
        whole_pass_items, _ = to_end_of_pass(0, self.batches_per_pass)
        whole_passes, left = divmod(left, self.batches_per_pass)
        return items + whole_passes * whole_pass_items + to_end_of_pass(0, left)[0]

    def __len__(self) -> int:
        """Training steps (Lightning batches) in the current epoch, counting those already served."""
        return self.count_items(self.epoch_start)

    def __iter__(self) -> Iterator[tuple[Batches, Batches]]:
        # One optimizer step an item (the textbook loop): a batch is a pair of 1-D tensors (x, y).
        for xs, ys in self._items():
            yield (xs, ys) if self.fused_steps > 1 else (xs[0], ys[0])

    def _items(self) -> Iterator[tuple[Batches, Batches]]:
        items = self.count_items(self.epoch_start)
        remaining = itertools.islice(self._item_steps(self.epoch_start), self.items_served, None)
        for index, steps in enumerate(remaining, start=self.items_served):
            # Move on before yielding: Lightning stops at len(self) without resuming the generator, and
            # a checkpoint saved while this item trains must resume after it.
            self.items_served = index + 1
            if self.full_batch:
                self._end_epoch_after(index, items)
                yield self.x.expand(steps, self.n), self.y.expand(steps, self.n)
                continue
            if self.batch_in_pass == self.batches_per_pass:
                self._new_pass()
            first = self.batch_in_pass
            self.batch_in_pass += steps
            self._end_epoch_after(index, items)
            if self.shuffle == "blocks":
                blocks = self.block_order[first : first + steps]
                yield tuple(self.blocks_x[j] for j in blocks), tuple(self.blocks_y[j] for j in blocks)
            else:
                start, stop = first * self.batch_size, min((first + steps) * self.batch_size, self.n)
                width = stop - start if steps == 1 else self.batch_size
                yield self.pass_x[start:stop].view(steps, width), self.pass_y[start:stop].view(steps, width)

    def _end_epoch_after(self, index: int, items: int) -> None:
        if index + 1 == items:
            self.items_served, self.epoch_start = 0, self.batch_in_pass

    def _new_pass(self) -> None:
        self.batch_in_pass = 0
        self.pass_generator_state = self.generator.get_state()
        self._draw_pass()

    def _draw_pass(self) -> None:
        """The current pass's order, drawn with the generator from where it stood when the pass began."""
        if self.shuffle == "blocks":
            self.block_order = torch.randperm(self.batches_per_pass, generator=self.generator).tolist()
        else:
            order = permutation(self.n, self.generator)
            self.pass_x, self.pass_y = gathered(self.x, order), gathered(self.y, order)

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {
            "generator": self.generator.get_state(),
            "pass_generator": self.pass_generator_state,
            "batch_in_pass": self.batch_in_pass,
            "epoch_start": self.epoch_start,
            "items_served": self.items_served,
        }

    def load_state_dict(self, state_dict: dict[str, torch.Tensor | int]) -> None:
        self.batch_in_pass = state_dict["batch_in_pass"]
        self.epoch_start = state_dict["epoch_start"]
        self.items_served = state_dict["items_served"]
        self.pass_generator_state = state_dict["pass_generator"]
        if not self.full_batch and self.batch_in_pass < self.batches_per_pass:
            self.generator.set_state(self.pass_generator_state)
            self._draw_pass()  # the pass in progress, as it was
        self.generator.set_state(state_dict["generator"])
