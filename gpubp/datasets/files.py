"""A user's own data: .npz (arrays X and y), .csv (the label in the last column), or X.npy beside y.npy."""

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
    """Read X and y from `path`: a .npz holding arrays X and y, a .csv whose last column is y,
    or a .npy of X beside a .npy of y (see npy_pair).

    A .csv's first line is a header when one of its fields is not a number (header="auto"),
    or say so with header="yes" or "no"; see gpubp.datasets.read_csv. Whole-number labels
    come back as int64 classes. A .npy pair comes back as read-only memory maps, as stored:
    nothing is read into memory until fit reads it batch by batch.
    """
    X, y, _ = read_data(path, dtype, header)
    return X, y


def npy_pair(path) -> tuple[Path, Path]:
    """The X and y files of a .npy pair: `path` names the X file, and y is the file of the same
    name with its last "X" made "y" (X.npy and y.npy, train_X.npy and train_y.npy), in the same folder."""
    path = Path(path)
    stem = path.stem
    if "X" not in stem:
        raise DatasetError(f"{path}: a .npy data file holds X, and its name must contain X (X.npy, train_X.npy)")
    at = stem.rindex("X")
    labels = path.with_name(stem[:at] + "y" + stem[at + 1 :] + path.suffix)
    if not labels.is_file():
        raise DatasetError(f"{path} holds X; its labels y must lie beside it in {labels.name}, which does not exist")
    return path, labels


def _load_npy(path):
    x_path, y_path = npy_pair(path)
    try:  # memory maps: the data stays on disk and is read as fit asks for it
        X = numpy.load(x_path, mmap_mode="r", allow_pickle=False)
        y = numpy.load(y_path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DatasetError(f"{x_path} and {y_path.name} must be readable .npy files ({e})") from None
    return X, y, f"opened {len(X)} rows from {x_path.name} and {y_path.name} as memory maps"


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
    elif suffix == ".npy":
        X, y, report = _load_npy(path)
    else:
        raise DatasetError(f"data file {str(path)!r} must end in .npz, .csv or .npy; got {suffix or 'no suffix'!r}")
    if X.ndim != 2 or len(X) != len(y) or len(X) == 0:
        raise DatasetError(
            f"{path}: X must be a non-empty (N, features) array with one y per row; got X {X.shape}, y {y.shape}"
        )
    if X.dtype.kind not in "fiub":
        raise DatasetError(f"{path}: X must hold numbers; got dtype {X.dtype}")
    if suffix == ".npy":  # as stored: a copy in another dtype would read all of it into memory
        if y.dtype.kind not in "iuf":
            raise DatasetError(f"{path}: y must hold integer labels or float targets; got dtype {y.dtype}")
        return X, y, report
    return X.astype(dtype), _labels_or_targets(y), report
