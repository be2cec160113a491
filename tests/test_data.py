"""The data module: draws, splits, and how batches are served."""

import weakref
from itertools import islice

import numpy as np
import pytest
import torch

from fitquad.core.batches import InMemoryBatches
from fitquad.core.data import QuadraticDataModule


def make(**kwargs) -> QuadraticDataModule:
    datamodule = QuadraticDataModule(**kwargs)
    datamodule.setup("fit")
    return datamodule


def test_the_articles_training_points_come_out_exactly():
    # The article's own code, verbatim in spirit: seed, x first as float32, then y with the noise.
    np.random.seed(20240215)
    x = np.random.randn(50).astype(np.float32)
    y = (0.75 * x**2 + 1.0 * x + 2.0 + 0.3 * np.random.randn(50)).astype(np.float32)
    for n_val in (0, 7, 50, 1000):
        datamodule = make(n_train=50, n_val=n_val, seed=20240215)
        assert torch.equal(datamodule.train_x, torch.from_numpy(x))
        assert torch.equal(datamodule.train_y, torch.from_numpy(y))


def test_shapes_dtypes_and_determinism():
    a = make(n_train=20, n_val=30, n_test=40, seed=3)
    b = make(n_train=20, n_val=30, n_test=40, seed=3)
    a.setup("test")
    for name, n in (("train", 20), ("val", 30), ("test", 40)):
        x, y = getattr(a, f"{name}_x"), getattr(a, f"{name}_y")
        assert x.shape == y.shape == (n,) and x.dtype == y.dtype == torch.float32
        assert torch.equal(x, getattr(b, f"{name}_x")) and torch.equal(y, getattr(b, f"{name}_y"))
    assert not torch.equal(a.train_x, make(n_train=20, n_val=30, seed=4).train_x)


def test_splits_are_independent_draws_of_the_same_process():
    datamodule = make(n_train=2000, n_val=2000, x_distribution="normal", true_a=1.0, true_b=0.0, true_c=0.0)
    # Different points, not a copy of the training set...
    assert not torch.equal(datamodule.train_x, datamodule.val_x)
    # ...from the same distribution: the residuals around the true curve have the noise's std.
    for x, y in ((datamodule.train_x, datamodule.train_y), (datamodule.val_x, datamodule.val_y)):
        residual = (y - x**2).double()
        assert residual.std().item() == pytest.approx(0.3, rel=0.05)
        assert x.double().std().item() == pytest.approx(1.0, rel=0.05)


def test_grid_and_uniform_inputs():
    grid = make(x_distribution="grid", x_min=0.0, x_max=19.0, n_train=20, n_val=20, noise_std=0.0)
    assert torch.equal(grid.train_x, torch.arange(20, dtype=torch.float32))
    assert torch.equal(grid.train_y, 0.75 * grid.train_x**2 + 1.0 * grid.train_x + 2.0)
    # The grid draws no random numbers, so the validation noise differs from the training noise.
    noisy = make(x_distribution="grid", x_min=0.0, x_max=19.0, n_train=20, n_val=20)
    assert not torch.equal(noisy.train_y, noisy.val_y)
    uniform = make(x_distribution="uniform", x_min=-3.0, x_max=5.0, n_train=500)
    assert uniform.train_x.min() >= -3.0 and uniform.train_x.max() <= 5.0


