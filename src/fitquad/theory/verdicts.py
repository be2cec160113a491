"""The diagnosis's rules: `diagnose` gives a finished fit's numbers (FitFacts) the verdict of the first rule in RULES,
an ordered table of (verdict, condition, sentence), that holds. The thresholds, each with its reason, are here;
docs/reading-the-diagnosis.md lists them. fitquad.callbacks.diagnosis.FitDiagnosis gathers the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from fitquad.theory.reference import relative_gap, training_noise_floor, validation_noise_floor

# ---- thresholds ----------------------------------------------------------------------------------
# Converged: the training loss within 1% of the closed-form optimum. Tighter than any difference a reader can see on a
# loss curve, loose enough that float32 arithmetic (7 digits) reaches it.
CONVERGED_GAP = 0.01
# Ill-conditioned: κ of the Hessian at least 1000. Even at the best learning rate gradient descent needs about κ/2 steps
# per factor e in the slowest direction, i.e. thousands of steps: the regime where "standardize" (κ ≈ 8 on lesson 3)
# changes everything. Below it, a slow fit is only a short one.
ILL_CONDITIONED_KAPPA = 1e3
# Stalled, rather than still converging: the steps predicted to go exceed the steps already taken, i.e. running as long
# again would not get there.
STALLED_STEPS_RATIO = 1.0
# Stalled by float32: from the final parameters, the steps float32 takes differ from the exact (float64) steps by at
# least half their size (fitquad.theory.precision): the updates are mostly rounding, so the fit cannot get closer,
# whatever the number of steps.
FLOAT32_UPDATE_ERROR = 0.5
# Far above a noise floor: above floor·(1 + max(3 standard deviations, 10%)). The MSE at the optimum is itself random:
# σ²·χ²(n − p)/n on the training set (sd σ²·√(2(n − p))/n), σ²·χ²(n)/n on n fresh points (sd σ²·√(2/n)), so 3 sd keeps
# false alarms near 0.3%; the 10% keeps tiny misfits on large data from being called under- or overfitting.
NOISE_FLOOR_SDS = 3.0
NOISE_FLOOR_MIN_MARGIN = 0.1
# Overfitting: validation MSE at least 1.5 times the training MSE (besides being far above σ²).
OVERFIT_RATIO = 1.5


@dataclass
class Diagnosis:
    verdict: str  # converged, stopped_early, still_converging, stalled_ill_conditioned, stalled_float32,
    #               underfitting, overfitting, diverged
    message: str  # one line, with the numbers that led to it
    numbers: dict = field(default_factory=dict)

    @property
    def in_plain_words(self) -> str:
        """What happened, why, and what to try, in a sentence a beginner can read before the numbers."""
        if self.verdict == "converged" and self.numbers.get("train_noise_floor") is None:
            return "The fit reached the best the model can do on this data: its loss is at the closed-form optimum."
        if self.verdict == "stopped_early" and self.numbers.get("mini_batch"):
            return STOPPED_EARLY_BY_BATCH_NOISE
        return IN_PLAIN_WORDS[self.verdict]


# Early stopping under mini-batches: the validation loss jitters with each batch's gradient noise, so a stop says
# nothing about overfitting (a model of the data's own degree cannot overfit it much).
STOPPED_EARLY_BY_BATCH_NOISE = (
    "Early stopping ended the fit when the validation loss stopped improving; with mini-batches that loss jitters "
    "with each batch's gradient noise, so the stop may be that noise, not overfitting. The best checkpoint holds the "
    "validation minimum; a larger batch, a smaller lr or more patience trains closer to the optimum."
)


# The sentence printed first for each verdict (the message with its numbers follows it).
IN_PLAIN_WORDS = {
    "converged": (
        "The fit reached the best the model can do on this data; what error is left is the noise in the data, "
        "which no model can remove."
    ),
    "stopped_early": (
        "Early stopping ended the fit when the validation loss stopped improving, on purpose before the training "
        "optimum (which would fit the noise); the best checkpoint holds the validation minimum."
    ),
    "still_converging": (
        "Gradient descent has not finished: the loss was still falling towards the best fit when training ended. "
        "Train for more steps, or take larger steps if the learning rate allows."
    ),
    "stalled_ill_conditioned": (
        "Gradient descent has stalled: the features differ so much in scale that a learning rate safe for the "
        "steepest direction barely moves along the flattest. Standardize (or whiten) the features."
    ),
    "stalled_float32": (
        "Gradient descent has stalled because 32-bit floats cannot hold the small steps it still needs to take. "
        "Train in 64-bit precision, or rescale the data."
    ),
    "underfitting": (
        "The model is too simple for this data: even its best fit leaves errors far above the noise. Give it "
        "more capacity (a higher degree) or less weight decay."
    ),
    "overfitting": (
        "The model has learnt the noise of its training points: it predicts new points much worse than them. Use "
        "a simpler model, more data, weight decay or early stopping."
    ),
    "diverged": (
        "Training blew up: each step overshot the minimum by more than the last, so the loss grew without bound. "
        "Lower the learning rate (or standardize the features, or clip the gradients)."
    ),
}


@dataclass
class FitFacts:
    """The numbers of a finished fit that the rules read. The learning-rate and step predictions are SGD's
    (fitquad.theory.conditioning): for another `optimizer` the advice leaves them out. `noise_std` is σ, or its
    estimate from the optimum's residuals where `noise_estimated` (your own data), or None where unknown."""

    steps_taken: int
    train_loss: float
    optimum_loss: float
    condition_number: float
    steps_to_go: float | None
    lr: float
    largest_stable_lr: float
    float32_update_error: float | None
    train_mse: float
    val_mse: float | None
    noise_std: float | None
    n_train: int
    n_val: int
    n_parameters: int
    mini_batch: bool = False
    stopped_early: bool = False
    optimizer: str = "SGD"
    loss_resolution: float = 0.0
    noise_estimated: bool = False
    steps_are_a_bound: bool = False

    # ---- what the rules and sentences derive from them --------------------------------------------
    @property
    def gap(self) -> float:
        return relative_gap(self.train_loss, self.optimum_loss, self.loss_resolution)

    @property
    def short_of_optimum(self) -> bool:
        return self.gap > CONVERGED_GAP

    @property
    def sgd(self) -> bool:
        return self.optimizer == "SGD"

    @property
    def where(self) -> str:
        return f"training loss {self.train_loss:.6g} vs optimum {self.optimum_loss:.6g} (gap {self.gap:.3g})"

    @property
    def other(self) -> str:
        return f" (the stable learning rate and step predictions are SGD's; this run used {self.optimizer})"

    @property
    def to_go(self) -> str:
        return "unknown (L1 has no curvature)" if self.steps_to_go is None else f"{self.steps_to_go:.3g}"

    @property
    def about(self) -> str:  # a bound: Huber, SmoothL1
        return "at least" if self.steps_to_go is not None and self.steps_are_a_bound else "about"

    @property
    def stalled(self) -> bool:
        return self.steps_to_go is not None and self.steps_to_go > STALLED_STEPS_RATIO * self.steps_taken

    @property
    def float32_bound(self) -> bool:
        return self.float32_update_error is not None and self.float32_update_error >= FLOAT32_UPDATE_ERROR

    @property
    def sigma2(self) -> str:
        return "σ̂²" if self.noise_estimated else "σ²"

    @property
    def floors(self) -> tuple[float, float, float, float]:
        """(train floor, its relative sd, validation floor, its relative sd): the optimum's MSE is itself random
        (see NOISE_FLOOR_SDS), so a training MSE of 4.9 against a floor of 7.65 ± 2.6 is no surprise."""
        dof = max(self.n_train - self.n_parameters, 1)
        return (
            training_noise_floor(self.noise_std, self.n_train, self.n_parameters),
            math.sqrt(2 * dof) / dof,
            validation_noise_floor(self.noise_std),
            math.sqrt(2 / self.n_val) if self.n_val else math.inf,
        )

    @property
    def train_far_above(self) -> bool:
        train_floor, train_sd, _, _ = self.floors
        return _far_above(self.train_mse, train_floor, train_sd)

    @property
    def val_far_above(self) -> bool:
        _, _, val_floor, val_sd = self.floors
        return self.val_mse is not None and _far_above(self.val_mse, val_floor, val_sd)

    @property
    def mses(self) -> str:
        train_floor, train_sd, val_floor, val_sd = self.floors
        val = "n/a"
        if self.val_mse is not None:
            val = f"{self.val_mse:.4g} (floor {self.sigma2} = {val_floor:.4g} ± {val_floor * val_sd:.2g})"
        return f"train MSE {self.train_mse:.4g} (floor {train_floor:.4g} ± {train_floor * train_sd:.2g}), val MSE {val}"

    @property
    def caveat(self) -> str:
        # An estimated σ² comes from this model's own residuals: a model too simple for the data raises the estimate
        # with its misfit, so underfitting cannot show against it. Validation MSE across degrees can tell.
        if not self.noise_estimated:
            return ""
        return (
            "; σ̂² is the noise estimated from this model's own residuals (n − p degrees of freedom), so underfitting "
            "would raise it rather than show against it: compare degrees by validation MSE (fitquad sweep) to tell"
        )

    @property
    def stopped_floor(self) -> str:
        if self.noise_std is None:
            return "unknown"
        return f"{self.sigma2} = {self.noise_std**2:.4g}" + (" (estimated)" if self.noise_estimated else "")


