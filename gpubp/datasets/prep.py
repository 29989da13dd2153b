"""Splitting and scaling, with seeded host RNGs."""

from __future__ import annotations

import numpy

from ..errors import ArgumentError, ShapeError


def train_test_split(X, y, test_size: float = 0.2, seed: int = 0):
    """Shuffle the rows with `seed` and split them: returns X_train, X_test, y_train, y_test."""
    X, y = numpy.asarray(X), numpy.asarray(y)
    if len(X) != len(y):
        raise ShapeError(f"X and y must have the same number of rows; got {len(X)} and {len(y)}")
    if not 0 < test_size < 1:
        raise ArgumentError(f"test_size must be a fraction between 0 and 1; got {test_size!r}")
    n_test = int(round(len(X) * test_size))
    if not 0 < n_test < len(X):
        raise ArgumentError(f"test_size={test_size} leaves an empty split of {len(X)} rows")
    order = numpy.random.default_rng(seed).permutation(len(X))
    test, train = order[:n_test], order[n_test:]
    return X[train], X[test], y[train], y[test]


class Standardizer:
    """x ↦ (x − mean) / scale, with mean and scale learned from the training rows.

    per_feature=True gives each column its own mean and scale (for tabular data);
    per_feature=False uses one for all columns (for images, where it keeps the
    rarely-lit border pixels from being blown up). A feature that never varies
    gets scale 1, so it maps to 0 instead of dividing by zero.
    """

    def __init__(self, mean=None, scale=None, per_feature: bool = True):
        self.per_feature = per_feature
        self.mean = None if mean is None else numpy.asarray(mean, dtype=numpy.float64)
        self.scale = None if scale is None else numpy.asarray(scale, dtype=numpy.float64)

    def fit(self, X) -> Standardizer:
        X = numpy.asarray(X, dtype=numpy.float64)
        if X.ndim != 2 or len(X) == 0:
            raise ShapeError(f"X must be a non-empty (N, features) array; got shape {X.shape}")
        axis = 0 if self.per_feature else None
        self.mean = numpy.broadcast_to(X.mean(axis=axis), X.shape[1:]).copy()
        std = numpy.broadcast_to(X.std(axis=axis), X.shape[1:])
        self.scale = numpy.where(std > 0, std, 1.0)
        return self

    def transform(self, X, dtype="float32"):
        if self.mean is None:
            raise ArgumentError("this Standardizer has not been fitted: call fit(X_train) first")
        X = numpy.asarray(X, dtype=numpy.float64)
        if X.ndim != 2 or X.shape[1] != len(self.mean):
            raise ShapeError(f"X must have shape (N, {len(self.mean)}) for this Standardizer; got {X.shape}")
        return ((X - self.mean) / self.scale).astype(dtype)

    def fit_transform(self, X, dtype="float32"):
        return self.fit(X).transform(X, dtype)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> Standardizer:
        return cls(data["mean"], data["scale"])
