"""Start-up time of the `fitquad` command against `import lightning`, measured in the same run.

    python benchmarks/startup.py              # 7 interleaved repeats
    python benchmarks/startup.py --repeats 3

Prints the median wall time of each command and its ratio to `python -c "import lightning"`, how soon
`fitquad fit` prints its first line (before PyTorch loads: fitquad.commands.entry), the README demo end to end
(`fitquad fit --config configs/lesson3.yaml`: wall time, its training, and its ratio to `import lightning`
plus that training), then
the heaviest imports of `fitquad.commands.cli` from `python -X importtime`, marking which come from fitquad
itself. Most of the start-up is Lightning's own import (torch, torch._dynamo, torchmetrics, and
matplotlib through torchmetrics), which fitquad cannot avoid.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYTHON = sys.executable
FITQUAD = str(Path(PYTHON).with_name("fitquad"))
COMMANDS = {
    "python -c pass": [PYTHON, "-c", "pass"],
    "python -c 'import lightning'": [PYTHON, "-c", "import lightning"],
    "python -c 'import fitquad.commands.cli'": [PYTHON, "-c", "import fitquad.commands.cli"],
    "fitquad --help": [FITQUAD, "--help"],
    "fitquad fit --help": [FITQUAD, "fit", "--help"],
}


def wall_seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def first_line_seconds() -> float:
    """Seconds until `fitquad fit` prints its first line (what it is about to run), run in a scratch folder."""
    config = Path(__file__).resolve().parents[1] / "configs" / "sgd_article.yaml"
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        command = [FITQUAD, "fit", "--config", str(config), "--trainer.max_steps", "1"]
        with subprocess.Popen(
            command, cwd=scratch, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        ) as fit:
            fit.stdout.readline()
            seconds = time.perf_counter() - started
            fit.communicate()
    return seconds


def demo_seconds() -> tuple[float, float]:
    """(wall seconds, training seconds) of the README demo in a scratch folder. Training: from the line that
    says it starts to the diagnosis's first line, which is printed as training ends."""
    config = Path(__file__).resolve().parents[1] / "configs" / "lesson3.yaml"
    stamps: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        command = [FITQUAD, "fit", "--config", str(config)]
        output = dict(stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        with subprocess.Popen(command, cwd=scratch, **output) as fit:
            for line in fit.stdout:
                for mark in ("fitquad: training", "fitquad: diagnosis"):
                    if line.startswith(mark):
                        stamps[mark] = time.perf_counter()
        wall = time.perf_counter() - started
    if fit.returncode:
        raise SystemExit(f"the demo failed with exit status {fit.returncode}")
    return wall, stamps["fitquad: diagnosis"] - stamps["fitquad: training"]


def heaviest_imports(count: int) -> list[tuple[float, str]]:
    """(cumulative ms, module) of the top-level imports under fitquad.commands.cli, heaviest first."""
    result = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", "import fitquad.commands.cli"], capture_output=True, text=True
    )
    rows = []
    for line in result.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]) / 1000, parts[2].rstrip()))
    return sorted(rows, reverse=True)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for command in COMMANDS.values():  # warm the file cache once
        wall_seconds(command)
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            times[name].append(wall_seconds(command))
    lightning = times["python -c 'import lightning'"]
    print(f"start-up, {args.repeats} interleaved repeats (median s, median ratio to 'import lightning')")
    print("| command | s | ratio |")
    print("|---|---|---|")
    for name, values in times.items():
        ratio = statistics.median(v / base for v, base in zip(values, lightning, strict=True))
        print(f"| {name} | {statistics.median(values):.2f} | {ratio:.2f} |")
    lightning_alone, demos = [], []
    for _ in range(args.repeats):  # interleaved with import lightning, so both see the same load
        lightning_alone.append(wall_seconds(COMMANDS["python -c 'import lightning'"]))
        demos.append(demo_seconds())
    wall, training = (statistics.median(values) for values in zip(*demos, strict=True))
    lightning = statistics.median(lightning_alone)
    # Ratio of the medians: on a shared VM one run's import can take 30% longer than the next, so the ratio of
    # each interleaved pair scatters far more than the medians move.
    print(
        f"\ndemo (fitquad fit --config configs/lesson3.yaml): {wall:.2f} s end to end (median), {training:.2f} s of "
        f"it training; 'import lightning' {lightning:.2f} s; ratio of the medians, demo / (import lightning + "
        f"training): {wall / (lightning + training):.2f}"
    )
    first_lines = [first_line_seconds() for _ in range(args.repeats)]
    print(f"\nfitquad fit: first line after {statistics.median(first_lines):.2f} s (median)")
    print("\nheaviest imports of fitquad.commands.cli (cumulative ms, nested by indentation):")
    for ms, name in heaviest_imports(15):
        print(f"{ms:8.0f}  {name}{'   <- fitquad' if 'fitquad' in name else ''}")


if __name__ == "__main__":
    main()
