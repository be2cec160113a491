"""The GPU tier: what only a CUDA device can tell, skipped where there is none. On a host with a GPU:

    python -m pytest -m cuda

16-mixed with torch's real GradScaler and bf16-mixed reaching the float32 optimum, the data placed on the device
once, a 1-GPU DDP fit landing where the CPU does, and the large-data fit training its epoch on the device (its speed:
`python benchmarks/speed.py --only large` on the same host).
"""

from __future__ import annotations

import pytest
import torch

from conftest import CONFIGS, fit_in_process, only_run_folder, read_summary, recorded_losses, regression, run_fitquad
from fitquad.core.data import QuadraticDataModule
from fitquad.theory.reference import optimum

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the GPU tier: pytest -m cuda)"),
]

LESSON3_DATA = dict(
    true_a=0.75, true_b=-14.25, true_c=68.6875, noise_std=3.0, x_distribution="grid",
    x_min=0.0, x_max=19.0, n_train=20, n_val=20, seed=42, steps_per_epoch=10,
)  # fmt: skip


@pytest.mark.parametrize("fused_steps", [None, 10])
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_on_the_gpu_reaches_the_float32_optimum(tmp_path, precision, fused_steps) -> None:
    datamodule = QuadraticDataModule(**LESSON3_DATA)
    module = regression(fused_steps, degree=2, feature_scaling="standardize", lr=0.35)
    trainer = fit_in_process(module, datamodule, tmp_path, max_steps=200, accelerator="gpu", precision=precision)
    assert trainer.global_step == 200
    best = optimum(module.model.cpu(), datamodule.train_x, datamodule.train_y, module.loss_fn).train_loss
    with torch.no_grad():
        x, y = datamodule.train_x.double(), datamodule.train_y.double()
        loss = torch.nn.functional.mse_loss(module.model.double()(x), y).item()
    u = 2.0**-11 if precision == "16-mixed" else 2.0**-8  # the half type's rounding unit (as on the CPU)
    assert 0 <= (loss - best) / best <= u**2 * y.pow(2).mean().item() / best


def test_the_data_is_placed_on_the_gpu_once(tmp_path) -> None:
    datamodule = QuadraticDataModule(**LESSON3_DATA)
    module = regression(None, degree=2, feature_scaling="standardize", lr=0.35)
    trainer = fit_in_process(module, datamodule, tmp_path, max_steps=5, accelerator="gpu")
    loader = trainer.train_dataloader
    assert loader.x.device.type == "cuda" and loader.y.device.type == "cuda"


def test_a_one_gpu_ddp_fit_lands_where_the_cpu_does(tmp_path) -> None:
    config = ["fit", "--config", str(CONFIGS / "lesson3.yaml"), "--trainer.max_steps", "25"]
    (tmp_path / "gpu").mkdir()
    (tmp_path / "cpu").mkdir()
    gpu = ["--trainer.accelerator", "gpu", "--trainer.strategy", "ddp", "--trainer.devices", "1"]
    run_fitquad(*config, *gpu, cwd=tmp_path / "gpu")
    run_fitquad(*config, cwd=tmp_path / "cpu")
    on_gpu = read_summary(only_run_folder(tmp_path / "gpu", "lesson3"))["coefficients"]
    on_cpu = read_summary(only_run_folder(tmp_path / "cpu", "lesson3"))["coefficients"]
    torch.testing.assert_close(torch.tensor(list(on_gpu.values())), torch.tensor(list(on_cpu.values())))


@pytest.mark.parametrize("fused_steps", [None, 1000])
def test_the_large_data_fit_trains_its_epoch_on_the_gpu(tmp_path, fused_steps) -> None:
    # benchmarks/speed.py's large problem, on the device: 10⁷ points, batches of 65,536, block-shuffled, one epoch.
    datamodule = QuadraticDataModule(**{**LESSON3_DATA, "steps_per_epoch": None}, n_train=10_000_000,
                                      batch_size=65_536, shuffle="blocks")  # fmt: skip
    module = regression(fused_steps, degree=2, feature_scaling="standardize", lr=0.1, momentum=0.9)
    trainer = fit_in_process(module, datamodule, tmp_path, max_epochs=1, accelerator="gpu", limit_val_batches=0)
    losses = recorded_losses(trainer)
    assert trainer.global_step == len(losses) == 153 and trainer.train_dataloader.x.device.type == "cuda"
    assert torch.isfinite(losses).all() and losses[-1] < 0.01 * losses[0]  # from its random start to the noise
