"""Passes over the data and wall time of each loss's closed-form optimum on many points (the diagnosis's reference).

    python benchmarks/optimum_passes.py                   # 10⁶ points, degree 2
    python benchmarks/optimum_passes.py --points 2e6 --degree 4
    python benchmarks/optimum_passes.py --noise cauchy   # heavy tails: L1's and Huber's home ground

The points are the default quadratic's (0.75·(t − 9.5)² + 1 + 3·N(0,1) on t = 0..19 drawn uniformly), float32, as a
fit holds them; beyond 2¹⁸ points `fitquad.theory.reference.optimum` streams over them a chunk at a time
(fitquad.theory.streamed_optimum). A pass is one call of `design_chunks` (every chunk of the data once), counted by
wrapping it. The plain baseline: `torch.linalg.lstsq` on the whole float64 design matrix at once (MSE), in this
process; each loss's time is printed beside it as a ratio. The L1 optimum is exact: its vertex is proven optimal by
the linear program's certificate, and its loss is printed beside the IRLS fit's.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

from fitquad.core.model import PolynomialModel
from fitquad.theory import reference, streamed_optimum

LOSSES = {"mse": nn.MSELoss(), "huber": nn.HuberLoss(), "smooth_l1": nn.SmoothL1Loss(), "l1": nn.L1Loss()}


def count_passes() -> list[int]:
    """Wrap streamed_optimum.design_chunks so that every pass over the data adds one to the returned counter."""
    counter = [0]
    chunks = streamed_optimum.design_chunks

    def counted(*args, **kwargs):
        counter[0] += 1
        return chunks(*args, **kwargs)

    streamed_optimum.design_chunks = counted
    return counter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=float, default=1e6)
    parser.add_argument("--degree", type=int, default=2)
    parser.add_argument("--noise", choices=["normal", "cauchy"], default="normal")
    args = parser.parse_args()
    n = int(args.points)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, generator=generator) * 19
    noise = torch.randn(n, generator=generator)
    if args.noise == "cauchy":  # the ratio of two independent normals
        noise = noise / torch.randn(n, generator=generator)
    y = 0.75 * (x - 9.5) ** 2 + 1 + 3 * noise
    model = PolynomialModel(degree=args.degree)
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.2f}; {n:,} points, degree {args.degree}, {args.noise} noise")

    start = time.perf_counter()
    a = torch.cat(
        [torch.ones(n, 1, dtype=torch.float64), x.double().unsqueeze(1) ** torch.arange(1, args.degree + 1)], 1
    )
    torch.linalg.lstsq(a, y.double().unsqueeze(1), driver="gelsd")
    plain = time.perf_counter() - start
    del a
    print(f"plain torch.linalg.lstsq on the whole float64 design (MSE): {plain:.2f} s")

    passes = count_passes()
    for name, loss_fn in LOSSES.items():
        passes[0] = 0
        start = time.perf_counter()
        best = reference.optimum(model, x, y, loss_fn)
        took = time.perf_counter() - start
        print(
            f"{name:>9}: {passes[0]:4d} passes, {took:6.2f} s ({took / plain:5.1f}× the plain lstsq), "
            f"optimum loss {best.train_loss:.10g}"
        )


if __name__ == "__main__":
    main()
