"""The LightningModule against the trusted references: a plain PyTorch loop, and closed-form least squares."""

import numpy as np
import pytest
import torch

from conftest import article_data, fit_in_process, plain_loop, recorded_losses, regression
from fitquad.callbacks.clipping import GradientClipping
from fitquad.core.data import QuadraticDataModule
from fitquad.core.module import QuadraticRegression

TORCH_LOSSES = {
    "mse": torch.nn.MSELoss(),
    "l1": torch.nn.L1Loss(),
    "huber": torch.nn.HuberLoss(delta=1.0),
    "smooth_l1": torch.nn.SmoothL1Loss(beta=1.0),
}
SGD_SETTINGS = {
    "plain": {},
    "momentum": {"momentum": 0.9},
    "nesterov": {"momentum": 0.9, "nesterov": True},
    "weight_decay": {"weight_decay": 0.1},
    "dampening": {"momentum": 0.9, "dampening": 0.8},
}


def fitquad_run(tmp_path, loss="mse", steps=100, clip=None, data_options=None, fused_steps=None, **sgd):
    """The article's fit, by the textbook module (fused_steps None) or the fused one; (module, trainer, losses)."""
    data_options = {"seed": 20240215, "n_train": 50, "n_val": 10, **(data_options or {})}
    datamodule = QuadraticDataModule(**data_options)
    model = regression(fused_steps, degree=1, init_coefficients=[-3.0, 6.0], loss=loss, lr=0.1, **sgd)
    options = {}
    if clip is not None and fused_steps is None:  # Lightning's own clipping, as under automatic optimization
        options = {"gradient_clip_val": 0.5, "gradient_clip_algorithm": clip}
    elif clip is not None:  # Lightning leaves clipping to a manually optimized module: fitquad's callback
        options = {"callbacks": [GradientClipping(0.5, clip)]}
    trainer = fit_in_process(model, datamodule, tmp_path, max_steps=steps, **options)
    return model, trainer, recorded_losses(trainer)


@pytest.mark.parametrize("setting", SGD_SETTINGS)
@pytest.mark.parametrize("loss", TORCH_LOSSES)
def test_full_batch_matches_a_plain_pytorch_loop_step_for_step(tmp_path, loss, setting):
    x, y = article_data()
    expected_losses, expected = plain_loop(lambda step: (x, y), TORCH_LOSSES[loss], 100, **SGD_SETTINGS[setting])
    # The textbook module and a fused one (7 steps per training_step: an uneven last item), each for half the pairs.
    fused_steps = None if (list(TORCH_LOSSES).index(loss) + list(SGD_SETTINGS).index(setting)) % 2 else 7
    model, trainer, losses = fitquad_run(tmp_path, loss, fused_steps=fused_steps, **SGD_SETTINGS[setting])
    assert trainer.global_step == 100
    np.testing.assert_allclose(losses.numpy(), expected_losses, rtol=0, atol=1e-6)
    assert torch.equal(model.model.linear.weight, expected.weight)
    assert torch.equal(model.model.linear.bias, expected.bias)


@pytest.mark.parametrize("setting", SGD_SETTINGS)
@pytest.mark.parametrize("clip", ["norm", "value"])
def test_gradient_clipping_matches_torch_clipping_at_every_fusion_size(tmp_path, clip, setting):
    x, y = article_data()
    sgd = SGD_SETTINGS[setting]
    expected_losses, expected = plain_loop(lambda step: (x, y), torch.nn.MSELoss(), 60, clip=clip, **sgd)
    for fused_steps in (None, 1, 8):
        model, _, losses = fitquad_run(tmp_path, steps=60, clip=clip, fused_steps=fused_steps, **sgd)
        np.testing.assert_allclose(losses.numpy(), expected_losses, rtol=0, atol=1e-6)
        assert torch.equal(model.model.linear.weight, expected.weight)
        assert torch.equal(model.model.linear.bias, expected.bias)
    # Clipping really changed the run (the starting gradients are far above 0.5).
    unclipped, _ = plain_loop(lambda step: (x, y), torch.nn.MSELoss(), 60, **sgd)
    assert unclipped[5] != pytest.approx(expected_losses[5])


