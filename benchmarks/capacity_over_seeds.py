"""How typical is configs/capacity.yaml's one draw? Its picture over many data seeds, in closed form.

    python benchmarks/capacity_over_seeds.py              # 300 seeds
    python benchmarks/capacity_over_seeds.py --seeds 1000

For each data seed, capacity.yaml's data (15 training and 200 validation points of y = 2x² + x + 2 +
0.3·N(0, 1), x uniform on [−1, 1]) is drawn by fitquad's own data module, and every degree 0–12 is fitted by
least squares (numpy, float64: the optimum each trained run reaches, see tests/test_sweep.py). Prints how
often each statement the README makes about the capacity U holds.
"""

from __future__ import annotations

import argparse

import numpy as np

from fitquad.core.data import QuadraticDataModule

DATA = dict(true_a=2.0, true_b=1.0, true_c=2.0, noise_std=0.3, x_distribution="uniform", x_min=-1.0, x_max=1.0)
DEGREES = range(13)
SIGMA2 = 0.3**2


def mses(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train MSE, validation MSE) of the least-squares polynomial of each degree, for one data seed."""
    data = QuadraticDataModule(**DATA, n_train=15, n_val=200, n_test=0, seed=seed)
    data.setup("fit")
    x, y = data.train_x.double().numpy(), data.train_y.double().numpy()
    val_x, val_y = data.val_x.double().numpy(), data.val_y.double().numpy()
    train, val = [], []
    for degree in DEGREES:
        coefficients, *_ = np.linalg.lstsq(np.vander(x, degree + 1), y, rcond=None)
        train.append(np.mean((np.vander(x, degree + 1) @ coefficients - y) ** 2))
        val.append(np.mean((np.vander(val_x, degree + 1) @ coefficients - val_y) ** 2))
    return np.array(train), np.array(val)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=300)
    args = parser.parse_args()
    statements = {
        "training MSE never rises with degree": [],
        "degrees 0 and 1 underfit (train and validation MSE > 2·σ²)": [],
        "degree 12 trains below σ²": [],
        "the validation minimum is at degree 2 or 3": [],
        "degree 2 or 3 is within 5% of the validation minimum": [],
        "validation MSE ≥ 2 × its minimum at every degree ≥ 10": [],
    }
    for seed in range(1, args.seeds + 1):
        train, val = mses(seed)
        best = val.min()
        holds = [
            bool(np.all(np.diff(train) <= 1e-12 * train[:-1])),
            bool(np.all(train[:2] > 2 * SIGMA2) and np.all(val[:2] > 2 * SIGMA2)),
            bool(train[12] < SIGMA2),
            int(np.argmin(val)) in (2, 3),
            bool(min(val[2], val[3]) <= 1.05 * best),
            bool(np.all(val[10:] >= 2 * best)),
        ]
        for values, held in zip(statements.values(), holds, strict=True):
            values.append(held)
    print(f"capacity.yaml's set-up over data seeds 1..{args.seeds} (least squares, float64):")
    for statement, held in statements.items():
        print(f"  {np.mean(held):6.1%}  {statement}")
    every = np.all(np.array(list(statements.values())), axis=0)
    print(f"  {np.mean(every):6.1%}  all of these at once")


if __name__ == "__main__":
    main()
