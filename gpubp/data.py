"""Where the rows live and how a batch is made: X and Y placed on the device once, or kept on the host.

fit and evaluate copy X and Y to the device once when they are plain arrays that
fit there (DeviceData). A memory map (numpy.load(path, mmap_mode="r")), or a data
set too big for the GPU, stays where it is instead (HostData):

- HostData checks it chunk by chunk: no temporary as large as the data.
- Each step gathers its batch's rows from it into a small host buffer (pinned
  on a GPU), copies them to the device (on a GPU, on a second stream while the
  previous batch computes: double buffering), then converts them to the net's
  dtype there, class labels to one-hot rows.

Both are checked by the net's own shape and label checks, and their batches hold
the same numbers, so the trained weights are the same either way. On the CPU the
host path runs with NumPy arrays standing in for the device's buffers, which is
how CI covers its logic.

    place(net, X, Y, on_device, what)   DeviceData or HostData: the choice data_on_device asks for
    batches(data, rows)                 the batch maker: (done, rows) steps in, (done, X_batch, Y_batch) out
    contiguous_steps(n, batch_size)     the steps of a pass in order (evaluate, predict)
    gather(xp, source, rows, out)       out = source[rows], written in place
"""

from __future__ import annotations

import contextlib

import numpy

from .backend import all_finite, is_out_of_memory, storable_dtype
from .errors import ArgumentError, ArgumentTypeError, OutOfMemory, not_finite
from .rows import RowView, chunks, is_memory_map


def place(net, X, Y, on_device: bool | None, what: str, doing: str = "copying", say=None):
    """(X, Y) as DeviceData, copied once, or HostData, read batch by batch: the choice `on_device` asks for.

    None chooses: a memory map stays on the host, as do data that the GPU has no room for.
    say(text), when given, hears which it chose, when the data stays on the host.
    """
    if on_device not in (None, True, False):
        raise ArgumentError(f"data_on_device must be True, False or None (choose); got {on_device!r}")
    why = None
    if on_device or (on_device is None and not is_memory_map(X)):
        try:
            with copying(net, what, X, doing):
                return DeviceData(net, X, Y)
        except OutOfMemory:
            if on_device or net.device.kind == "cpu":
                raise
            why = f"it does not fit in {net.device}'s memory"
    data = HostData(net, X, Y)
    if say is not None:
        why = why or ("it is a memory map" if is_memory_map(X) else "data_on_device=False")
        where = "copied to the device" if net.device.kind != "cpu" else "read from it"
        say(f"{what} ({nbytes_text(data.nbytes)}) stays on the host, since {why}: each batch is {where} in turn")
    return data


class DeviceData:
    """X and Y copied to the device once, by net.inputs and net.targets: batches are gathered there."""

    on_device = True

    def __init__(self, net, X, Y):
        self.net = net
        self.X = net.inputs(X)
        self.Y = net.targets(Y, len(self.X))

    def __len__(self) -> int:
        return len(self.X)

    @property
    def shape(self) -> tuple:
        return self.X.shape


class HostData:
    """X and Y (or class labels) as given, on the host, checked as net.inputs and net.targets check them."""

    on_device = False

    def __init__(self, net, X, Y):
        self.net = net
        self.X = _host_array(X, "X")
        net.check_input_shape(self.X.shape)
        _check_finite(self.X, "X", net.dtype)
        n = len(self.X)
        Y = _host_array(Y, "Y")
        self.labels = Y.ndim == 1 and net.loss_fn.name == "cross_entropy"
        if self.labels:
            net.check_labels(Y, n, lambda: _range(Y))
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


def batches(data, rows: int):
    """The batch maker for `data` (DeviceData or HostData), with buffers for up to `rows` rows."""
    return HostBatches(data, rows) if isinstance(data, HostData) else DeviceBatches(data, rows)


class DeviceBatches:
    """DeviceData's batches: a slice is a view, index rows are gathered into buffers made once."""

    def __init__(self, data: DeviceData, rows: int):
        xp = data.net.xp
        self.data = data
        self.X_batch = xp.empty((rows, data.X.shape[1]), dtype=data.X.dtype)
        self.Y_batch = xp.empty((rows, data.Y.shape[1]), dtype=data.Y.dtype)

    def __call__(self, steps):
        xp, X, Y = self.data.net.xp, self.data.X, self.data.Y
        for done, rows in steps:
            if isinstance(rows, slice):
                yield done, X[rows], Y[rows]
            elif len(rows):
                m = len(rows)
                yield done, gather(xp, X, rows, self.X_batch[:m]), gather(xp, Y, rows, self.Y_batch[:m])
            else:
                yield done, None, None


class HostBatches:
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


def gather(xp, source, rows, out):
    """out = source[rows], written in place."""
    if xp is numpy:  # mode="clip": with the default, NumPy copies through a temporary as large as out
        return numpy.take(source, rows, axis=0, out=out, mode="clip")
    return xp.take(source, rows, axis=0, out=out)


@contextlib.contextmanager
def copying(net, what: str, X, doing: str = "copying"):
    """Running out of memory while `what` moves to the device (or is evaluated there) is an OutOfMemory saying so."""
    try:
        yield
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        shape = getattr(X, "shape", None)
        size = f" of shape {tuple(shape)}" if shape is not None else ""
        raise OutOfMemory(
            f"{net.device} ran out of memory {doing} {what}{size} as {net.dtype.name}. Pass "
            "data_on_device=False to keep the data on the host and copy one batch at a time (gpubp train: "
            "save X and y as .npy files), or use fewer rows or a float32 net."
        ) from e


def nbytes_text(n: int) -> str:
    """A size for people: '512 kB', '1.2 GB'."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _check_finite(a, name: str, dtype) -> None:
    """all_finite over each chunk, as the net's `dtype` will hold it: a float64 1e39 is inf in float32.
    Two reductions a chunk, and a copy of the chunk where the dtype narrows."""
    if a.dtype.kind != "f":
        return  # integers and booleans are always numbers
    narrows = numpy.finfo(a.dtype).max > numpy.finfo(dtype).max
    for chunk in chunks(a):
        if narrows:
            with numpy.errstate(over="ignore"):  # an overflow is reported below, in words
                chunk = chunk.astype(dtype)
        if not all_finite(numpy, chunk):
            raise not_finite(name, f", or numbers too large for the net's {numpy.dtype(dtype).name}" if narrows else "")


def _range(labels) -> tuple[int, int]:
    low = high = None
    for chunk in chunks(labels):
        a, b = int(chunk.min()), int(chunk.max())
        low, high = (a, b) if low is None else (min(low, a), max(high, b))
    return low, high
