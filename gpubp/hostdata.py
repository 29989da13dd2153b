"""Data that stays on the host and goes to the device one batch at a time.

fit and evaluate copy X and Y to the device once when they are plain arrays that
fit there. A memory map (numpy.load(path, mmap_mode="r")), or a data set too big
for the GPU, stays where it is instead:

- HostData checks it chunk by chunk: no temporary as large as the data.
- Each step gathers its batch's rows from it into a small host buffer (pinned
  on a GPU), copies them to the device (on a GPU, on a second stream while the
  previous batch computes: double buffering), then converts them to the net's
  dtype there, class labels to one-hot rows.

The batches hold the same numbers as those gathered from data on the device, so
the trained weights are the same too. On the CPU the same steps run with NumPy
arrays standing in for the device's buffers, which is how CI covers the logic.
"""

from __future__ import annotations

import numpy

from .backend import all_finite, storable_dtype
from .errors import ArgumentError, ArgumentTypeError, ShapeError

CHUNK_BYTES = 1 << 20  # the checks read X and Y in pieces of about this many bytes


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


def nbytes_text(n: int) -> str:
    """A size for people: '512 kB', '1.2 GB'."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


class HostData:
    """X and Y (or class labels) as given, on the host, checked as net.inputs and net.targets check them."""

    def __init__(self, net, X, Y):
        self.net = net
        self.X = _host_array(X, "X")
        n_in, k = net.sizes[0], net.sizes[-1]
        if self.X.ndim != 2 or self.X.shape[1] != n_in:
            raise ShapeError(f"X must have shape (N, {n_in}) for this net; got {tuple(self.X.shape)}")
        if len(self.X) == 0:
            raise ShapeError(f"X must have at least one row; got shape {tuple(self.X.shape)}")
        _check_finite(self.X, "X", net.dtype)
        n = len(self.X)
        Y = _host_array(Y, "Y")
        self.labels = Y.ndim == 1 and net.loss_fn.name == "cross_entropy"
        if self.labels:
            if Y.shape != (n,):
                raise ShapeError(f"class labels Y must have shape ({n},) to match the rows of X; got {tuple(Y.shape)}")
            if Y.dtype.kind not in "iu":
                raise ArgumentTypeError(f"class labels Y must be integers in [0, {k}); got dtype {Y.dtype}")
            low, high = _range(Y)
            if low < 0 or high >= k:
                raise ArgumentError(
                    f"class labels Y must lie in [0, {k}) for {k} outputs; got values from {low} to {high}"
                )
        else:
            Y = net.target_rows(Y, n)
            _check_finite(Y, "Y", net.dtype)
        self.Y = Y

    def __len__(self) -> int:
        return len(self.X)

    @property
    def shape(self) -> tuple:
        return self.X.shape

    @property
    def nbytes(self) -> int:
        return self.X.nbytes + self.Y.nbytes


class Batches:
    """Batches of a HostData on the net's device, with every buffer made once for batches of up to `rows`.

    Two slots, each a host buffer and a device buffer for X and for Y: while the
    device computes on the batch in one slot, the next batch is gathered and
    copied into the other. A slot is written again only after the device is done
    with what it held (the events `used`) and its last copy has left the host
    buffer (the events `copied`). With NumPy standing in, the events are absent
    and every copy is done when it returns.
    """

    def __init__(self, data: HostData, rows: int):
        net = self.net = data.net
        xp, k = net.xp, net.sizes[-1]
        self.data, self.gpu = data, net.device.kind != "cpu"
        y_shape = (rows,) if data.labels else (rows, k)
        with net.device.activate():
            host = self._pinned if self.gpu else numpy.empty
            x_dtype, y_dtype = (storable_dtype(a.dtype, net.device) for a in (data.X, data.Y))
            self.host = [(host((rows, data.X.shape[1]), x_dtype), host(y_shape, y_dtype)) for _ in "ab"]
            self.device = [(xp.empty(x.shape, x.dtype), xp.empty(y.shape, y.dtype)) for x, y in self.host]
            self.X_batch = xp.empty((rows, data.X.shape[1]), dtype=net.dtype)
            self.Y_batch = xp.empty((rows, k), dtype=net.dtype)
            if data.labels:
                self.classes = xp.arange(k)
                self.hits = xp.empty((rows, k), dtype=bool)
            if self.gpu:
                self.stream = xp.cuda.Stream(non_blocking=True)  # the copies' own stream
                self.copied = [xp.cuda.Event(block=True, disable_timing=True) for _ in "ab"]  # the host sleeps on these
                self.used = [xp.cuda.Event(disable_timing=True) for _ in "ab"]

    def _pinned(self, shape, dtype):
        """A NumPy array in page-locked host memory, which the GPU can copy from while the host works on."""
        dtype = numpy.dtype(dtype)
        memory = self.net.xp.cuda.alloc_pinned_memory(max(1, int(numpy.prod(shape)) * dtype.itemsize))
        return numpy.ndarray(shape, dtype=dtype, buffer=memory)

    def __call__(self, steps):
        """For each (done, rows) of `steps`: (done, X_batch, Y_batch) on the device, or (done, None, None)
        where rows is empty. rows: host indices into the data, or a slice of it."""
        try:
            yield from self._batches(iter(steps))
        finally:  # a pass left early: no copy may still be writing the buffers when they are freed
            if self.gpu:
                self.stream.synchronize()

    def _batches(self, steps):
        step = next(steps, None)
        slot = 0
        if step is not None:
            self._send(slot, step[1])
        while step is not None:
            done, rows = step
            m = _count(rows)
            following = next(steps, None)
            if m == 0:  # nothing was sent, so the slot stays free for the next batch
                yield done, None, None
            else:
                x, y = self._receive(slot, m)
                yield done, x, y
                if self.gpu:  # the device may reuse this slot once the step just queued has run
                    self.used[slot].record(self.net.xp.cuda.get_current_stream())
                slot = 1 - slot
            if following is not None:
                self._send(slot, following[1])  # the host works on the next batch while the device computes
            step = following

    def _send(self, slot: int, rows) -> None:
        """Gather the rows into this slot's host buffer and start their copy into its device buffer."""
        m = _count(rows)
        if m == 0:
            return
        (hx, hy), (dx, dy) = self.host[slot], self.device[slot]
        if self.gpu:
            self.copied[slot].synchronize()  # the copy that last read this host buffer is done
        _read(self.data.X, rows, hx[:m])
        _read(self.data.Y, rows, hy[:m])
        if self.gpu:
            self.stream.wait_event(self.used[slot])  # the device is done with this slot's last batch
            dx[:m].set(hx[:m], stream=self.stream)
            dy[:m].set(hy[:m], stream=self.stream)
            self.copied[slot].record(self.stream)
        else:
            dx[:m] = hx[:m]
            dy[:m] = hy[:m]

    def _receive(self, slot: int, m: int):
        """The slot's batch in the net's dtype, converted on the compute stream once its copy is in."""
        xp = self.net.xp
        dx, dy = self.device[slot]
        if self.gpu:
            xp.cuda.get_current_stream().wait_event(self.copied[slot])
        x, y = self.X_batch[:m], self.Y_batch[:m]
        x[...] = dx[:m]
        if self.data.labels:  # one-hot rows: 1 in the label's column
            hits = xp.equal(dy[:m, None], self.classes[None, :], out=self.hits[:m])
            y[...] = hits
        else:
            y[...] = dy[:m]
        return x, y


