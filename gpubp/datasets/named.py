"""Data sets by name, as the command line asks for them, already split into train and test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy

from ..errors import DatasetError
from .files import read_data
from .idx import mnist
from .prep import train_test_split
from .synthetic import digits, spirals, xor

NAMES = ("xor", "spirals", "digits", "mnist")


@dataclass
class Split:
    """Train and test rows of one data set; y holds integer labels (classification) or floats."""

    name: str
    X_train: numpy.ndarray
    y_train: numpy.ndarray
    X_test: numpy.ndarray
    y_test: numpy.ndarray
    images: bool = False  # pixels share one scale, so standardise them together
    report: str | None = None  # for a user's file: how many rows were read, and which lines skipped

    @property
    def classification(self) -> bool:
        return self.y_train.dtype.kind in "iu"

    @property
    def n_outputs(self) -> int:
        if self.classification:
            return int(max(self.y_train.max(), self.y_test.max())) + 1
        return 1 if self.y_train.ndim == 1 else self.y_train.shape[1]


def load_split(
    spec: str, test_size: float = 0.2, seed: int = 0, mnist_dir=None, download: bool = False, header: str = "auto"
) -> Split:
    """`spec` is xor, spirals, digits, mnist, or a path to a .npz, .csv or X .npy file (read as load_file reads it)."""
    if spec == "xor":
        X, y = xor()
        return Split("xor", X, y, X, y)  # four cases: train and test on all of them
    if spec == "mnist":
        X_train, y_train, X_test, y_test = mnist(path=mnist_dir, download=download)
        return Split("mnist", X_train, y_train, X_test, y_test, images=True)
    report = None
    if spec == "spirals":
        X, y = spirals(seed=seed)
        name, images = "spirals", False
    elif spec == "digits":
        X, y = digits()
        name, images = "digits", True
    elif Path(spec).suffix.lower() in (".npz", ".csv", ".npy"):
        X, y, report = read_data(spec, header=header)
        name, images = _name(Path(spec)), False
    else:
        raise DatasetError(
            f"data must be one of {', '.join(NAMES)}, or a path ending in .npz, .csv or .npy; got {spec!r}"
        )
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, seed=seed)
    return Split(name, X_train, y_train, X_test, y_test, images=images, report=report)


def _name(path: Path) -> str:
    """A data file's name for the saved model's: its stem, without the X of an X .npy (train_X.npy: train)."""
    if path.suffix.lower() != ".npy":
        return path.stem
    return path.stem[: path.stem.rindex("X")].rstrip("_-.") or path.resolve().parent.name or "data"
