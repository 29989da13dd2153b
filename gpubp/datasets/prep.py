"""Splitting and scaling, with seeded host RNGs."""

from __future__ import annotations

import numpy

from .. import rows as row_views
from ..errors import ArgumentError, ShapeError
from ..rows import RowView, is_memory_map


def train_test_split(X, y, test_size: float = 0.2, seed: int = 0):
    """Shuffle the rows with `seed` and split them: returns X_train, X_test, y_train, y_test.

    A memory map, or a RowView, is split into RowViews of it: nothing of X is read. y is copied.
    """
    if not is_memory_map(X):
        X = numpy.asarray(X)
    y = numpy.asarray(y)
    if len(X) != len(y):
        raise ShapeError(f"X and y must have the same number of rows; got {len(X)} and {len(y)}")
    if not 0 < test_size < 1:
        raise ArgumentError(f"test_size must be a fraction between 0 and 1; got {test_size!r}")
    n_test = int(round(len(X) * test_size))
    if not 0 < n_test < len(X):
        raise ArgumentError(f"test_size={test_size} leaves an empty split of {len(X)} rows")
    order = numpy.random.default_rng(seed).permutation(len(X))
    test, train = order[:n_test], order[n_test:]
    if is_memory_map(X):
        view = X if isinstance(X, RowView) else RowView(X, numpy.arange(len(X)))
        return view.rows(train), view.rows(test), y[train], y[test]
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
        if is_memory_map(X):
            return self._fit_in_chunks(X)
        X = numpy.asarray(X, dtype=numpy.float64)
        if X.ndim != 2 or len(X) == 0:
            raise ShapeError(f"X must be a non-empty (N, features) array; got shape {X.shape}")
        axis = 0 if self.per_feature else None
        self.mean = numpy.broadcast_to(X.mean(axis=axis), X.shape[1:]).copy()
        std = numpy.broadcast_to(X.std(axis=axis), X.shape[1:])
        self.scale = numpy.where(std > 0, std, 1.0)
        return self

    def _fit_in_chunks(self, X) -> Standardizer:
        """fit for data read from disk: two passes of float64 sums over chunks, never all of X at once."""
        if X.ndim != 2 or len(X) == 0:
            raise ShapeError(f"X must be a non-empty (N, features) array; got shape {X.shape}")
        per_chunk = max(1, row_views.CHUNK_BYTES // (8 * X.shape[1]))
        chunks = [slice(start, start + per_chunk) for start in range(0, len(X), per_chunk)]
        count = len(X) if self.per_feature else len(X) * X.shape[1]
        total = sum(numpy.asarray(X[c], dtype=numpy.float64).sum(axis=0) for c in chunks)
        mean = total / count if self.per_feature else numpy.full(X.shape[1], total.sum() / count)
        squares = sum(((numpy.asarray(X[c], dtype=numpy.float64) - mean) ** 2).sum(axis=0) for c in chunks)
        var = squares / count if self.per_feature else numpy.full(X.shape[1], squares.sum() / count)
        std = numpy.sqrt(var)
        self.mean, self.scale = mean, numpy.where(std > 0, std, 1.0)
        return self

    def transform(self, X, dtype="float32"):
        if self.mean is None:
            raise ArgumentError("this Standardizer has not been fitted: call fit(X_train) first")
        if is_memory_map(X):  # scaled as it is read, a block of rows at a time
            view = X if isinstance(X, RowView) else RowView(X, numpy.arange(len(X)))
            return view.mapped(lambda block: self.transform(block, dtype))
        X = numpy.array(X, dtype=numpy.float64)  # a copy, scaled in place: the caller's X is left alone
        if X.ndim != 2 or X.shape[1] != len(self.mean):
            raise ShapeError(f"X must have shape (N, {len(self.mean)}) for this Standardizer; got {X.shape}")
        X -= self.mean
        X /= self.scale
        return X.astype(dtype)

    def fit_transform(self, X, dtype="float32"):
        return self.fit(X).transform(X, dtype)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> Standardizer:
        return cls(data["mean"], data["scale"])