def one_epoch(batches: InMemoryBatches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Take len() items and stop, as Lightning does: it does not resume the iterator after the last one."""
    return list(islice(iter(batches), len(batches)))


def test_full_batch_serves_every_point_each_step_without_copying():
    x, y = torch.arange(10.0), torch.arange(10.0) * 2
    batches = InMemoryBatches(x, y, batch_size=None, steps_per_epoch=7, fused_steps=3, seed=0)
    items = list(batches)
    assert [len(xs) for xs, _ in items] == [3, 3, 1] and len(batches) == 3
    for xs, ys in items:
        assert xs.data_ptr() == x.data_ptr()  # a broadcast view
        assert all(torch.equal(row, x) for row in xs) and all(torch.equal(row, y) for row in ys)


def step_batches(item) -> list:
    """The (x, y) batch of each optimizer step in a loader's item: the item itself at fused_steps 1 (the textbook
    loop's batch of 1-D tensors), else one per row or tuple element."""
    xs, ys = item
    if isinstance(xs, torch.Tensor) and xs.dim() == 1:
        return [(xs, ys)]
    return list(zip(xs, ys, strict=True))


@pytest.mark.parametrize("n, batch_size, fused_steps", [(10, 3, 1), (10, 3, 2), (12, 4, 5), (7, 7, 2)])
def test_mini_batches_cover_each_point_once_per_pass_and_reshuffle(n, batch_size, fused_steps):
    x = torch.arange(float(n))
    batches = InMemoryBatches(x, x * 10, batch_size=batch_size, steps_per_epoch=None, fused_steps=fused_steps, seed=1)
    passes = []
    for _ in range(3):
        rows = [row for item in one_epoch(batches) for row in step_batches(item)]
        # Every row is one optimizer step's batch: full-size except the pass's short last one.
        assert [len(r[0]) for r in rows] == [batch_size] * (n // batch_size) + (
            [n % batch_size] if n % batch_size else []
        )
        assert all(torch.equal(row_y, row_x * 10) for row_x, row_y in rows)  # x and y stay paired
        order = torch.cat([r[0] for r in rows])
        assert sorted(order.tolist()) == x.tolist()
        passes.append(order)
    if batch_size < n:
        assert not torch.equal(passes[0], passes[1])


def test_steps_per_epoch_continues_the_pass_across_epochs():
    x = torch.arange(10.0)
    batches = InMemoryBatches(x, x, batch_size=2, steps_per_epoch=3, fused_steps=2, seed=0)
    seen = torch.cat([xs.flatten() for _ in range(5) for xs, _ in one_epoch(batches)])  # 15 steps = 3 passes
    assert len(seen) == 30
    for k in range(3):
        assert sorted(seen[10 * k : 10 * (k + 1)].tolist()) == x.tolist()


@pytest.mark.parametrize("n, batch_size, fused_steps", [(10, 3, 2), (12, 4, 5), (20, 5, 1)])
def test_block_shuffle_permutes_fixed_blocks_each_pass(n, batch_size, fused_steps):
    x = torch.arange(float(n))
    batches = InMemoryBatches(x, -x, batch_size, None, fused_steps, seed=2, shuffle="blocks")
    passes = []
    for _ in range(4):
        blocks = [block for item in one_epoch(batches) for block in step_batches(item)]
        assert all(torch.equal(by, -bx) for bx, by in blocks)
        assert sorted(torch.cat([bx for bx, _ in blocks]).tolist()) == x.tolist()  # each point once a pass
        passes.append([tuple(bx.tolist()) for bx, _ in blocks])
    # The same blocks every pass (shuffled once), in a new order.
    assert all(sorted(p) == sorted(passes[0]) for p in passes)
    assert any(p != passes[0] for p in passes[1:])
    assert passes[0] != [tuple(x[i : i + batch_size].tolist()) for i in range(0, n, batch_size)]  # shuffled once


def test_block_shuffled_points_are_held_once_in_their_shuffled_order() -> None:
    datamodule = make(n_train=1000, batch_size=64, shuffle="blocks")
    drawn_x, drawn_y = datamodule.train_x, datamodule.train_y
    drawn = weakref.ref(drawn_x)
    first = datamodule.train_dataloader()
    # The loader's one-time order is now the datamodule's too: the same points, one copy of them.
    assert datamodule.train_x.data_ptr() == first.x.data_ptr() and datamodule.train_y.data_ptr() == first.y.data_ptr()
    assert torch.equal(datamodule.train_x.sort().values, drawn_x.sort().values)
    assert not torch.equal(datamodule.train_x, drawn_x)
    order = datamodule.train_x.argsort()
    assert torch.equal(datamodule.train_y[order], drawn_y[drawn_x.argsort()])  # every (x, y) pair kept together
    del drawn_x, drawn_y
    assert drawn() is None  # nothing else holds the drawn order
    # Made again (Lightning's reload_dataloaders_every_n_epochs), the loader serves the first one's batches, pass
    # after pass.
    again = datamodule.train_dataloader()
    for (xs, ys), (xs_again, ys_again) in zip(
        one_epoch(first) + one_epoch(first), one_epoch(again) + one_epoch(again), strict=True
    ):
        assert all(torch.equal(a, b) for a, b in zip((*xs, *ys), (*xs_again, *ys_again), strict=True))


def test_a_sample_of_large_data_spans_its_whole_range_and_is_the_same_each_time() -> None:
    datamodule = QuadraticDataModule(x_distribution="grid", x_min=0.0, x_max=1.0, n_train=300_000, n_val=0, n_test=0)
    datamodule.setup("fit")
    x, y = datamodule.training_sample(1000)
    assert len(x) == 1000 and x.min() < 0.01 and x.max() > 0.99  # not the first 1,000 points of a sorted grid
    assert abs(x.mean().item() - 0.5) < 0.05
    again_x, _ = datamodule.training_sample(1000)
    assert torch.equal(x, again_x)
    assert datamodule.training_sample(10**6)[0] is datamodule.train_x  # all of them when there are fewer
