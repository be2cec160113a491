"""Your own points: x and y read from a text file of columns (CSV), a .npy array or a .npz archive, each problem one
InvalidInput naming the option, the file, the line and what is wrong. The formats: docs/how-it-works.md.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fitquad.checks.limits import check_fits_in_memory
from fitquad.checks.validation import InvalidInput

Column = int | str
# UTF-8, with or without the byte-order mark that spreadsheet programs put at the start of a CSV they save.
ENCODING = "utf-8-sig"
TEXT_SUFFIXES = (".csv", ".txt", ".tsv", ".dat")
SUFFIXES = (*TEXT_SUFFIXES, ".npy", ".npz")
# Memory per point while a file is read: numpy's float64 parse of two columns, with room for its growing
# buffer, then the float32 x and y that are kept.
BYTES_PER_POINT_READ = 48
TOO_LARGE = "use fewer points (a sample of the file), or a machine with more memory"
FLOAT32_LARGEST = float(np.finfo(np.float32).max)


def read_points(option: str, path: str | Path, x_column: Column, y_column: Column) -> tuple[np.ndarray, np.ndarray]:
    """x and y of every point in the file, as float32 arrays in the file's order."""
    file = Path(path)
    where = f"{option} {str(path)!r}"
    if not file.exists():
        raise InvalidInput(f"{where}: no such file")
    if not file.is_file():
        raise InvalidInput(f"{where} is not a file")
    suffix = file.suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidInput(f"{where}: unknown kind of file {suffix or '(no suffix)'!r}; allowed: {', '.join(SUFFIXES)}")
    try:
        if suffix == ".npy":
            x, y, row = _read_npy(where, file, x_column, y_column)
        elif suffix == ".npz":
            x, y, row = _read_npz(where, file, x_column, y_column)
        else:
            x, y, row = _read_text(where, file, x_column, y_column)
    except UnicodeDecodeError:
        raise InvalidInput(f"{where} is not UTF-8 text: give a text file of columns, or a .npy or .npz file") from None
    except OSError as error:
        raise InvalidInput(f"{where} cannot be read: {error.strerror or error}") from None
    return _as_float32(where, x, y, row)


def _as_float32(where: str, x: np.ndarray, y: np.ndarray, row: Callable[[int], str]) -> tuple[np.ndarray, np.ndarray]:
    if len(x) == 0:
        raise InvalidInput(f"{where} holds no points")
    for name, values in (("x", x), ("y", y)):
        bad = ~np.isfinite(values) | (np.abs(values) > FLOAT32_LARGEST)
        if bad.any():
            index = int(bad.argmax())
            what = "not a finite number" if not np.isfinite(values[index]) else "beyond float32's largest number"
            raise InvalidInput(f"{where}: {row(index)}: {name} is {float(values[index])!r}, {what}")
    return x.astype(np.float32), y.astype(np.float32)


def _column_index(option: str, column: Column, names: list[str] | None, count: int, where: str) -> int:
    """The position of `column` among `count` columns (named `names`, if the file names them)."""
    if isinstance(column, int):
        if not 0 <= column < count:
            raise InvalidInput(
                f"{option} {column} is not a column of {where}: it has {count} columns, 0 to {count - 1}"
            )
        return column
    if names is None:
        raise InvalidInput(
            f"{option} {column!r} names a column, but {where} does not name its columns (no header row): "
            "give its position, 0 first"
        )
    if column not in names:
        raise InvalidInput(f"{option} {column!r} is not a column of {where}; its columns are {', '.join(names)}")
    return names.index(column)


