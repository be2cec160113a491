"""Run folders: every run lands in a folder of its own, runs/<config name>/version_N, made race-free up front (also
under DDP, torchrun and SLURM, whose ranks agree on one folder); why and how: docs/how-it-works.md, "run_folders.py".
"""

from __future__ import annotations

import os
from pathlib import Path

from jsonargparse import Namespace

from fitquad.checks.validation import InvalidInput

# Where runs land unless trainer.logger says otherwise: runs/<config name>/version_N.
RUNS_FOLDER = "runs"
DEFAULT_RUN_NAME = "fitquad"
RUN_FOLDER_ENV = "FITQUAD_RUN_FOLDER"


def config_name(config: Namespace, default: str = DEFAULT_RUN_NAME) -> str:
    """The run's name (runs/<name>/version_N): the config's own `name` if it has one (a sweep's or comparison's
    saved config.yaml keeps it, so a re-run lands beside the first), else the stem of its last config file."""
    if config.get("name"):
        return inside_its_folder(str(config.name), "name", "runs/")
    config_files = config.get("config") or []
    return Path(str(config_files[-1])).stem if config_files else default


def inside_its_folder(name: str, field: str, folder: str) -> str:
    """A run's name, as a folder inside `folder`: refused if it leads out of it (an absolute path, or a .. part)."""
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise InvalidInput(f"{field} must name a folder inside {folder} (no leading / and no .. part), got {name!r}")
    return name


def config_file_stem(args: list[str]) -> str | None:
    """The stem of the last `--config`/`-c` file on a command line, read before parsing (for defaults that
    `--print_config` shows as they will be used)."""
    stem = None
    for index, arg in enumerate(args):
        if arg in ("--config", "-c") and index + 1 < len(args):
            stem = Path(args[index + 1]).stem
        elif arg.startswith("--config="):
            stem = Path(arg.split("=", 1)[1]).stem
    return stem


def launched_by_lightning() -> bool:
    """A DDP rank > 0 that Lightning started with rank 0's command line (rank 0 made the run folder)."""
    return os.environ.get("LOCAL_RANK", "0") != "0" and RUN_FOLDER_ENV in os.environ


def external_launch() -> tuple[str, bool] | None:
    """(the job's id, whether this is rank 0) when torchrun or srun started several ranks, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "TORCHELASTIC_RUN_ID" in os.environ:
        return f"torchrun-{os.environ['TORCHELASTIC_RUN_ID']}", os.environ.get("RANK", "0") == "0"
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        job = f"slurm-{os.environ['SLURM_JOB_ID']}.{os.environ.get('SLURM_STEP_ID', '0')}"
        return job, os.environ.get("SLURM_PROCID", "0") == "0"
    return None


def make_run_folder(parent: Path, field: str) -> Path:
    """A new, empty parent/version_N, N one more than the largest there (0 if none), as TensorBoardLogger
    counts; made atomically, so a concurrent run never gets the same one. Under torchrun or srun:
    parent/version_<job id>, the same for every rank."""
    if launched_by_lightning():
        return Path(os.environ[RUN_FOLDER_ENV])
    launch = external_launch()
    if launch is not None:
        return job_run_folder(parent, field, *launch)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        while True:
            numbers = [
                int(p.name[8:]) for p in parent.iterdir() if p.name.startswith("version_") and p.name[8:].isdigit()
            ]
            folder = parent / f"version_{max(numbers, default=-1) + 1}"
            try:
                folder.mkdir()
                break
            except FileExistsError:  # another run made it between the listing and here: try the next one
                continue
    except (OSError, ValueError) as error:  # ValueError: a NUL in the name
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise InvalidInput(f"{field} gives the run folder {str(parent)!r}, which cannot be made: {reason}") from None
    os.environ[RUN_FOLDER_ENV] = str(folder)  # for the DDP ranks Lightning starts from this process
    return folder


def job_run_folder(parent: Path, field: str, job: str, rank_zero: bool) -> Path:
    """parent/version_<job>, made by rank 0. Every rank refuses one that already holds a run (the same job id given
    twice), so that all stop at once: no rank writes there before all have joined the process group, so a
    fresh job's folder is empty whenever a rank looks."""
    folder = parent / f"version_{job}"
    try:
        if rank_zero:
            folder.mkdir(parents=True, exist_ok=True)
        held = folder.is_dir() and any(folder.iterdir())
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise InvalidInput(f"{field} gives the run folder {str(parent)!r}, which cannot be made: {reason}") from None
    if held:
        raise InvalidInput(
            f"the run folder {folder} of this job id already holds a run: give the launcher another job id "
            "(torchrun --rdzv-id)"
        )
    return folder


def version_of(folder: Path) -> int | str:
    """TensorBoardLogger's version for a run folder: N of version_N, or the folder's whole name (a job's)."""
    suffix = folder.name[8:]
    return int(suffix) if suffix.isdigit() else folder.name


def claim_logger_folder(logger: Namespace, field: str) -> None:
    """Make a TensorBoardLogger's or CSVLogger's version folder now, and tell the logger its version; an
    explicit version whose folder already holds a run is refused (its files would be overwritten)."""
    init_args = logger.get("init_args")
    if init_args is None:
        return
    name = inside_its_folder(str(init_args.get("name") or ""), f"{field}.init_args.name", "its save_dir")
    parent = Path(str(init_args.get("save_dir") or ".")) / name
    version = init_args.get("version")
    if version is None:
        init_args["version"] = version_of(make_run_folder(parent, f"{field}.init_args.save_dir/name"))
        return
    folder = parent / (version if isinstance(version, str) else f"version_{version}")
    if folder.is_dir() and any(folder.iterdir()) and not launched_by_lightning():
        raise InvalidInput(
            f"{field}.init_args.version {version!r} is the run already in {folder}: leave version out for a new "
            "version_N (a fit never writes into another run's folder)"
        )
