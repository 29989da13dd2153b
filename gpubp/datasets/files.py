"""A user's own data: .npz (arrays X and y) or .csv (the label in the last column)."""

from __future__ import annotations

from pathlib import Path

import numpy

from ..errors import DatasetError
from .csvfile import read_csv


def _labels_or_targets(y):
    """Whole numbers become integer class labels; anything else stays float targets."""
    y = numpy.asarray(y)
    if y.dtype.kind in "iu":
        return y.astype(numpy.int64)
    if y.dtype.kind in "fb" and y.ndim == 1 and numpy.all(numpy.isfinite(y)) and numpy.all(y == numpy.round(y)):
        return y.astype(numpy.int64)
    return y


def load_file(path, dtype="float32", header="auto"):
    """Read X and y from `path`: a .npz holding arrays X and y, or a .csv whose last column is y.

    A .csv's first line is a header when one of its fields is not a number (header="auto"),
    or say so with header="yes" or "no"; see gpubp.datasets.read_csv. Whole-number labels
    come back as int64 classes.
    """
    X, y, _ = read_data(path, dtype, header)
    return X, y


def read_data(path, dtype="float32", header="auto"):
    """load_file's X and y, and a line saying what was read (and which lines were skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"data file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with numpy.load(path, allow_pickle=False) as data:  # never unpickle a data file
                if "X" not in data or "y" not in data:
                    raise DatasetError(f"{path} must hold arrays named X and y; it holds {sorted(data.files)}")
                X, y = data["X"], data["y"]
        except (ValueError, OSError) as e:
            raise DatasetError(f"{path} is not a readable .npz file ({e})") from None
        report = f"read {len(X)} rows from {path.name}"
    elif suffix == ".csv":
        table = read_csv(path, header)
        if table.values.shape[1] < 2:
            raise DatasetError(
                f"{path} needs at least two columns (features, then the label); got {table.values.shape[1]}"
            )
        table.check_finite()
        X, y, report = table.values[:, :-1], table.values[:, -1], table.describe()
    else:
        raise DatasetError(f"data file {str(path)!r} must end in .npz or .csv; got {suffix or 'no suffix'!r}")
    if X.ndim != 2 or len(X) != len(y) or len(X) == 0:
        raise DatasetError(
            f"{path}: X must be a non-empty (N, features) array with one y per row; got X {X.shape}, y {y.shape}"
        )
    if X.dtype.kind not in "fiub":
        raise DatasetError(f"{path}: X must hold numbers; got dtype {X.dtype}")
    return X.astype(dtype), _labels_or_targets(y), report
