"""The training loop: shuffled minibatches, epochs, metrics, progress and callbacks.

The data goes to the device once. Each epoch shuffles it with a host RNG seeded
by (seed, epoch), so every device sees the same batches and a resumed run
draws the same order as an unbroken one. The loss is summed on the device and
read back once per epoch: no host sync inside an epoch.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy

from . import distributed as distributed_
from . import kernels
from .backend import all_finite, is_out_of_memory, to_numpy
from .callbacks import Callback, History, TrainState
from .errors import ArgumentError, ArgumentTypeError, OutOfMemory, TrainingDiverged
from .hostdata import Batches, HostData, contiguous_steps, is_memory_map, nbytes_text
from .optim import SGD, Optimizer


def accuracy_kind(net) -> str | None:
    """How a prediction counts as right, or None when accuracy has no meaning.

    "argmax": several softmax outputs, right when the largest is the target's class.
    "threshold": one sigmoid output, right on the same side of 0.5 as the target.
    """
    if net.sizes[-1] == 1 and net.output_activation.name == "sigmoid":
        return "threshold"
    if net.sizes[-1] > 1 and net.output_activation.name == "softmax":
        return "argmax"
    return None


def measure(net, output, Y, workspace, row_loss, row_correct) -> None:
    """Each row's loss into row_loss and, where accuracy has a meaning, 1 or 0 into row_correct.

    Nothing is summed here: fit and evaluate sum a whole pass at once, at its one host
    sync. One fused launch on the GPU; elsewhere it works in the workspace's arrays.
    """
    kind = accuracy_kind(net)
    if kernels.row_metrics(net.loss_fn, kind, output, Y, row_loss, row_correct):
        return
    xp, n, k = net.xp, len(output), net.sizes[-1]
    net.loss_fn.rows(output, Y, row_loss, workspace.scratch(n, k), workspace.scratch2(n, k))
    if kind is None:
        return
    guess, truth = workspace.indices(n)
    if kind == "argmax":
        guess = output.argmax(axis=1, out=guess)
        truth = Y.argmax(axis=1, out=truth)
    else:
        guess = xp.greater(output[:, 0], 0.5, out=guess)
        truth = xp.greater(Y[:, 0], 0.5, out=truth)
    xp.equal(guess, truth, out=row_correct)


def _summary(net, rows) -> dict:
    """The mean loss and accuracy of a pass from its (2, N) rows of losses and hits: the one host sync."""
    loss, correct = (float(v) for v in to_numpy(rows.sum(axis=1, dtype=numpy.float64)))
    n = rows.shape[1]
    return {"loss": loss / n, "accuracy": correct / n if accuracy_kind(net) is not None else None}


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)):
        raise ArgumentTypeError(f"{name} must be a whole number; got {value!r}")
    if value < 1:
        raise ArgumentError(f"{name} must be ≥ 1; got {value!r}")
    return int(value)


def evaluate(net, X, Y, batch_size: int = 4096, data_on_device: bool | None = None) -> dict:
    """The loss and accuracy of `net` on (X, Y), in batches, with one host sync at the end.

    data_on_device: as for fit; a memory map is read batch by batch unless it is True.
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    with net.device.activate():
        data = _data(net, X, Y, data_on_device, "the data (X and Y)", "evaluating")
        return _Evaluation(net, data, batch_size)()


class DeviceData:
    """X and Y copied to the device once, by net.inputs and net.targets: batches are gathered there."""

    def __init__(self, net, X, Y):
        self.net = net
        self.X = net.inputs(X)
        self.Y = net.targets(Y, len(self.X))

    def __len__(self) -> int:
        return len(self.X)

    @property
    def shape(self) -> tuple:
        return self.X.shape


class _DeviceBatches:
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
                yield done, _gather(xp, X, rows, self.X_batch[:m]), _gather(xp, Y, rows, self.Y_batch[:m])
            else:
                yield done, None, None


def batches(data, rows: int):
    """The batch maker for `data` (DeviceData or HostData), with buffers for up to `rows` rows."""
    return Batches(data, rows) if isinstance(data, HostData) else _DeviceBatches(data, rows)