def contiguous_steps(n: int, batch_size: int):
    """(done, rows) for a pass over n rows in order, each rows a slice: evaluate's and predict's steps."""
    return ((slice(start, min(start + batch_size, n)),) * 2 for start in range(0, n, batch_size))


def _count(rows) -> int:
    return rows.stop - rows.start if isinstance(rows, slice) else len(rows)


def _read(source, rows, out) -> None:
    """out = source[rows]: a slice is read straight through, index arrays row by row."""
    if isinstance(rows, slice) or isinstance(source, RowView):
        out[...] = source[rows]
    else:  # mode="clip": with the default, NumPy copies through a temporary as large as out
        numpy.take(source, rows, axis=0, out=out, mode="clip")


def _host_array(x, name: str):
    """x as a NumPy array (a memory map stays one), or a clear error."""
    if hasattr(x, "__cuda_array_interface__"):
        raise ArgumentTypeError(
            f"{name} is on a GPU; data_on_device=False keeps data on the host: pass a NumPy array or memory map"
        )
    if not isinstance(x, (numpy.ndarray, RowView)):
        try:
            x = numpy.asarray(x)
        except (ValueError, TypeError) as e:
            raise ArgumentTypeError(f"{name} must be an array of numbers; NumPy could not make one ({e})") from None
    if x.dtype.kind not in "fiub":
        raise ArgumentTypeError(f"{name} must hold numbers (float, int or bool); got dtype {x.dtype}")
    return x


def _chunks(a):
    """a in pieces of about CHUNK_BYTES along its first axis: views, never copies."""
    rows = max(1, CHUNK_BYTES // max(1, a[:1].nbytes))
    for start in range(0, len(a), rows):
        yield a[start : start + rows]


def _check_finite(a, name: str, dtype) -> None:
    """all_finite over each chunk, as the net's `dtype` will hold it: a float64 1e39 is inf in float32.
    Two reductions a chunk, and a copy of the chunk where the dtype narrows."""
    if a.dtype.kind != "f":
        return  # integers and booleans are always numbers
    narrows = numpy.finfo(a.dtype).max > numpy.finfo(dtype).max
    for chunk in _chunks(a):
        if narrows:
            with numpy.errstate(over="ignore"):  # an overflow is reported below, in words
                chunk = chunk.astype(dtype)
        if not all_finite(numpy, chunk):
            too_large = f", or numbers too large for the net's {numpy.dtype(dtype).name}" if narrows else ""
            raise ArgumentError(f"{name} holds NaN or infinite values{too_large}; remove or impute them first")


def _range(labels) -> tuple[int, int]:
    low = high = None
    for chunk in _chunks(labels):
        a, b = int(chunk.min()), int(chunk.max())
        low, high = (a, b) if low is None else (min(low, a), max(high, b))
    return low, high
