"""FileDataModule: QuadraticDataModule, or your own points read from a file (data.file), with every option checked.

The data module the `fitquad` commands use. The core's QuadraticDataModule (fitquad.core.data) draws the noisy
quadratic and checks nothing; this subclass adds what the commands promise a user: each option's range checked as
the class is built (one line naming the option), and your own points read from a file (fitquad.checks.data_files)
in place of the drawn ones.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from fitquad.checks.data_files import held_out_splits, read_points
from fitquad.checks.validation import InvalidInput, check_data_options, check_file_options, held_out_fraction
from fitquad.core.data import QuadraticDataModule


class FileDataModule(QuadraticDataModule):
    """QuadraticDataModule's splits of the noisy quadratic, or of your own points read from a file.

    Args:
        file: Your own points instead of generated ones: a CSV or other text file of columns (header row
            optional), a .npy array or a .npz archive (fitquad.checks.data_files). The true curve and the noise are
            then unknown, and the diagnosis estimates σ² from the optimum's residuals. null: generate the data.
        x_column: The column of x in the file(s): its header name (or array name), or its position, 0 first.
        y_column: The column of y, likewise.
        val_file: Validation points from a second file, with the same columns.
        test_file: Test points from a file, with the same columns.
        val_fraction: The share of data.file's points held out for validation, picked at random (seeded by
            data.seed). null: 0.2, or none when data.val_file gives the validation points.
        test_fraction: The share of data.file's points held out for testing, likewise.
        **kwargs: QuadraticDataModule's options (the generated data's are not used with data.file).
    """

    def __init__(
        self,
        *args: Any,
        file: str | None = None,
        x_column: int | str = 0,
        y_column: int | str = 1,
        val_file: str | None = None,
        test_file: str | None = None,
        val_fraction: float | None = None,
        test_fraction: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.save_hyperparameters()
        check_data_options(self.hparams)
        check_file_options(self.hparams, option_defaults())

    def load_splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        hp = self.hparams
        if hp.file is None:
            return super().load_splits()
        x, y = read_points("data.file", hp.file, hp.x_column, hp.y_column)
        splits = held_out_splits(x, y, held_out_fraction(hp, "val"), held_out_fraction(hp, "test"), hp.seed)
        for split, path in (("val", hp.val_file), ("test", hp.test_file)):
            if path is not None:
                splits[split] = read_points(f"data.{split}_file", path, hp.x_column, hp.y_column)
            if len(splits[split][0]) == 1:  # R², a validation and test metric, needs two points
                given = f"data.{split}_file" if path is not None else f"data.{split}_fraction"
                what = "validation" if split == "val" else "test"
                raise InvalidInput(f"{given} gives 1 {what} point, and R² needs at least 2: give more points, or none")
        return splits

    @property
    def true_coefficients(self) -> list[float] | None:
        return super().true_coefficients if self.hparams.file is None else None

    @property
    def true_noise_std(self) -> float | None:
        return super().true_noise_std if self.hparams.file is None else None


def option_defaults() -> dict[str, Any]:
    """Every option of FileDataModule and QuadraticDataModule, with its default."""
    defaults = {}
    for cls in (QuadraticDataModule, FileDataModule):
        for name, option in inspect.signature(cls.__init__).parameters.items():
            if option.default is not inspect.Parameter.empty:
                defaults[name] = option.default
    return defaults