def test_mini_batches_match_a_plain_loop_with_the_same_shuffles(tmp_path):
    x, y = article_data()
    generator = torch.Generator().manual_seed(20240215)  # InMemoryBatches seeds with the data seed
    order = []

    def batches(step):  # reshuffle at the start of every pass, batches of 8 (the last one 2)
        if step % 7 == 0:
            order[:] = torch.randperm(50, generator=generator).split(8)
        return x[order[step % 7]], y[order[step % 7]]

    expected_losses, expected = plain_loop(batches, torch.nn.MSELoss(), 40, momentum=0.5)
    for fused_steps in (None, 3):
        model, _, losses = fitquad_run(
            tmp_path, steps=40, data_options={"batch_size": 8}, fused_steps=fused_steps, momentum=0.5
        )
        np.testing.assert_allclose(losses.numpy(), expected_losses, rtol=0, atol=1e-6)
        assert torch.equal(model.model.linear.weight, expected.weight)


def test_fused_steps_never_overshoot_max_steps(tmp_path):
    _, trainer, losses = fitquad_run(tmp_path, steps=25, data_options={"steps_per_epoch": 10}, fused_steps=4)
    assert trainer.global_step == 25 and len(losses) == 25


def test_lesson3_reaches_the_least_squares_optimum(tmp_path):
    # fast.ai lesson 3's data with standardised features, as configs/lesson3.yaml sets it up.
    data = dict(true_a=0.75, true_b=-14.25, true_c=68.6875, noise_std=3.0, x_distribution="grid")
    datamodule = QuadraticDataModule(**data, x_min=0.0, x_max=19.0, n_train=20, n_val=20, seed=42)
    model = QuadraticRegression(degree=2, feature_scaling="standardize", lr=0.35)
    fit_in_process(model, datamodule, tmp_path, max_steps=200)
    t, speed = datamodule.train_x.double().numpy(), datamodule.train_y.double().numpy()
    design = np.vander(t, 3, increasing=True)
    optimum, *_ = np.linalg.lstsq(design, speed, rcond=None)
    optimum_mse = np.mean((design @ optimum - speed) ** 2)
    trained = model.model.coefficients().numpy()
    trained_mse = np.mean((design @ trained - speed) ** 2)
    assert optimum_mse <= trained_mse <= 1.01 * optimum_mse
    np.testing.assert_allclose(trained, optimum, rtol=1e-3)


def test_float64_precision_trains_in_float64(tmp_path):
    for fused_steps in (None, 5):
        model = regression(fused_steps, degree=1, init_coefficients=[-3.0, 6.0])
        trainer = fit_in_process(model, QuadraticDataModule(), tmp_path, max_steps=10, precision="64-true")
        assert model.model.linear.weight.dtype == torch.float64
        assert recorded_losses(trainer).dtype == torch.float64 and len(recorded_losses(trainer)) == 10


def test_block_shuffled_mini_batches_match_a_plain_loop(tmp_path):
    x, y = article_data()
    generator = torch.Generator().manual_seed(20240215)
    order = torch.randperm(50, generator=generator)  # shuffled once...
    blocks = list(zip(x[order].split(8), y[order].split(8), strict=True))
    block_order = []

    def batches(step):  # ...then each pass permutes the 7 blocks (the last one of 2 points)
        if step % 7 == 0:
            block_order[:] = torch.randperm(7, generator=generator).tolist()
        return blocks[block_order[step % 7]]

    expected_losses, expected = plain_loop(batches, torch.nn.MSELoss(), 40, momentum=0.5)
    options = {"batch_size": 8, "shuffle": "blocks"}
    for fused_steps in (None, 3):
        model, _, losses = fitquad_run(tmp_path, steps=40, data_options=options, fused_steps=fused_steps, momentum=0.5)
        np.testing.assert_allclose(losses.numpy(), expected_losses, rtol=0, atol=1e-6)
        assert torch.equal(model.model.linear.weight, expected.weight)


def test_accumulated_batches_are_one_step_each_as_lightning_takes_them(tmp_path):
    # Lightning's accumulate_grad_batches under the textbook module: two shuffled halves of the article's 50 points
    # per optimizer step are one full-batch step (the mean of their gradients), and TrainingRecord records one loss
    # per optimizer step (the halves' mean), as a plain full-batch loop does; float sums in another order only.
    x, y = article_data()
    expected_losses, expected = plain_loop(lambda step: (x, y), torch.nn.MSELoss(), 30)
    datamodule = QuadraticDataModule(seed=20240215, n_train=50, n_val=10, batch_size=25)
    model = regression(None, degree=1, init_coefficients=[-3.0, 6.0], lr=0.1)
    trainer = fit_in_process(model, datamodule, tmp_path, max_steps=30, accumulate_grad_batches=2)
    losses = recorded_losses(trainer)
    assert trainer.global_step == len(losses) == 30
    np.testing.assert_allclose(losses.numpy(), expected_losses, rtol=1e-5)
    torch.testing.assert_close(model.model.linear.weight, expected.weight)
