"""Checkpoints written atomically (a temporary file beside the target, flushed, then os.replace) and read only with
torch.load(weights_only=True); every way a file can fail to load is one InvalidInput line naming it. Why:
docs/how-it-works.md, "checkpoint_io.py".
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from fitquad.checks.validation import InvalidInput
from fitquad.core.module import QuadraticRegression


def load_checkpoint(path: str | Path, map_location: Any = None) -> dict[str, Any]:
    """A Lightning checkpoint's contents, loaded weights-only; InvalidInput if the file is not one."""
    if not Path(path).is_file():
        raise InvalidInput(f"ckpt_path must be a checkpoint file, got {str(path)!r} (no such file)")
    checkpoint = load_weights_only(path, map_location)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InvalidInput(f"ckpt_path {path} is not a Lightning checkpoint (it has no state_dict)")
    state = checkpoint["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidInput(f"ckpt_path {path} is not a usable checkpoint: its state_dict holds no model weights")
    return checkpoint


def load_weights_only(path: str | Path, map_location: Any = None) -> Any:
    """torch.load(weights_only=True) of a whole archive (check_archive): a checkpoint, or a plain state_dict as
    ddp_spawn hands its weights back; InvalidInput naming ckpt_path if it cannot be read so."""
    if not Path(path).is_file():  # a ckpt_path that Lightning did not resolve to a file (registry:…)
        raise InvalidInput(f"ckpt_path {path} is no checkpoint file: no such file")
    check_archive(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        if "Weights only load failed" in str(error):
            what = f" ({unsafe[1]})" if unsafe else ""
            raise InvalidInput(
                f"ckpt_path {path} is refused: it holds pickled objects{what}, not only tensors and plain values, "
                "and fitquad never runs code from a checkpoint"
            ) from None
        raise InvalidInput(f"ckpt_path {path} is corrupt: {_first_line(error)}") from None
    # However else torch.load fails, the file is not a complete checkpoint: a truncated archive (RuntimeError,
    # OSError), an empty file (EOFError), damaged records (KeyError, ValueError, IndexError, TypeError, ...).
    except Exception as error:
        raise InvalidInput(f"ckpt_path {path} is truncated or corrupt: {_first_line(error)}") from None


def check_archive(path: str | Path) -> None:
    """torch.save writes a zip archive with a CRC per record, which torch.load does not check: a flipped
    bit inside a weight would load silently as a wrong weight. Check every record's CRC first."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise InvalidInput(f"ckpt_path {path} is truncated or corrupt: {_first_line(error)}") from None
    if damaged is not None:
        raise InvalidInput(f"ckpt_path {path} is corrupt: record {damaged} fails its CRC check")


def check_checkpoint_fits(checkpoint: dict[str, Any], path: str | Path, command: str, model: dict[str, Any]) -> None:
    """A checkpoint used where this config and command line ask for something else is refused, not used
    silently: LightningCLI would replace the model's options with the checkpoint's, dropping the user's."""
    trained_with = {k: v for k, v in (checkpoint.get("hyper_parameters") or {}).items() if not k.startswith("_")}
    # How many optimizer steps a training_step took (FusedQuadraticRegression; 1: the textbook module) is not the
    # model: any module evaluates the weights. A fit resumes with it as it was: the data loader's place counts in it.
    trained_fused, fused = trained_with.pop("fused_steps", 1), model.get("fused_steps", 1)
    if command == "fit" and trained_fused != fused:
        how = "the textbook QuadraticRegression" if trained_fused == 1 else "--model FusedQuadraticRegression"
        raise InvalidInput(
            f"ckpt_path {path} was trained with model.fused_steps {trained_fused}, and this fit asks for {fused}: a "
            f"fit resumes as it was trained ({how}, model.fused_steps {trained_fused})"
        )
    for name, value in trained_with.items():
        if name not in model:
            raise InvalidInput(
                f"ckpt_path {path} was written by another version of fitquad: its model option {name} is unknown here"
            )
        if model[name] != value and not (isinstance(value, (list, tuple)) and list(model[name] or []) == list(value)):
            raise InvalidInput(
                f"ckpt_path {path} was trained with model.{name} {value!r}, but this run asks for {model[name]!r}: "
                f"a checkpoint keeps the model it was trained as (set model.{name} to {value!r}, or start a new fit)"
            )
    # This config's model, for the names and shapes of its weights (FusedQuadraticRegression's are the same).
    module = QuadraticRegression(**{name: value for name, value in model.items() if name != "fused_steps"})
    check_weights(checkpoint["state_dict"], path, module.state_dict())
    if command == "fit":
        if not {"optimizer_states", "loops"} <= checkpoint.keys():
            raise InvalidInput(
                f"ckpt_path {path} holds the weights only (no optimizer or loop state): a fit cannot resume from "
                "it; validate, test and predict can use it"
            )
        check_training_state(checkpoint, path, len(list(module.parameters())))


def check_weights(weights: dict[str, torch.Tensor], path: str | Path, expected: dict[str, torch.Tensor]) -> None:
    """The checkpoint's weights have the names and shapes of this config's model (whatever its hyperparameters
    say: they may be missing, or edited)."""
    for name, tensor in expected.items():
        if name not in weights:
            raise InvalidInput(f"ckpt_path {path} has no {name}: it is not a checkpoint of this config's model")
        if weights[name].shape != tensor.shape:
            raise InvalidInput(
                f"ckpt_path {path} holds {name} of shape {list(weights[name].shape)}, and this config's model has "
                f"{list(tensor.shape)}: it was trained as another model"
            )
    unknown = sorted(set(weights) - set(expected))
    if unknown:
        raise InvalidInput(f"ckpt_path {path} holds weights this config's model does not have: {', '.join(unknown)}")


# What a resumed fit restores from `loops`, in the layout Lightning 2.6 writes into a checkpoint (pyproject pins
# lightning < 2.7): the fit loop's progress counters, and the data loader's state under its own state_dict.
# Lightning restores them without checking, so a missing key or a text counter is a KeyError or TypeError
# traceback deep inside its restore. They are read here only as data in the file, never from a live loop, and
# only here; tests/test_checkpoint_checks.py resumes a real checkpoint through these checks, so a Lightning
# that lays them out otherwise fails the tests, not a user's resume.
FIT_LOOP = "fit_loop"
FIT_LOOP_PROGRESS = ("epoch_progress", "epoch_loop.batch_progress")
LOADER_STATE = ("state_dict", "combined_loader")


def check_training_state(checkpoint: dict[str, Any], path: str | Path, n_parameters: int) -> None:
    """What a resumed fit restores besides the weights, checked as Lightning and fitquad write it: step and
    epoch counts, the loops' progress counters, the data loader's position, the optimizer's state."""

    def malformed(what: str) -> InvalidInput:
        return InvalidInput(f"ckpt_path {path} cannot be resumed: its {what} is not what Lightning writes")

    for key in ("epoch", "global_step"):
        if type(checkpoint.get(key)) is not int or checkpoint[key] < 0:
            raise malformed(f"{key} (an integer ≥ 0)")
    schedulers, callbacks = checkpoint.get("lr_schedulers", []), checkpoint.get("callbacks", {})
    if not isinstance(schedulers, list) or not all(isinstance(state, dict) for state in schedulers):
        raise malformed("lr_schedulers (a list of schedulers' states)")
    if not isinstance(callbacks, dict) or not all(isinstance(state, dict) for state in callbacks.values()):
        raise malformed("callbacks (each callback's state)")
    fit_loop = checkpoint["loops"].get(FIT_LOOP) if isinstance(checkpoint["loops"], dict) else None
    if not isinstance(fit_loop, dict) or not set(FIT_LOOP_PROGRESS) <= fit_loop.keys():
        raise malformed(f"loop state (loops.{FIT_LOOP} with {' and '.join(FIT_LOOP_PROGRESS)})")
    for key, value in _leaves(fit_loop, f"loops.{FIT_LOOP}"):
        if "progress" in key and not (type(value) is bool or type(value) is int and value >= 0):
            raise malformed(f"loop counter {key} ({value!r}; an integer ≥ 0)")
    loop_state = fit_loop.get(LOADER_STATE[0], {})
    loader_states = loop_state.get(LOADER_STATE[1], []) if isinstance(loop_state, dict) else None
    if not isinstance(loader_states, list):
        raise malformed("data-loader state")
    for state in loader_states:
        try:
            check_loader_state(state)
        except InvalidInput as error:
            raise InvalidInput(f"ckpt_path {path} cannot be resumed: {error}") from None
    optimizers = checkpoint["optimizer_states"]
    groups = optimizers[0].get("param_groups") if isinstance(optimizers, list) and len(optimizers) == 1 else None
    if not isinstance(groups, list) or not all(
        isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups
    ):
        raise malformed("optimizer state (one optimizer's state and param_groups)")
    if sum(len(group["params"]) for group in groups) != n_parameters or not isinstance(
        optimizers[0].get("state"), dict
    ):
        raise malformed(f"optimizer state (it has no state for this model's {n_parameters} parameter tensors)")


def check_loader_state(state: Any) -> None:
    """InvalidInput unless `state` is what fitquad.core.batches.InMemoryBatches.state_dict() writes."""
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


def _leaves(tree: Any, prefix: str) -> list[tuple[str, Any]]:
    """(dotted key, value) of every non-dict value in nested dicts."""
    if not isinstance(tree, dict):
        return [(prefix, tree)]
    return [leaf for key, value in tree.items() for leaf in _leaves(value, f"{prefix}.{key}")]


def _first_line(error: BaseException) -> str:
    """The gist of torch's message: its first sentence."""
    return (str(error).strip().split(". ")[0].splitlines() or [type(error).__name__])[0]


def remove_abandoned_partials(folder: Path) -> None:
    """Delete the .<name>.<pid>.partial files of saves that were killed midway (their process is gone): a
    save in progress, in this process or another alive, is left alone."""
    for partial in folder.glob(".*.partial"):
        pid = partial.suffixes[-2].lstrip(".") if len(partial.suffixes) >= 2 else ""
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            partial.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to someone else
        return True
    return True


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint plugin, with atomic local writes and weights-only reads (docs/how-it-works.md)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if "://" in str(path):  # remote storage: fsspec's own transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        remove_abandoned_partials(path.parent)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        # weights_only is True whatever is asked: the CLI refuses --weights_only false (validation.py). Lightning
        # reads what it wrote (a fit's checkpoint, checked by the CLI first; ddp_spawn's weights, a plain state_dict).
        checkpoint = load_weights_only(path, map_location)
        remove_abandoned_partials(Path(path).parent)  # a resumed run's folder may hold a killed save's leftovers
        return checkpoint
