"""Rows read when asked: a memory map, or some of its rows in some order, split and scaled without a copy.

The data sets, the network's predict and the training data all meet arrays that
live on disk (numpy.load(path, mmap_mode="r")). This module says which those are,
and reads them in pieces of about CHUNK_BYTES, so that nothing as large as the
data is ever made in memory.
"""

from __future__ import annotations

import numpy

CHUNK_BYTES = 1 << 20  # checks and scaling read X and Y in pieces of about this many bytes


def is_memory_map(X) -> bool:
    """Whether X is read from disk as it is used: a NumPy memory map (numpy.memmap, or
    numpy.load(..., mmap_mode=...)), or a RowView of one."""
    return isinstance(X, (numpy.memmap, RowView))


class RowView:
    """Some rows of a 2-D array or memory map, in a given order, each block of them passed through
    `transform` (a function of an array of rows) when it is read: a data set split and scaled
    without being copied. Indexing it with a slice or an array of positions gives a NumPy array."""

    def __init__(self, source, index, transform=None):
        self.source, self.index, self.transform = source, numpy.asarray(index, dtype=numpy.int64), transform
        first = self[:1] if len(self.index) else source[:0]
        self.dtype = first.dtype
        self.shape = (len(self.index), *source.shape[1:])
        self.ndim = len(self.shape)
        self.nbytes = len(self.index) * first[:1].nbytes

    def __len__(self) -> int:
        return len(self.index)

    def __array__(self, dtype=None, copy=None):
        """All of it, read into memory: only where a caller asks for a whole array."""
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __getitem__(self, rows):
        block = numpy.take(self.source, self.index[rows], axis=0).view(numpy.ndarray)  # in memory: not a map
        return block if self.transform is None else self.transform(block)

    def rows(self, index) -> RowView:
        """The view of rows `index` of this one: a split of a split."""
        return RowView(self.source, self.index[index], self.transform)

    def mapped(self, transform) -> RowView:
        """The same rows, each block passed through `transform` after this view's own."""
        inner = self.transform
        return RowView(self.source, self.index, transform if inner is None else lambda b: transform(inner(b)))


def chunks(a):
    """a in pieces of about CHUNK_BYTES along its first axis: views, never copies."""
    rows = max(1, CHUNK_BYTES // max(1, a[:1].nbytes))
    for start in range(0, len(a), rows):
        yield a[start : start + rows]