def _data(net, X, Y, on_device: bool | None, what: str, doing: str, say=None):
    """(X, Y) as DeviceData, copied once, or HostData, read batch by batch: the choice `on_device` asks for.

    None chooses: a memory map stays on the host, as do data that the GPU has no room for.
    say(text), when given, hears which it chose, when the data stays on the host.
    """
    if on_device not in (None, True, False):
        raise ArgumentError(f"data_on_device must be True, False or None (choose); got {on_device!r}")
    why = None
    if on_device or (on_device is None and not is_memory_map(X)):
        try:
            with _copying(net, what, X, doing):
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


class _Evaluation:
    """evaluate() on DeviceData or HostData, with its buffers made once: fit's per-epoch validation."""

    def __init__(self, net, data, batch_size: int = 4096):
        self.net, self.data, self.batch_size = net, data, min(batch_size, len(data))
        with net.device.activate():
            self.workspace = net.workspace(self.batch_size, backward=False)
            self.batches = batches(data, self.batch_size)
            self.metrics = net.xp.zeros((2, len(data)), dtype=net.dtype)  # each row's loss, and 1 where it was right

    def __call__(self) -> dict:
        net, ws = self.net, self.workspace
        with net.device.activate():
            for done, xb, yb in self.batches(contiguous_steps(len(self.data), self.batch_size)):
                output = net.forward(xb, ws, validate=False).output
                measure(net, output, yb, ws, self.metrics[0, done], self.metrics[1, done])
            return _summary(net, self.metrics)


class _Progress:
    """Per-epoch progress: a tqdm bar on a terminal, else one plain line per epoch."""

    def __init__(self, mode, epochs: int, batches: int, stream):
        if mode is True:
            mode = "bar" if getattr(stream, "isatty", lambda: False)() else "lines"
        if mode not in (False, "bar", "lines"):
            raise ArgumentError(f"progress must be True, False, 'bar' or 'lines'; got {mode!r}")
        self.mode, self.epochs, self.batches, self.stream, self.bar = mode, epochs, batches, stream, None

    def epoch_begin(self, epoch: int) -> None:
        if self.mode == "bar":
            from tqdm.auto import tqdm

            width = len(str(self.epochs))
            desc = f"epoch {epoch:>{width}}/{self.epochs}"
            self.bar = tqdm(total=self.batches, desc=desc, unit="batch", leave=False, file=self.stream)

    def batch_done(self) -> None:
        if self.bar is not None:
            self.bar.update()

    def epoch_end(self, record: dict) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.mode:
            print(format_record(record, self.epochs), file=self.stream, flush=True)


