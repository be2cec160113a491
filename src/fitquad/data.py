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

import itertools
import math
from collections.abc import Iterator
from typing import Any, Literal

import lightning as L
import numpy as np
import torch

from fitquad.validation import InvalidInput, check_data_options

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


def uniform_sample(x: torch.Tensor, y: torch.Tensor, limit: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All the points, or `limit` of them drawn uniformly at random (seeded), in their order: a sample that
    represents them all, not one end of a sorted grid. Drawn with replacement, so no permutation of all the
    points is ever made."""
    if len(x) <= limit:
        return x, y
    chosen = torch.randint(len(x), (limit,), generator=torch.Generator().manual_seed(seed)).sort().values
    return x[chosen], y[chosen]


Shuffle = Literal["every_pass", "blocks"]
Batches = torch.Tensor | tuple[torch.Tensor, ...]  # one batch per optimizer step: (steps, size) or a tuple


class InMemoryBatches:
    """An iterable that Lightning uses as a dataloader: it yields batches sliced from in-memory tensors.

    Each item holds `steps` consecutive batches, one optimizer step each, that the training module
    runs inside a single training_step: a pair (xs, ys) of (steps, batch_size) tensors, or of tuples of
    `steps` 1-D tensors. Fusing steps this way amortises Lightning's per-training_step cost (about
    0.5 ms, measured) over many cheap optimizer steps; fused_steps=1 is the textbook loop.

    - Full batch: every step sees all the points (a broadcast view, no copy).
    - shuffle="every_pass": the points are reshuffled at every pass over the data with a seeded
      generator, gathered once, and cut into contiguous views; a short last batch is served alone.
    - shuffle="blocks": the points are shuffled once, cut into batch-sized blocks, and each pass only
      permutes the order of the blocks (views, no copy). For millions of points this removes the
      per-pass randperm and gather that dominated an epoch (measured: 17 → 73 M samples/s at 10⁷
      points, batches of 65,536); each batch keeps the same members from pass to pass.
    A pass may span epochs: the position in it is kept from one epoch to the next.

    Resumable: `state_dict` holds the generator's state, its state when the current pass was drawn
    (so the pass's order is re-drawn on load, not stored: a few hundred bytes instead of 8 per point)
    and how far into the epoch the batches have been served, and Lightning saves it in every
    checkpoint (it does so for any dataloader with state_dict/load_state_dict). A fit resumed from a
    mid-epoch checkpoint then serves exactly the batches the interrupted one would have, so its
    parameters come out bit for bit the same. The tensors may live on any device; they are never copied back.
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
            order = torch.randperm(self.n, generator=self.generator)
            self.blocks_x, self.blocks_y = x[order].split(self.batch_size), y[order].split(self.batch_size)
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
            order = torch.randperm(self.n, generator=self.generator)
            self.pass_x, self.pass_y = self.x[order.to(self.x.device)], self.y[order.to(self.y.device)]

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {
            "generator": self.generator.get_state(),
            "pass_generator": self.pass_generator_state,
            "batch_in_pass": self.batch_in_pass,
            "epoch_start": self.epoch_start,
            "items_served": self.items_served,
        }

    @staticmethod
    def check_state(state: Any) -> None:
        """InvalidInput unless `state` is what state_dict() writes (a checkpoint's data-loader state)."""
        counters = ("batch_in_pass", "epoch_start", "items_served")
        generator_size = torch.Generator().get_state().numel()
        valid = isinstance(state, dict) and all(type(state.get(name)) is int and state[name] >= 0 for name in counters)
        valid = valid and all(
            isinstance(state.get(name), torch.Tensor)
            and state[name].dtype == torch.uint8
            and state[name].numel() == generator_size
            for name in ("generator", "pass_generator")
        )
        if not valid:
            raise InvalidInput(
                "the checkpoint's data-loader state is not one fitquad wrote: it needs "
                f"{', '.join(counters)} (integers ≥ 0) and generator, pass_generator (torch.Generator states)"
            )

    def load_state_dict(self, state_dict: dict[str, torch.Tensor | int]) -> None:
        self.check_state(state_dict)
        self.batch_in_pass = state_dict["batch_in_pass"]
        self.epoch_start = state_dict["epoch_start"]
        self.items_served = state_dict["items_served"]
        self.pass_generator_state = state_dict["pass_generator"]
        if not self.full_batch and self.batch_in_pass < self.batches_per_pass:
            self.generator.set_state(self.pass_generator_state)
            self._draw_pass()  # the pass in progress, as it was
        self.generator.set_state(state_dict["generator"])


class QuadraticDataModule(L.LightningDataModule):
    """Train, validation and test splits of y = true_a·x² + true_b·x + true_c + noise_std·N(0, 1).

    After `setup("fit")` the splits are available as float32 tensors in original units:
    `train_x`, `train_y`, `val_x`, `val_y` (and `test_x`, `test_y` after `setup("test")`).

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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_data_options(self.hparams)
        self.samples: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # training_sample's, by size

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
        device, rank, world_size = self._placement()
        x, y = self.train_x, self.train_y
        if world_size > 1:
            # Under DDP each process trains on its own shard, every world_size-th point, and DDP
            # averages the shards' gradients: with equal shards that is the whole data's gradient.
            if len(x) % world_size:
                raise InvalidInput(
                    f"data.n_train must be a multiple of the {world_size} processes under DDP, so that every "
                    f"process gets an equal shard; got {len(x)}"
                )
            x, y = x[rank::world_size].contiguous(), y[rank::world_size].contiguous()
        # Moved to the device once here, so no batch is ever copied (batch_to_device is then a no-op).
        return InMemoryBatches(
            x.to(device),
            y.to(device),
            batch_size=hp.batch_size,
            steps_per_epoch=hp.steps_per_epoch,
            fused_steps=hp.fused_steps,
            seed=hp.seed + rank,
            shuffle=hp.shuffle,
        )

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