def _far_above(value: float, floor: float, relative_sd: float) -> bool:
    return value > floor * (1 + max(NOISE_FLOOR_SDS * relative_sd, NOISE_FLOOR_MIN_MARGIN))


def _val(f: FitFacts) -> str:
    return "n/a" if f.val_mse is None else f"{f.val_mse:.4g}"


@dataclass(frozen=True)
class Rule:
    verdict: str
    holds: Callable[[FitFacts], bool]
    sentence: Callable[[FitFacts], str]
    against_floors: bool = False  # the numbers it reads include the noise floors (reported with the verdict)


# The rules, in order: the first that holds is the diagnosis. A rule may assume that the ones above it did not hold.
RULES = [
    Rule(
        "diverged",
        lambda f: not math.isfinite(f.train_loss) and not f.sgd,
        lambda f: f"diverged: {f.where}; lower the learning rate{f.other}",
    ),
    Rule(
        "diverged",
        lambda f: not math.isfinite(f.train_loss) or f.steps_to_go == math.inf,
        lambda f: f"diverged: {f.where}; lr {f.lr:.3g} is above the largest stable lr {f.largest_stable_lr:.3g}",
    ),
    Rule(
        # Not a failure to converge: EarlyStopping ended the fit where validation stopped improving, on purpose short of
        # the training optimum (which, for a model that can fit the noise, overfits).
        "stopped_early",
        lambda f: f.short_of_optimum and f.stopped_early,
        lambda f: (
            f"stopped early by EarlyStopping after {f.steps_taken} steps: {f.where}; the validation loss had "
            f"stopped improving (final val MSE {_val(f)}, noise floor {f.stopped_floor}); the best checkpoint holds "
            "the validation minimum"
        ),
    ),
    Rule(
        "stalled_float32",
        lambda f: f.short_of_optimum and f.float32_bound,
        lambda f: (
            f"stalled by float32 resolution: {f.where}; float32 updates are {f.float32_update_error:.0%} "
            "rounding error (the updates round to nothing) — use --trainer.precision 64-true, or rescale the data "
            "(large values or offsets leave float32's 7 digits no room for small steps)"
        ),
    ),
    Rule(
        "still_converging",
        lambda f: f.short_of_optimum and not f.sgd,
        lambda f: f"still converging: {f.where} after {f.steps_taken} steps; train longer{f.other}",
    ),
    Rule(
        "stalled_ill_conditioned",
        lambda f: f.short_of_optimum and f.condition_number >= ILL_CONDITIONED_KAPPA and f.stalled,
        lambda f: (
            f"stalled by ill-conditioning: {f.where} after {f.steps_taken} steps; κ = {f.condition_number:.3g}, "
            f"so {f.about} {f.to_go} more steps are needed at lr {f.lr:.3g} (largest stable "
            f"{f.largest_stable_lr:.3g}); use model.feature_scaling standardize (or whiten)"
        ),
    ),
    Rule(
        "still_converging",
        lambda f: f.short_of_optimum,
        lambda f: (
            f"still converging: {f.where} after {f.steps_taken} steps; {f.about} {f.to_go} more full-batch "
            f"steps to within {CONVERGED_GAP:.0%} of the optimum at lr {f.lr:.3g}"
            + (" (mini-batch SGD: the loss hovers above the optimum by the gradient noise)" if f.mini_batch else "")
            + f"; train longer or raise lr (largest stable {f.largest_stable_lr:.3g})"
        ),
    ),
    Rule(
        "converged",
        lambda f: f.noise_std is None,
        lambda f: (
            f"converged to the optimum: {f.where} (the noise is unknown: as many points as parameters leave no "
            "residuals to estimate it from)"
        ),
    ),
    Rule(
        "converged",
        lambda f: f.noise_std <= 0,
        lambda f: f"converged to the optimum: {f.where} (noise-free data: no noise floor)",
    ),
    Rule(
        "underfitting",
        lambda f: f.train_far_above and (f.val_mse is None or f.val_far_above),
        lambda f: (
            f"underfitting: converged, but {f.mses} are far above the noise floor; the model cannot follow "
            "the curve — more capacity (model.degree) or less weight decay"
        ),
        against_floors=True,
    ),
    Rule(
        "overfitting",
        lambda f: f.val_far_above and f.val_mse > OVERFIT_RATIO * f.train_mse,
        lambda f: (
            f"overfitting: {f.mses}: validation is well above training and above the floor — less capacity, "
            "more data, regularization (model.weight_decay) or early stopping"
        ),
        against_floors=True,
    ),
    Rule(
        "converged",
        lambda f: True,
        lambda f: f"converged to the noise floor: {f.where}; {f.mses}{f.caveat}",
        against_floors=True,
    ),
]


# FitFacts' numbers that every verdict reports (with steps and relative_gap), by name in summary.json.
REPORTED = ("train_loss", "optimum_loss", "condition_number", "steps_to_go", "lr", "largest_stable_lr")
REPORTED += ("train_mse", "val_mse", "mini_batch")


def diagnose(facts: FitFacts) -> Diagnosis:
    """The first rule of RULES that holds, with the numbers that led to it."""
    rule = next(rule for rule in RULES if rule.holds(facts))
    f = facts
    numbers = {"steps": f.steps_taken, "relative_gap": f.gap, **{name: getattr(f, name) for name in REPORTED}}
    if f.float32_update_error is not None:
        numbers["float32_update_error"] = f.float32_update_error
    if rule.against_floors:
        train_floor, _, val_floor, _ = f.floors
        numbers.update(train_noise_floor=train_floor, val_noise_floor=val_floor)
    return Diagnosis(rule.verdict, rule.sentence(facts), numbers)
