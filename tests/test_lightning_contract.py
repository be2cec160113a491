"""Lightning's contract, each part checked on both of fitquad's modules (the textbook QuadraticRegression and the
opt-in FusedQuadraticRegression) against Lightning's own behaviour: a minimal automatic-optimization module
(`AutomaticLine`) run under the same Trainer, or torch itself."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins import MixedPrecision

from conftest import article_data, fit_in_process, plain_loop, regression
from fitquad.callbacks.clipping import GradientClipping
from fitquad.core.data import QuadraticDataModule
from fitquad.core.fused import FusedQuadraticRegression
from fitquad.core.module import LOGGED_METRICS, QuadraticRegression
from fitquad.theory.reference import optimum

ARTICLE_DATA = dict(seed=20240215, n_train=50, n_val=10)
ARTICLE_MODEL = dict(degree=1, init_coefficients=[-3.0, 6.0], lr=0.1)
LESSON3_DATA = dict(
    true_a=0.75, true_b=-14.25, true_c=68.6875, noise_std=3.0, x_distribution="grid",
    x_min=0.0, x_max=19.0, n_train=20, n_val=20, seed=42,
)  # fmt: skip


class AutomaticLine(L.LightningModule):
    """The textbook module: automatic optimization, one optimizer step per training_step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch  # fitquad's batches: (x, y), 1-D
        return torch.nn.functional.mse_loss(self.layer(x.unsqueeze(-1)).squeeze(-1), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.layer(x.unsqueeze(-1)).squeeze(-1), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class HookCounter(L.Callback):
    """Counts every per-step hook, and torch's own optimizer step hook."""

    HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")

    def __init__(self) -> None:
        self.calls = dict.fromkeys([*self.HOOKS, "torch_step_pre_hook"], 0)

    def on_train_start(self, trainer, pl_module) -> None:
        def count(*args) -> None:
            self.calls["torch_step_pre_hook"] += 1

        trainer.optimizers[0].register_step_pre_hook(count)

    def on_before_backward(self, *args) -> None:
        self.calls["on_before_backward"] += 1

    def on_after_backward(self, *args) -> None:
        self.calls["on_after_backward"] += 1

    def on_before_optimizer_step(self, *args) -> None:
        self.calls["on_before_optimizer_step"] += 1


class RecordingLogger(Logger):
    """Keeps what is logged, in memory: (step, metrics) per call."""

    def __init__(self) -> None:
        super().__init__()
        self.logged: list[tuple[int, dict]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics, step=None) -> None:
        self.logged.append((step, dict(metrics)))

    def log_hyperparams(self, *args, **kwargs) -> None:
        pass

    def steps_of(self, key: str) -> list[int]:
        return [step for step, metrics in self.logged if key in metrics]


def article_fit(tmp_path: Path, steps: int, fused_steps: int | None = None, module=None, data=None, **trainer_options):
    """The article's fit, 10 steps an epoch, by `module`, or by the textbook module (fused_steps None) or the fused
    one."""
    datamodule = QuadraticDataModule(**(data or ARTICLE_DATA), steps_per_epoch=10)
    module = module or regression(fused_steps, **ARTICLE_MODEL)
    trainer = fit_in_process(module, datamodule, tmp_path, max_steps=steps, **trainer_options)
    return module, trainer


@pytest.mark.parametrize("fused_steps", [None, 1, 5])
def test_every_per_step_hook_runs_once_per_optimizer_step(tmp_path, fused_steps) -> None:
    counter = HookCounter()
    _, trainer = article_fit(tmp_path, 20, fused_steps, callbacks=[counter])
    reference = HookCounter()
    article_fit(tmp_path, 20, module=AutomaticLine(), callbacks=[reference])
    assert reference.calls == dict.fromkeys(reference.calls, 20)  # Lightning's own count
    assert counter.calls == reference.calls
    assert trainer.global_step == 20


@pytest.mark.parametrize("fused_steps", [None, 2])
def test_step_counting_callbacks_act_at_the_same_steps_as_under_automatic_optimization(tmp_path, fused_steps) -> None:
    def run(module, folder: str, fused_steps: int | None = None) -> tuple[RecordingLogger, list[str]]:
        logger = RecordingLogger()
        checkpoints = ModelCheckpoint(tmp_path / folder, every_n_train_steps=4, save_top_k=-1, filename="{step}")
        # LearningRateMonitor counts training_steps: fitquad refuses it with fused steps (validation.py).
        monitors = [LearningRateMonitor(logging_interval="step")] if fused_steps is None else []
        callbacks = [checkpoints, *monitors]
        options = dict(logger=logger, callbacks=callbacks, log_every_n_steps=3, enable_checkpointing=True)
        article_fit(tmp_path, 20, fused_steps, module=module, **options)
        return logger, sorted(p.name for p in (tmp_path / folder).iterdir())

    logger, files = run(regression(fused_steps, **ARTICLE_MODEL), "fitquad", fused_steps)
    reference_logger, reference_files = run(AutomaticLine(), "automatic")
    assert files == reference_files == [f"step={k}.ckpt" for k in (12, 16, 20, 4, 8)]
    if fused_steps is None:
        assert logger.steps_of("lr-SGD") == reference_logger.steps_of("lr-SGD") and logger.steps_of("lr-SGD")
    # Validation after steps 10 and 20: Lightning logs it at its count of training_steps before the
    # current one (9, 19), and so does the textbook module; the fused one gives it the optimizer step instead.
    assert reference_logger.steps_of("val/loss") == [9, 19]
    assert logger.steps_of("val/loss") == ([9, 19] if fused_steps is None else [10, 20])
    # fitquad's own training scalars: every log_every_n_steps optimizer steps, on the optimizer-step axis.
    assert logger.steps_of("train/loss") == [3, 6, 9, 12, 15, 18]


# Resuming into a new run folder, as the CLI does: Lightning says it keeps only best_model_path.
@pytest.mark.filterwarnings("ignore:The dirpath has changed from:UserWarning")
@pytest.mark.parametrize("fused_steps", [None, 3])
def test_last_checkpoint_holds_the_final_step_and_resumes_to_a_larger_max_steps(tmp_path, fused_steps) -> None:
    def last_checkpoint_callback(folder: Path) -> ModelCheckpoint:  # as the configs set it up
        return ModelCheckpoint(folder / "checkpoints", filename="last", save_on_train_epoch_end=True)

    options = dict(enable_checkpointing=True, fused_steps=fused_steps)
    article_fit(tmp_path, 25, callbacks=[last_checkpoint_callback(tmp_path)], **options)  # ends mid-epoch, mid-item
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 25

    resumed, trainer = article_fit(
        tmp_path / "resumed", 47, ckpt_path=last, callbacks=[last_checkpoint_callback(tmp_path / "resumed")], **options
    )
    uninterrupted, _ = article_fit(tmp_path / "uninterrupted", 47, fused_steps=fused_steps)
    assert trainer.global_step == 47
    for got, want in zip(resumed.parameters(), uninterrupted.parameters(), strict=True):
        assert torch.equal(got, want)


class WithScheduler:
    """A module whose configure_optimizers adds a scheduler, as users write it."""

    def __init__(self, interval: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.interval = interval

    def configure_optimizers(self):
        optimizer = super().configure_optimizers()
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.interval}}


