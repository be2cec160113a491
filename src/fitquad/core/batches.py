"""The data module's batches: an iterable that Lightning uses as a dataloader, slicing in-memory tensors.

Lightning's usual DataLoader over a TensorDataset indexes and collates one sample at a time, which is far slower than
slicing tensors on a problem this small (benchmarks/README.md); any iterable with `__len__` (and, to be resumable,
`state_dict`/`load_state_dict`) serves as a Lightning dataloader.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Literal

import torch

Shuffle = Literal["every_pass", "blocks"]
Batches = torch.Tensor | tuple[torch.Tensor, ...]  # one batch per optimizer step: (steps, size) or a tuple


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
