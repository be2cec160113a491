"""Peak memory and wall time of a fit on many points, beside a plain script that holds the same data.

    python benchmarks/footprint.py                     # 10⁶, 10⁷ and 10⁸ points
    python benchmarks/footprint.py --points 1e6 1e7    # fewer
    python benchmarks/footprint.py --processes 2       # also DDP under torchrun, 2 CPU processes

Each measurement is a whole process, as a user runs it: its peak resident memory (getrusage of the child)
and its wall time. fitquad: `fitquad fit` on the default quadratic with N training points, no validation or
test points, `--data.shuffle blocks`, batches of 65,536, one epoch, in a scratch folder (TensorBoard,
checkpoints, diagnosis and figures all on). Plain: a script that draws the same float32 points, shuffles them
once into batch-sized blocks (what `shuffle: blocks` does) and runs the same epoch of torch.optim.SGD on a
degree-2 polynomial. Prints both, fitquad's bytes per point above the data (8 bytes a point: float32 x and y)
and above the plain script. With --processes P, also `fitquad fit` under torchrun with P CPU processes (DDP), each
holding all N points and training on its own N/P of them: its wall time and the largest process's peak
(getrusage's children include torchrun's), and that process's bytes per point of all N.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

PYTHON = sys.executable
FITQUAD = str(Path(PYTHON).with_name("fitquad"))
BATCH = 65_536

# Runs one command and prints its peak resident memory (KiB on Linux) and wall seconds: getrusage of the
# children of a process that has only this one child.
MEASURE = """
import resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - started
if done.returncode:
    sys.exit(f"{sys.argv[1:]} failed ({done.returncode}): {done.stderr[-2000:]}")
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, wall)
"""

PLAIN = """
import sys
import numpy as np
import torch
from fitquad.core.data import draw_quadratic

n, batch = int(sys.argv[1]), int(sys.argv[2])
x, y = draw_quadratic(np.random.RandomState(20240215), n, 0.75, 1.0, 2.0, 0.3, "normal", -2.0, 2.0, 0.0, 1.0)
x, y = torch.from_numpy(x), torch.from_numpy(y)
generator = torch.Generator().manual_seed(20240215)
order = torch.randperm(n, generator=generator)
blocks_x, blocks_y = x[order].split(batch), y[order].split(batch)
del x, y, order
model = torch.nn.Linear(2, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for j in torch.randperm(len(blocks_x), generator=generator).tolist():
    features = torch.stack([blocks_x[j], blocks_x[j] ** 2], dim=1)
    loss = torch.nn.functional.mse_loss(model(features).squeeze(1), blocks_y[j])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
"""


def measure(command: list[str], cwd: str) -> tuple[float, float]:
    """(peak resident MiB, wall seconds) of `command` run as its own process."""
    output = subprocess.run([PYTHON, "-c", MEASURE, *command], cwd=cwd, capture_output=True, text=True, check=True)
    kib, wall = output.stdout.split()
    return int(kib) / 1024, float(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=float, nargs="+", default=[1e6, 1e7, 1e8])
    parser.add_argument("--processes", type=int, default=1, help="also fit under torchrun with this many processes")
    args = parser.parse_args()
    fit_baseline, _ = fit(1_000)
    plain_baseline, _ = plain(1_000)
    print(f"baseline (1,000 points): fitquad {fit_baseline:,.0f} MiB, plain {plain_baseline:,.0f} MiB")
    ddp = args.processes > 1
    extra = f" {args.processes} processes: wall / each peak | bytes/point, each process |" if ddp else ""
    print(f"| points | fitquad wall / peak | plain wall / peak | fitquad bytes/point | plain bytes/point |{extra}")
    print("|---|---|---|---|---|" + ("---|---|" if ddp else ""))
    for points in map(int, args.points):
        fit_mib, fit_wall = fit(points)
        plain_mib, plain_wall = plain(points)
        # Bytes a point beyond each one's own 1,000-point peak (Python, torch, Lightning): the data's 8 bytes
        # (float32 x and y), and whatever else grows with the points.
        per_point = [
            (mib - base) * 2**20 / points for mib, base in ((fit_mib, fit_baseline), (plain_mib, plain_baseline))
        ]
        row = (
            f"| {points:.0e} | {fit_wall:.1f} s / {fit_mib:,.0f} MiB | {plain_wall:.1f} s / {plain_mib:,.0f} MiB "
            f"| {per_point[0]:.1f} | {per_point[1]:.1f} |"
        )
        if ddp:
            ddp_mib, ddp_wall = fit(points, args.processes)
            per_point = (ddp_mib - fit_baseline) * 2**20 / points
            row += f" {ddp_wall:.1f} s / {ddp_mib:,.0f} MiB | {per_point:.1f} |"
        print(row, flush=True)


def fit(points: int, processes: int = 1) -> tuple[float, float]:
    options = [
        f"--data.n_train={points}", "--data.n_val=0", "--data.n_test=0", f"--data.batch_size={BATCH}",
        "--data.shuffle=blocks", "--trainer.max_epochs=1",
    ]  # fmt: skip
    command = [FITQUAD, "fit", *options]
    if processes > 1:  # torchrun starts every process; each holds all the points and trains on its part
        launch = [PYTHON, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--rdzv-backend=c10d",
                  "--rdzv-endpoint=localhost:0"]  # fmt: skip
        ddp = ["--trainer.strategy=ddp", f"--trainer.devices={processes}", "--trainer.accelerator=cpu"]
        command = [*launch, *command, *ddp]
    with tempfile.TemporaryDirectory() as scratch:
        return measure(command, scratch)


def plain(points: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as scratch:
        return measure([PYTHON, "-c", PLAIN, str(points), str(BATCH)], scratch)


if __name__ == "__main__":
    main()