def format_record(record: dict, epochs: int) -> str:
    """One epoch as a line: 'epoch  3/30  loss 0.1234  accuracy 96.50%  ...'."""
    parts = [f"epoch {record['epoch']:>{len(str(epochs))}}/{epochs}"]
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        value = record.get(name)
        if value is not None:
            parts.append(f"{name} {value:.2%}" if "accuracy" in name else f"{name} {value:.4f}")
    seconds = record["seconds"]
    parts.append(f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s")
    return "  ".join(parts)


def fit(
    net,
    X,
    Y,
    *,
    epochs: int,
    batch_size: int = 32,
    optimizer: Optimizer | None = None,
    validation_data=None,
    shuffle: bool = True,
    seed: int = 0,
    progress=True,
    callbacks=(),
    log=None,
    initial_epoch: int = 0,
    history: History | None = None,
    threads: int | None = None,
    distributed=False,
    timeout: float = distributed_.DEFAULT_TIMEOUT,
    data_on_device: bool | None = None,
) -> History:
    """Train `net` on (X, Y) by minibatch SGD; returns the History of every epoch.

    epochs is the epoch to stop after, counted from 1; initial_epoch > 0 resumes after
    that many (pass the loaded optimizer and history too). progress: True (a bar on a
    terminal, else lines), "bar", "lines" or False. log: a path; one JSON object per
    epoch is appended to it. threads: how many BLAS threads the CPU may use (default:
    what the BLAS picks). The default optimizer is SGD(net, lr=0.1).

    distributed: True (or "mpi", "nccl", or a communicator from gpubp.distributed)
    trains data-parallel across the processes
    that `mpiexec -n K` started: each rank takes its share of every global batch of
    `batch_size` rows, and the gradients are all-reduced; only rank 0 shows progress
    and writes the log. Every collective waits at most `timeout` seconds. Without a
    launcher it trains exactly as in one process.

    data_on_device: True copies X and Y to the device once (the fastest, when they fit);
    False keeps them on the host and copies each batch over, on a GPU while the previous
    batch computes; None (the default) chooses True, except for a memory map
    (numpy.load(path, mmap_mode="r")) and for data the GPU has no room for. The batches,
    and so the weights, are the same either way. With progress on, fit says when the data
    stays on the host.
    """
    epochs = _check_positive_int("epochs", epochs)
    batch_size = _check_positive_int("batch_size", batch_size)
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, int) or not 0 <= initial_epoch <= epochs:
        raise ArgumentError(f"initial_epoch must be a whole number from 0 to epochs={epochs}; got {initial_epoch!r}")
    optimizer = optimizer if optimizer is not None else SGD(net, lr=0.1)
    if not isinstance(optimizer, Optimizer):
        raise ArgumentTypeError(f"optimizer must be a gpubp.SGD, Adam or AdamW; got {optimizer!r}")
    if optimizer.net is not net:
        raise ArgumentError("optimizer was made for another network: pass SGD(net, ...) or Adam(net, ...) for this net")
    if threads is not None:
        threads = _check_positive_int("threads", threads)
    elif distributed is not False and distributed_.launched_size() > 1 and net.device.kind == "cpu":
        threads = distributed_.cpu_threads_per_rank()
    if log is not None and not Path(log).resolve().parent.is_dir():
        raise ArgumentError(f"log: the folder for {str(log)!r} does not exist")
    with net.device.activate(), _blas_threads(threads):
        comm = _communicator(net, distributed, timeout)
        loud = progress and comm.rank == 0  # one voice: rank 0's
        say = (lambda text: print(f"gpubp: {text}", file=sys.stderr, flush=True)) if loud else None
        data = _data(net, X, Y, data_on_device, "the training data (X and Y)", "copying", say)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ArgumentError("validation_data must be a pair (X_val, Y_val)")
            val_data = _data(net, *validation_data, data_on_device, "the validation data", "copying", say)
            val = _Evaluation(net, val_data)
        state = TrainState(net, optimizer, history if history is not None else History(), epochs=epochs, seed=seed)
        callbacks = list(callbacks)
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise ArgumentTypeError(f"callbacks must be gpubp.Callback objects; got {cb!r}")
        state.rank, state.comm = comm.rank, comm
        if comm.rank != 0:
            progress, log = False, None  # one voice: rank 0's
        try:
            loop = _EpochLoop(net, optimizer, data, batch_size, shuffle, seed, comm)
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            raise _out_of_memory(net, batch_size) from e
        _start_together(comm, net, optimizer, data)
        state.workspace = loop.workspace
        progress = _Progress(progress, epochs, loop.batches, sys.stderr)
        watchers = [cb for cb in callbacks if type(cb).on_step_end is not Callback.on_step_end]
        step_hook = None
        if watchers:

            def step_hook(trace, grads):
                for cb in watchers:
                    cb.on_step_end(state, trace, grads)

        for cb in callbacks:
            cb.on_train_begin(state)
        for epoch in range(initial_epoch + 1, epochs + 1):
            state.epoch = epoch
            for cb in callbacks:
                cb.on_epoch_begin(state)
            progress.epoch_begin(epoch)
            started = time.perf_counter()
            try:
                record = {"epoch": epoch, **loop.run(epoch, progress.batch_done, step_hook)}
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
                loop.restore()
                raise _out_of_memory(net, batch_size) from e
            if val is not None:
                with _copying(net, "the validation data", val.data, "evaluating"):
                    metrics = val()  # checked once, before the first epoch
                record |= {"val_loss": metrics["loss"], "val_accuracy": metrics["accuracy"]}
            record |= {"seconds": time.perf_counter() - started, "lr": optimizer.lr}
            for cb in callbacks:
                cb.on_epoch_record(state, record)
            state.history.append(record)
            if log is not None:
                with open(log, "a") as f:
                    f.write(json.dumps(record) + "\n")
            progress.epoch_end(record)
            for cb in callbacks:
                cb.on_epoch_end(state, record)
            if state.stop:
                break
        for cb in callbacks:
            cb.on_train_end(state)
        return state.history