def held_out_splits(
    x: np.ndarray, y: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train", "val", "test"}: the points split at random (numpy's RandomState(seed)), each split in file order."""
    n = len(x)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if n_test == n_val == 0:
        return {"train": (x, y), "val": (x[:0], y[:0]), "test": (x[:0], y[:0])}
    order = np.random.RandomState(seed).permutation(n)
    chosen = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
    splits = {name: np.sort(chosen[name]) for name in ("train", "val", "test")}
    return {name: (x[rows], y[rows]) for name, rows in splits.items()}


# ---- text --------------------------------------------------------------------------------------
def _data_lines(file: Path, first: int = 1):
    """(line number, fields text) of each line from line `first` on that holds data: comments and blank lines out."""
    with file.open(encoding=ENCODING) as lines:
        for number, line in enumerate(lines, start=1):
            text = line.split("#", 1)[0].strip()
            if number >= first and text:
                yield number, text


def _split(text: str, delimiter: str | None) -> list[str]:
    return [field.strip().strip('"').strip() for field in text.split(delimiter)]  # "x","y" as spreadsheets quote


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _count_lines(file: Path) -> int:
    count = 0
    with file.open("rb") as data:
        while chunk := data.read(1 << 24):
            count += chunk.count(b"\n")
    return count + 1


def _read_text(where: str, file: Path, x_column: Column, y_column: Column):
    needed = _count_lines(file) * BYTES_PER_POINT_READ
    check_fits_in_memory(f"{where} ({file.stat().st_size:,} bytes)", needed, TOO_LARGE)
    first = next(_data_lines(file), None)
    if first is None:
        raise InvalidInput(f"{where} holds no points")
    first_line, text = first
    delimiter = next((d for d in (",", "\t", ";") if d in text), None)  # None: runs of spaces
    fields = _split(text, delimiter)
    header = not any(_is_number(field) for field in fields)  # a header row names columns; data has numbers
    names = fields if header else None
    columns = tuple(
        _column_index(option, column, names, len(fields), where)
        for option, column in (("data.x_column", x_column), ("data.y_column", y_column))
    )
    if names is not None:
        _refuse_an_unnamed_column(where, names, columns, (x_column, y_column))
    data_from = first_line + 1 if header else first_line
    if next(_data_lines(file, data_from), None) is None:  # a header and nothing under it
        raise InvalidInput(f"{where} holds no points")
    try:
        values = np.loadtxt(
            file,
            delimiter=delimiter,
            skiprows=data_from - 1,
            usecols=columns,
            comments="#",
            ndmin=2,
            encoding=ENCODING,
            quotechar='"',
        )
    except ValueError as error:
        raise InvalidInput(f"{where}: {_text_problem(file, data_from, delimiter, columns, names, error)}") from None

    def row(index: int) -> str:
        number, _ = next(item for i, item in enumerate(_data_lines(file, data_from)) if i == index)
        return f"line {number}"

    return values[:, 0], values[:, 1], row


def _refuse_an_unnamed_column(where: str, names: list[str], columns: tuple[int, int], given: tuple) -> None:
    """A column with no name in a header that names the others is a row index (pandas' `to_csv` writes its index
    so, unless told index=False): fitting against it would silently fit the row number."""
    named = [name for name in names if name.strip()]
    for option, column, index in zip(("data.x_column", "data.y_column"), given, columns, strict=True):
        if not names[index].strip():
            example = f" (e.g. data.{option[5:]} {named[0]})" if named else ""
            raise InvalidInput(
                f"{option} {column!r} is the unnamed column of {where}, a row index (pandas' to_csv writes one unless "
                f"index=False): choose the columns by name{example}, or save the file without its index"
            )


def _text_problem(
    file: Path,
    data_from: int,
    delimiter: str | None,
    columns: tuple[int, int],
    names: list[str] | None,
    error: Exception,
) -> str:
    """Where numpy could not read the text, and why, found by reading it again line by line (only on failure)."""
    for number, text in _data_lines(file, data_from):
        fields = _split(text, delimiter)
        for column in columns:
            name = repr(names[column]) if names else str(column)
            if column >= len(fields):
                return f"line {number} has {len(fields)} column{'s' if len(fields) != 1 else ''}, no column {name}"
            if not _is_number(fields[column]):
                return f"line {number}: column {name} holds {fields[column]!r}, not a number"
    return " ".join(str(error).split())


# ---- numpy -------------------------------------------------------------------------------------
def _read_npy(where: str, file: Path, x_column: Column, y_column: Column):
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)  # the header only: the values stay on disk
    except ValueError:
        raise InvalidInput(f"{where} is not a .npy file of numbers that numpy can read") from None
    names = list(array.dtype.names) if array.dtype.names else None
    if names is not None and array.ndim == 1:
        columns = [array[name] for name in names]
    elif names is None and array.ndim == 2:
        columns = list(array.T)
    else:
        raise InvalidInput(
            f"{where} holds an array of shape {array.shape}: give a 2-D array, one column per variable, "
            "or a structured array with named fields"
        )
    check_fits_in_memory(f"{where} ({len(columns[0]):,} rows)", len(columns[0]) * BYTES_PER_POINT_READ, TOO_LARGE)
    x, y = (
        _numbers(where, columns[_column_index(option, column, names, len(columns), where)], option)
        for option, column in (("data.x_column", x_column), ("data.y_column", y_column))
    )
    return x, y, lambda index: f"row {index}"


def _read_npz(where: str, file: Path, x_column: Column, y_column: Column):
    try:
        archive = np.load(file, allow_pickle=False)
    except (ValueError, zipfile.BadZipFile):
        raise InvalidInput(f"{where} is not a .npz archive numpy can read") from None
    with archive:
        names = list(archive.files)
        if not names:
            raise InvalidInput(f"{where} holds no arrays")
        sizes = sum(archive.zip.getinfo(f"{name}.npy").file_size for name in names)
        check_fits_in_memory(f"{where} ({sizes:,} bytes of arrays)", 2 * sizes, TOO_LARGE)
        x_name, y_name = (
            names[_column_index(option, column, names, len(names), where)]
            for option, column in (("data.x_column", x_column), ("data.y_column", y_column))
        )
        try:
            x, y = archive[x_name], archive[y_name]
        except ValueError:
            raise InvalidInput(f"{where} holds Python objects, not numbers") from None
    for name, values in ((x_name, x), (y_name, y)):
        if values.ndim != 1:
            raise InvalidInput(f"{where}: array {name!r} has shape {values.shape}; x and y must be 1-D arrays")
    if len(x) != len(y):
        raise InvalidInput(f"{where}: x ({x_name!r}) has {len(x)} values and y ({y_name!r}) has {len(y)}")
    return _numbers(where, x, "data.x_column"), _numbers(where, y, "data.y_column"), lambda index: f"row {index}"


def _numbers(where: str, values: np.ndarray, option: str) -> np.ndarray:
    if values.dtype.kind not in "biuf":
        raise InvalidInput(f"{where}: the column {option} picks holds {values.dtype} values, not real numbers")
    return np.array(values, dtype=np.float64)  # read into memory (off the memory map)