class ScheduledRegression(WithScheduler, QuadraticRegression):
    pass


class ScheduledFusedRegression(WithScheduler, FusedQuadraticRegression):
    pass


class LearningRates(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lrs.append(optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize("scheduled", [ScheduledRegression, ScheduledFusedRegression])
@pytest.mark.parametrize("interval, steps_per_change", [("step", 2), ("epoch", 20)])
def test_schedulers_change_the_lr_when_they_should_with_no_warning(tmp_path, interval, steps_per_change, scheduled):
    lrs = LearningRates()
    options = {"fused_steps": 5} if scheduled is ScheduledFusedRegression else {}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=r"Detected call of `lr_scheduler.step\(\)`")
        article_fit(tmp_path, 60, module=scheduled(interval, **ARTICLE_MODEL, **options), callbacks=[lrs])
    # epoch = steps_per_epoch (10) steps; StepLR halves every 2 scheduler steps.
    expected = [0.1 * 0.5 ** (step // steps_per_change) for step in range(60)]
    assert lrs.lrs == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("fused_steps", [None, 10])
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
@pytest.mark.parametrize("problem", ["article", "lesson3"])
def test_mixed_precision_reaches_the_float32_optimum(tmp_path, precision, problem, fused_steps) -> None:
    data, model = (
        (ARTICLE_DATA, ARTICLE_MODEL)
        if problem == "article"
        else (LESSON3_DATA, dict(degree=2, feature_scaling="standardize", lr=0.35))
    )
    if precision == "16-mixed":  # the GPU's scaler, emulated on the CPU
        options = dict(plugins=[MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))])
    else:
        options = dict(precision=precision)
    module, trainer = article_fit(tmp_path, 200, module=regression(fused_steps, **model), data=data, **options)
    assert trainer.global_step == 200 and module.model.linear.weight.dtype == torch.float32
    datamodule = trainer.datamodule
    best = optimum(module.model, datamodule.train_x, datamodule.train_y, module.loss_fn, 0.0).train_loss
    x, y = datamodule.train_x.double(), datamodule.train_y.double()
    with torch.no_grad():
        loss = torch.nn.functional.mse_loss(module.model.double()(x), y).item()
    # Tolerance: autocast rounds every prediction to the half type's unit roundoff u (2⁻¹¹ for float16,
    # 2⁻⁸ for bfloat16), so even at the optimum the predictions are off by up to u·|y|, which adds up to
    # u²·mean(y²) to the MSE. Measured: 6e-7..2.4e-6 (16-mixed), 6e-5..1.1e-3 (bf16), below these bounds.
    u = 2.0**-11 if precision == "16-mixed" else 2.0**-8
    assert 0 <= (loss - best) / best <= u**2 * y.pow(2).mean().item() / best


@pytest.mark.parametrize("fused_steps", [None, 1])
def test_gradient_clipping_clips_unscaled_gradients_under_a_gradient_scaler(tmp_path, fused_steps) -> None:
    seen = []

    class GradientNorm(L.Callback):  # torch's step pre-hook: the gradient the update uses, after any clipping
        def on_train_start(self, trainer, pl_module) -> None:
            def norm(*args) -> None:
                seen.append(torch.nn.utils.get_total_norm([p.grad for p in pl_module.parameters()]).item())

            trainer.optimizers[0].register_step_pre_hook(norm)

    scaler = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    # The textbook module: Lightning's own gradient_clip_val; the fused one: fitquad's callback.
    clipping = {"gradient_clip_val": 0.5} if fused_steps is None else {"callbacks_first": [GradientClipping(0.5)]}
    callbacks = [*clipping.pop("callbacks_first", []), GradientNorm()]
    article_fit(tmp_path, 10, fused_steps, plugins=[scaler], callbacks=callbacks, **clipping)
    # The scaler's first scales overflow float16 (non-finite gradients: the scaler skips those steps, so the
    # optimizer takes fewer than 10); the first step taken (gradient norm ~40 unclipped) is clipped to 0.5 after
    # unscaling, not to 0.5/scale.
    assert 0 < len(seen) < 10 and seen[0] == pytest.approx(0.5, rel=1e-3)


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradient_clipping_callback_works_under_automatic_optimization(tmp_path, algorithm) -> None:
    module = AutomaticLine()
    with torch.no_grad():
        module.layer.weight.fill_(6.0)
        module.layer.bias.fill_(-3.0)
    article_fit(tmp_path, 30, module=module, callbacks=[GradientClipping(0.5, algorithm)])
    x, y = article_data()
    _, expected = plain_loop(lambda step: (x, y), torch.nn.MSELoss(), 30, clip=algorithm)
    assert torch.equal(module.layer.weight, expected.weight) and torch.equal(module.layer.bias, expected.bias)


@pytest.mark.parametrize("fused_steps", [None, 5])
def test_the_metrics_a_fit_can_monitor_are_those_the_checks_know(tmp_path, fused_steps) -> None:
    # EarlyStopping and ModelCheckpoint may only monitor what the module logs (the checks refuse any other name
    # before a fit starts): Lightning's own list after a fit is the reference.
    trainer = fit_in_process(regression(fused_steps), QuadraticDataModule(), tmp_path, max_steps=10)
    assert set(trainer.callback_metrics) - {"step"} == set(LOGGED_METRICS)