def _communicator(net, distributed, timeout):
    if distributed is False:
        return distributed_.Single()
    if hasattr(distributed, "allreduce_sum"):  # a communicator made by the caller
        return distributed
    backend = "auto" if distributed is True else distributed
    return distributed_.communicator(net.device, backend=backend, timeout=timeout)


def _start_together(comm, net, optimizer, X) -> None:
    """Every rank starts from rank 0's weights and optimizer state, and must hold the same data."""
    if comm.size == 1:
        return
    shape = numpy.array([len(X), X.shape[1]], dtype=numpy.float64)
    theirs = comm.broadcast(shape.copy())
    if not numpy.array_equal(shape, theirs):
        raise ArgumentError(
            f"every rank must train on the same data: rank {comm.rank} has {int(shape[0])} rows of "
            f"{int(shape[1])} features, rank 0 has {int(theirs[0])} of {int(theirs[1])}"
        )
    comm.broadcast(net.params)
    for array in optimizer.state.values():  # SGD's velocity, Adam's moments
        comm.broadcast(array)


@contextlib.contextmanager
def _copying(net, what: str, X, doing: str = "copying"):
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


def _out_of_memory(net, batch_size: int) -> OutOfMemory:
    advice = f"try a smaller batch_size, such as {batch_size // 2}" if batch_size > 1 else "try a smaller network"
    return OutOfMemory(
        f"{net.device} ran out of memory training {net} at batch_size={batch_size}; {advice}. "
        "The weights are those from the start of the epoch that failed."
    )


def _blas_threads(threads: int | None):
    """Pin the BLAS to `threads` threads for the run (threadpoolctl), or leave it alone."""
    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


def _diverged_message(epoch: int, step: int | None, loss: float, lr: float) -> str:
    where = f"at step {step} of epoch {epoch}" if step is not None else f"in the last step of epoch {epoch}"
    return (
        f"training diverged {where}: the loss became {loss} (lr={lr:g}). The net holds the weights "
        f"from the start of epoch {epoch}, so nothing before it is lost. Try a lower learning rate."
    )


def _gather(xp, source, rows, out):
    """out = source[rows], written in place."""
    if xp is numpy:  # mode="clip": with the default, NumPy copies through a temporary as large as out
        return numpy.take(source, rows, axis=0, out=out, mode="clip")
    return xp.take(source, rows, axis=0, out=out)


