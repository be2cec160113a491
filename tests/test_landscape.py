"""The loss landscape against trusted references: a plain PyTorch loop for the recorded path, numpy's least
squares for the MSE optimum and the grid's argmin, torch's own loss for the surface."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.image import imread
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import fit_in_process, plain_sgd_path, regression
from fitquad.callbacks.landscape import LossLandscape
from fitquad.callbacks.parameter_path import ParameterPath
from fitquad.core.data import QuadraticDataModule
from fitquad.core.losses import make_loss
from fitquad.core.model import PolynomialModel, polynomial_basis
from fitquad.core.module import QuadraticRegression
from fitquad.theory.reference import optimum as reference_optimum
from fitquad.theory.surface import build_landscape, choose_axes, loss_at

ARTICLE_DATA = dict(n_train=50, n_val=0, n_test=0, seed=20240215)
ARTICLE_MODEL = dict(degree=1, feature_scaling="none", init_coefficients=[-3.0, 6.0], lr=0.1)
LESSON3_DATA = dict(
    true_a=0.75, true_b=-14.25, true_c=68.6875, noise_std=3.0, x_distribution="grid", x_min=0.0, x_max=19.0,
    n_train=20, n_val=0, n_test=0, seed=42,
)  # fmt: skip


def article_xy() -> tuple[torch.Tensor, torch.Tensor]:
    datamodule = QuadraticDataModule(**ARTICLE_DATA)
    datamodule.setup("fit")
    return datamodule.train_x, datamodule.train_y


@pytest.mark.parametrize(
    "steps, fused_steps, sgd",
    [
        (100, None, dict(lr=0.1)),  # the article, by the textbook module
        (60, 7, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),  # fused, uneven last batch
        (1100, 100, dict(lr=0.1, momentum=0.9, dampening=0.8)),  # past the 1024-row buffer: it doubles
    ],
)
def test_recorded_path_equals_plain_loop_step_for_step(tmp_path, steps, fused_steps, sgd) -> None:
    datamodule = QuadraticDataModule(**ARTICLE_DATA, steps_per_epoch=steps)
    module = regression(fused_steps, **{**ARTICLE_MODEL, **sgd})
    recorder = ParameterPath()
    fit_in_process(module, datamodule, tmp_path, max_steps=steps, limit_val_batches=0, callbacks=[recorder])

    article_neuron = PolynomialModel(degree=1)  # torch.nn.Linear(1, 1) underneath
    with torch.no_grad():
        article_neuron.linear.weight.fill_(6.0)
        article_neuron.linear.bias.fill_(-3.0)
    expected = plain_sgd_path(article_neuron, datamodule.train_x, datamodule.train_y, steps, torch.nn.MSELoss(), **sgd)

    assert torch.equal(recorder.path(), expected)  # steps + 1 rows: the start and after every step


def test_recorded_path_under_feature_scaling_maps_to_coefficients(tmp_path) -> None:
    # lesson3 with standardised features: the recorded parameters, mapped to original units, end where the
    # module's own coefficients() says, and each row equals the plain loop's on the same scaled model.
    datamodule = QuadraticDataModule(**LESSON3_DATA, steps_per_epoch=40)
    module = QuadraticRegression(degree=2, feature_scaling="standardize", lr=0.35, init_seed=0)
    recorder = ParameterPath()
    fit_in_process(module, datamodule, tmp_path, max_steps=40, limit_val_batches=0, callbacks=[recorder])

    reference = PolynomialModel(degree=2, feature_scaling="standardize")
    reference.fit_feature_scaling(datamodule.train_x)
    start = module.model.coefficients_of(recorder.path()[0])
    reference.set_coefficients(start)
    expected = plain_sgd_path(reference, datamodule.train_x, datamodule.train_y, 40, torch.nn.MSELoss(), lr=0.35)
    assert torch.equal(recorder.path(), expected)
    path = module.model.coefficients_of(recorder.path())
    torch.testing.assert_close(path[-1], module.model.coefficients(), rtol=1e-14, atol=0)  # float64 rounding


def test_recording_stops_when_the_fit_ends(tmp_path) -> None:
    # The optimizer hook is removed at train end: steps taken afterwards (another fit) are not recorded.
    module, recorder = QuadraticRegression(**ARTICLE_MODEL), ParameterPath()
    options = dict(max_steps=5, callbacks=[recorder], limit_val_batches=0)
    fit_in_process(module, QuadraticDataModule(**ARTICLE_DATA), tmp_path, **options)
    assert len(recorder.path()) == 6
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    optimizer.step()
    assert len(recorder.path()) == 6


def test_mse_optimum_and_grid_argmin_match_least_squares() -> None:
    x, y = article_xy()
    basis = polynomial_basis(x, 1)
    expected, *_ = np.linalg.lstsq(np.stack([np.ones(50), x.double().numpy()], axis=1), y.double().numpy())
    optimum = reference_optimum(PolynomialModel(degree=1), x, y, torch.nn.MSELoss()).coefficients
    np.testing.assert_allclose(optimum.numpy(), expected, rtol=1e-12, atol=1e-12)

    # A grid with the optimum off centre: its argmin is the grid point nearest the least-squares optimum.
    b_range, w_range = (expected[0] - 1.3, expected[0] + 0.7), (expected[1] - 0.4, expected[1] + 1.6)
    path = torch.tensor([[-3.0, 6.0], expected.tolist()], dtype=torch.float64)
    landscape = build_landscape(
        torch.nn.MSELoss(), basis, y, path, ["b", "w"], optimum, (1, 0), (w_range, b_range), resolution=101
    )
    row, column = np.unravel_index(np.argmin(landscape.surface), landscape.surface.shape)
    w_grid, b_grid = landscape.axis_values
    assert abs(w_grid[column] - expected[1]) <= (w_grid[1] - w_grid[0]) / 2
    assert abs(b_grid[row] - expected[0]) <= (b_grid[1] - b_grid[0]) / 2
    assert landscape.projection == "whole surface over (w, b)"


def test_surface_is_torchs_loss_at_every_grid_point() -> None:
    x, y = article_xy()
    basis = polynomial_basis(x, 1)
    loss_fn = make_loss("huber", huber_delta=0.5)
    points = torch.tensor([[0.0, 0.0], [-3.0, 6.0], [2.5, 0.9], [1.0, -2.0]], dtype=torch.float64)
    batched = loss_at(loss_fn, basis, y, points)
    one_by_one = [loss_fn(b + w * x.double(), y.double()) for b, w in points]
    torch.testing.assert_close(batched, torch.stack(one_by_one), rtol=1e-14, atol=0)


def test_three_coefficients_profile_or_slice_through_the_optimum() -> None:
    datamodule = QuadraticDataModule(**LESSON3_DATA)
    datamodule.setup("fit")
    x, y = datamodule.train_x, datamodule.train_y
    basis = polynomial_basis(x, 2)
    model = PolynomialModel(degree=2, feature_scaling="standardize")
    model.fit_feature_scaling(x)
    optimum = reference_optimum(model, x, y, torch.nn.MSELoss()).coefficients
    expected, *_ = np.linalg.lstsq(basis.numpy(), y.double().numpy())
    np.testing.assert_allclose(optimum.numpy(), expected, rtol=1e-9)
    # c and b travel far, a hardly: the slice is over (b, c) with a held at its optimum.
    path = torch.tensor([[0.0, 0.0, 0.7], [40.0, -8.0, 0.71], expected.tolist()], dtype=torch.float64)
    axes = choose_axes(path, ["c", "b", "a"], None)
    assert axes == (1, 0)
    extent = ((expected[1] - 2, expected[1] + 2), (expected[0] - 20, expected[0] + 20))
    landscape = build_landscape(torch.nn.MSELoss(), basis, y, path, ["c", "b", "a"], optimum, axes, extent, 101)
    # For MSE the picture is the profile (a at its best at every point), whose minimum is the optimum too;
    # for a loss without a closed form per point, the slice through the optimum.
    assert landscape.projection.startswith("profile over (b, c): at each point the MSE with a at its best")
    huber = build_landscape(torch.nn.HuberLoss(), basis, y, path, ["c", "b", "a"], optimum, axes, extent, 5)
    assert huber.projection.startswith(f"slice through the optimum at a = {expected[2]:.4g}")
    row, column = np.unravel_index(np.argmin(landscape.surface), landscape.surface.shape)
    b_grid, c_grid = landscape.axis_values
    assert abs(b_grid[column] - expected[1]) <= (b_grid[1] - b_grid[0]) / 2
    assert abs(c_grid[row] - expected[0]) <= (c_grid[1] - c_grid[0]) / 2
    assert choose_axes(path, ["c", "b", "a"], ["a", "c"]) == (2, 0)
    with pytest.raises(ValueError, match="two different names"):
        choose_axes(path, ["c", "b", "a"], ["a", "w"])


def test_callback_writes_a_figure_and_a_tensorboard_image(tmp_path) -> None:
    datamodule = QuadraticDataModule(**ARTICLE_DATA)
    module = QuadraticRegression(**ARTICLE_MODEL, momentum=0.9)
    logger = TensorBoardLogger(tmp_path, name="landscape", default_hp_metric=False)
    callback = LossLandscape(resolution=41)
    fit_in_process(module, datamodule, tmp_path, max_steps=30, logger=logger, callbacks=[callback], limit_val_batches=0)

    folder = tmp_path / "landscape" / "version_0"
    pixels = imread(folder / "loss_landscape.png")
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300
    assert pixels[..., :3].std() > 0.1  # contours, path and labels, not a blank canvas
    events = EventAccumulator(str(folder))
    events.Reload()
    assert events.Tags()["images"] == ["landscape/loss_surface"]
    assert events.Images("landscape/loss_surface")[0].step == 30


def test_the_title_names_the_optimizer_settings_that_shape_the_path() -> None:
    from fitquad.callbacks.landscape import describe_optimizer

    parameters = [torch.nn.Parameter(torch.zeros(2))]
    assert describe_optimizer(torch.optim.SGD(parameters, lr=0.1)) == "SGD lr 0.1"
    nesterov = torch.optim.SGD(parameters, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    assert describe_optimizer(nesterov) == "SGD lr 0.1, momentum 0.9, weight_decay 0.01, Nesterov"
    assert describe_optimizer(torch.optim.Adam(parameters, lr=0.01)) == "Adam lr 0.01"


def test_the_lowest_contour_level_is_the_optimums_loss() -> None:
    from matplotlib.figure import Figure

    from fitquad.callbacks.landscape import draw_landscape

    x = torch.linspace(-2, 2, 30, dtype=torch.float64)
    y = 0.75 * x**2 + x + 2 + 0.3 * torch.randn(30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    basis = polynomial_basis(x, 1)
    optimum = torch.linalg.lstsq(basis, y.unsqueeze(1)).solution.squeeze(1)
    path = torch.stack([torch.tensor([-3.0, 6.0], dtype=torch.float64), optimum])
    loss_fn = torch.nn.MSELoss()
    # A coarse grid that misses the optimum: its lowest grid value is above the optimum's loss.
    landscape = build_landscape(loss_fn, basis, y, path, ["b", "w"], optimum, (1, 0), ((-4.0, 8.0), (-5.0, 9.0)), 4)
    optimum_loss = loss_at(loss_fn, basis, y, optimum.unsqueeze(0)).item()
    assert landscape.surface.min() > optimum_loss * 1.01
    filled = draw_landscape(Figure().add_subplot(), landscape)
    assert filled.levels[0] == pytest.approx(optimum_loss)


def test_the_mse_profile_is_the_loss_minimised_over_the_held_coefficients() -> None:
    from fitquad.theory.surface import mse_profile

    x = torch.linspace(0, 19, 20, dtype=torch.float64)
    noise = torch.randn(20, generator=torch.Generator().manual_seed(42), dtype=torch.float64)
    y = 0.75 * (x - 9.5) ** 2 + 1 + 3 * noise
    basis = polynomial_basis(x, 2)  # columns c, b, a
    b_values, c_values = torch.tensor([-20.0, -14.0, 3.0]).double(), torch.tensor([0.0, 70.0]).double()
    uu, vv = torch.meshgrid(b_values, c_values, indexing="xy")
    profile = mse_profile(basis, y, 1, 0, [2], uu, vv)  # over (b, c), a at its best
    for i in range(uu.shape[0]):
        for j in range(uu.shape[1]):
            b, c = uu[i, j].item(), vv[i, j].item()
            rest = y - b * basis[:, 1] - c * basis[:, 0]
            a = (basis[:, 2] @ rest) / (basis[:, 2] @ basis[:, 2])  # least squares in the one held coefficient
            assert profile[i, j].item() == pytest.approx(torch.mean((rest - a * basis[:, 2]) ** 2).item(), rel=1e-9)