class _EpochLoop:
    """One epoch of minibatch steps over DeviceData or HostData.

    Everything a step writes (the batch, every z, a and delta, the gradients, the
    optimizer's work array) is made here, once, so an epoch allocates nothing.
    """

    def __init__(self, net, optimizer, data, batch_size, shuffle, seed, comm):
        xp = net.xp
        self.net, self.optimizer, self.data, self.comm = net, optimizer, data, comm
        self.batch_size, self.shuffle, self.seed = min(batch_size, len(data)), shuffle, seed
        self.batches = math.ceil(len(data) / self.batch_size)
        self.workspace = net.workspace(self.batch_size)
        self.grads = net.new_grads()
        self.make_batches = batches(data, self.batch_size)
        self.last_good = xp.empty_like(net.params)  # the state at the start of the epoch, to fall back on
        self.last_state = {name: xp.empty_like(array) for name, array in optimizer.state.items()}
        self.last_steps = optimizer.steps
        self.metrics = xp.zeros(
            (2, len(data)), dtype=net.dtype
        )  # each row's loss, and 1 where it was right, in epoch order
        self.rows = numpy.arange(len(data))  # 0 … N−1, for each epoch's shuffle to start from
        self.order_host = numpy.empty_like(self.rows)
        on_host = net.device.kind == "cpu" or isinstance(data, HostData)  # where the batches' rows are read
        self.order = self.order_host if on_host else xp.empty(len(data), dtype=self.rows.dtype)

    def run(self, epoch: int, batch_done, step_hook=None) -> dict:
        """Train one epoch; the loss and accuracy come back in the one host sync of the epoch."""
        net, n = self.net, len(self.data)
        self.last_good[...] = net.params
        for name, array in self.optimizer.state.items():
            self.last_state[name][...] = array
        self.last_steps = self.optimizer.steps
        # The batch order comes from a host RNG, so every device sees the same batches.
        self.order_host[...] = self.rows
        if self.shuffle:
            numpy.random.default_rng([self.seed, epoch]).shuffle(self.order_host)  # = permutation(n), in place
        if self.order is not self.order_host:
            self.order.set(self.order_host)  # one copy to the GPU per epoch
        self.metrics[...] = 0  # each rank writes only its own share of each batch
        for done, xb, yb in self.make_batches(self._steps(n)):
            if xb is not None:
                trace = net.forward(xb, self.workspace, validate=False)  # fit checked all of X once
                measure(net, trace.output, yb, self.workspace, self.metrics[0, done], self.metrics[1, done])
                net.backward(trace, yb, out=self.grads, workspace=self.workspace, validate=False)
            else:  # a last batch with fewer rows than ranks: nothing here to learn from
                self.grads.flat[...] = 0
            if self.comm.size > 1:
                # Each rank's gradient is the mean over its rows; weighted by its share and summed,
                # they give the mean over the whole global batch, even when the shares differ.
                start = done.start // self.batch_size * self.batch_size  # where the global batch starts
                self.grads.flat *= (done.stop - done.start) / min(self.batch_size, n - start)
                self.comm.allreduce_sum(self.grads.flat)
            if step_hook is not None:  # a LayerMonitor, say: it sees this step's trace and gradients
                step_hook(trace if xb is not None else None, self.grads)
            self.optimizer.step(self.grads)
            batch_done()
        if self.comm.size > 1:
            self.comm.allreduce_sum(self.metrics)
        # The one host sync of the epoch: the loss, and whether every weight is still a number.
        summary = _summary(net, self.metrics)
        if not math.isfinite(summary["loss"]) or not all_finite(net.xp, net.params):
            self._diverged(epoch, summary["loss"])
        return summary

    def _steps(self, n: int):
        """(done, rows) for each step: where this rank's rows sit in the epoch's order, and which rows they are."""
        for start in range(0, n, self.batch_size):
            low, high = self._shard(min(self.batch_size, n - start))
            yield slice(start + low, start + high), self.order[start + low : start + high]

    def _shard(self, m: int) -> tuple[int, int]:
        """Where this rank's contiguous share of a global batch of m rows starts and ends: all of it alone."""
        size, rank = self.comm.size, self.comm.rank
        return (m * rank) // size, (m * (rank + 1)) // size

    def restore(self):
        """Put back the weights and the optimizer's state from the start of the epoch."""
        self.net.params[...] = self.last_good
        for name, array in self.optimizer.state.items():
            array[...] = self.last_state[name]
        self.optimizer.steps = self.last_steps

    def _diverged(self, epoch: int, loss: float):
        """Put back the state from the start of the epoch, and say where it went wrong."""
        self.restore()
        losses = to_numpy(self.metrics[0])  # in the epoch's order: row r was in step r // batch_size
        bad = numpy.flatnonzero(~numpy.isfinite(losses))
        if len(bad):
            step, value = int(bad[0]) // self.batch_size + 1, float(losses[bad[0]])  # steps counted from 1
        else:
            step, value = None, loss  # every batch's loss was finite: the last update broke the weights
        raise TrainingDiverged(_diverged_message(epoch, step, value, self.optimizer.lr))
