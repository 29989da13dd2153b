"""The training loop: shuffled minibatches, epochs, metrics, progress and callbacks.

The data goes to the device once (or stays on the host and goes batch by batch:
see data.py). Each epoch shuffles it with a host RNG seeded by (seed, epoch), so
every device sees the same batches and a resumed run draws the same order as an
unbroken one. The loss is summed on the device and read back once per epoch: no
host sync inside an epoch.
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
from .data import batches, contiguous_steps, copying, place
from .errors import ArgumentError, ArgumentTypeError, OutOfMemory, TrainingDiverged, check_whole
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


def evaluate(net, X, Y, batch_size: int = 4096, data_on_device: bool | None = None) -> dict:
    """The loss and accuracy of `net` on (X, Y), in batches, with one host sync at the end.

    data_on_device: as for fit; a memory map is read batch by batch unless it is True.
    """
    batch_size = check_whole("batch_size", batch_size, 1)
    with net.device.activate():
        data = place(net, X, Y, data_on_device, "the data (X and Y)", "evaluating")
        return _Evaluation(net, data, "the data (X and Y)", batch_size)()


class _Evaluation:
    """evaluate() on DeviceData or HostData, with its buffers made once: fit's per-epoch validation."""

    def __init__(self, net, data, what: str, batch_size: int = 4096):
        self.net, self.data, self.what, self.batch_size = net, data, what, min(batch_size, len(data))
        with net.device.activate():
            self.workspace = net.workspace(self.batch_size, backward=False)
            self.batches = batches(data, self.batch_size)
            self.metrics = net.xp.zeros((2, len(data)), dtype=net.dtype)  # each row's loss, and 1 where it was right

    def __call__(self) -> dict:
        net, ws = self.net, self.workspace
        with net.device.activate(), copying(net, self.what, self.data, "evaluating"):
            for done, xb, yb in self.batches(contiguous_steps(len(self.data), self.batch_size)):
                output = net.forward(xb, ws, validate=False).output
                measure(net, output, yb, ws, self.metrics[0, done], self.metrics[1, done])
            return _summary(net, self.metrics)

    def record(self) -> dict:
        """The validation columns of an epoch's record."""
        metrics = self()
        return {"val_loss": metrics["loss"], "val_accuracy": metrics["accuracy"]}


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


class _Lines(Callback):
    """Progress as one plain line per epoch, on rank 0."""

    def __init__(self, epochs: int, stream):
        self.epochs, self.stream = epochs, stream

    def on_epoch_end(self, state, record):
        print(format_record(record, self.epochs), file=self.stream, flush=True)


class _Bar(_Lines):
    """Progress as a tqdm bar of the epoch's steps, then the epoch's line."""

    def __init__(self, epochs: int, steps: int, stream):
        super().__init__(epochs, stream)
        self.steps, self.bar = steps, None

    def on_epoch_begin(self, state):
        from tqdm.auto import tqdm

        desc = f"epoch {state.epoch:>{len(str(self.epochs))}}/{self.epochs}"
        self.bar = tqdm(total=self.steps, desc=desc, unit="batch", leave=False, file=self.stream)

    def on_step_end(self, state, trace, grads):
        self.bar.update()

    def on_epoch_end(self, state, record):
        self.bar.close()
        super().on_epoch_end(state, record)


class _Log(Callback):
    """One JSON object per epoch, appended to the file at `path`, on rank 0."""

    def __init__(self, path):
        self.path = path

    def on_epoch_end(self, state, record):
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _reporters(progress, log, rank: int, epochs: int, steps: int) -> list[Callback]:
    """The callbacks fit adds in front of the caller's: the log, then the progress. Rank 0's alone."""
    if rank != 0:
        return []
    if progress is True:
        progress = "bar" if getattr(sys.stderr, "isatty", lambda: False)() else "lines"
    reporters = [_Log(log)] if log is not None else []
    if progress == "bar":
        reporters.append(_Bar(epochs, steps, sys.stderr))
    elif progress == "lines":
        reporters.append(_Lines(epochs, sys.stderr))
    return reporters


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
    epochs, batch_size, optimizer, callbacks, threads = _checked(
        net, epochs, batch_size, optimizer, progress, callbacks, log, initial_epoch, threads, distributed
    )
    with net.device.activate(), _blas_threads(threads):
        comm = _communicator(net, distributed, timeout)
        say = _voice(progress and comm.rank == 0)
        data = place(net, X, Y, data_on_device, "the training data (X and Y)", say=say)
        validation = _validation(net, validation_data, data_on_device, say)
        state = TrainState(net, optimizer, history if history is not None else History(), epochs=epochs, seed=seed)
        state.rank, state.comm, state.batch_size = comm.rank, comm, min(batch_size, len(data))
        with _out_of_memory_names_the_batch_size(net, batch_size):
            loop = _EpochLoop(net, optimizer, data, batch_size, shuffle, seed, comm)
            _start_together(comm, net, optimizer, data)
            callbacks = [*_reporters(progress, log, comm.rank, epochs, loop.steps), *callbacks]
            step_hook = _step_hook(callbacks, state)
            for cb in callbacks:
                cb.on_train_begin(state)
            for epoch in range(initial_epoch + 1, epochs + 1):
                state.epoch = epoch
                for cb in callbacks:
                    cb.on_epoch_begin(state)
                started = time.perf_counter()
                record = {"epoch": epoch, **loop.run(epoch, step_hook)}
                if validation is not None:
                    record |= validation.record()
                record |= {"seconds": time.perf_counter() - started, "lr": optimizer.lr}
                for cb in callbacks:
                    cb.on_epoch_record(state, record)
                state.history.append(record)
                for cb in callbacks:
                    cb.on_epoch_end(state, record)
                if state.stop:
                    break
            for cb in callbacks:
                cb.on_train_end(state)
        return state.history


def _checked(net, epochs, batch_size, optimizer, progress, callbacks, log, initial_epoch, threads, distributed):
    """fit's arguments checked, before anything is made: (epochs, batch_size, optimizer, callbacks, threads)."""
    epochs = check_whole("epochs", epochs, 1)
    batch_size = check_whole("batch_size", batch_size, 1)
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, int) or not 0 <= initial_epoch <= epochs:
        raise ArgumentError(f"initial_epoch must be a whole number from 0 to epochs={epochs}; got {initial_epoch!r}")
    optimizer = optimizer if optimizer is not None else SGD(net, lr=0.1)
    if not isinstance(optimizer, Optimizer):
        raise ArgumentTypeError(f"optimizer must be a gpubp.SGD, Adam or AdamW; got {optimizer!r}")
    if optimizer.net is not net:
        raise ArgumentError("optimizer was made for another network: pass SGD(net, ...) or Adam(net, ...) for this net")
    if progress not in (True, False, "bar", "lines"):
        raise ArgumentError(f"progress must be True, False, 'bar' or 'lines'; got {progress!r}")
    callbacks = list(callbacks)
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise ArgumentTypeError(f"callbacks must be gpubp.Callback objects; got {cb!r}")
    if threads is not None:
        threads = check_whole("threads", threads, 1)
    elif distributed is not False and distributed_.launched_size() > 1 and net.device.kind == "cpu":
        threads = distributed_.cpu_threads_per_rank()
    if log is not None and not Path(log).resolve().parent.is_dir():
        raise ArgumentError(f"log: the folder for {str(log)!r} does not exist")
    return epochs, batch_size, optimizer, callbacks, threads


def _voice(loud: bool):
    """say(text) for the messages fit prints about the data, on rank 0 when progress is on; else None."""
    return (lambda text: print(f"gpubp: {text}", file=sys.stderr, flush=True)) if loud else None


def _validation(net, validation_data, data_on_device, say):
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ArgumentError("validation_data must be a pair (X_val, Y_val)")
    what = "the validation data"
    return _Evaluation(net, place(net, *validation_data, data_on_device, what, say=say), what)


def _step_hook(callbacks, state):
    """hook(trace, grads) calling every callback that watches the steps, or None when none does."""
    watchers = [cb for cb in callbacks if type(cb).on_step_end is not Callback.on_step_end]
    if not watchers:
        return None

    def hook(trace, grads):
        for cb in watchers:
            cb.on_step_end(state, trace, grads)

    return hook


def _communicator(net, distributed, timeout):
    if distributed is False:
        return distributed_.Single()
    if hasattr(distributed, "allreduce_mean"):  # a communicator made by the caller (gpubp.distributed's)
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
def _out_of_memory_names_the_batch_size(net, batch_size: int):
    """Running out of memory while training is an OutOfMemory that says what to change."""
    try:
        yield
    except OutOfMemory:
        raise  # already says what ran out: the data's copy, or an evaluation
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        advice = f"try a smaller batch_size, such as {batch_size // 2}" if batch_size > 1 else "try a smaller network"
        raise OutOfMemory(
            f"{net.device} ran out of memory training {net} at batch_size={batch_size}; {advice}. "
            "The weights are those from the start of the epoch that failed."
        ) from e


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


class _EpochLoop:
    """One epoch of minibatch steps over DeviceData or HostData.

    Everything a step writes (the batch, every z, a and delta, the gradients, the
    optimizer's work array) is made here, once, so an epoch allocates nothing.
    """

    def __init__(self, net, optimizer, data, batch_size, shuffle, seed, comm):
        xp = net.xp
        self.net, self.optimizer, self.data, self.comm = net, optimizer, data, comm
        self.batch_size, self.shuffle, self.seed = min(batch_size, len(data)), shuffle, seed
        self.steps = math.ceil(len(data) / self.batch_size)
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
        on_host = net.device.kind == "cpu" or not data.on_device  # where the batches' rows are read
        self.order = self.order_host if on_host else xp.empty(len(data), dtype=self.rows.dtype)

    def run(self, epoch: int, step_hook=None) -> dict:
        """Train one epoch; the loss and accuracy come back in the one host sync of the epoch.
        Running out of memory puts back the state from the start of the epoch."""
        try:
            return self._run(epoch, step_hook)
        except Exception as e:
            if is_out_of_memory(e):
                self.restore()
            raise

    def _run(self, epoch: int, step_hook) -> dict:
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
            start = done.start // self.batch_size * self.batch_size  # where the global batch starts
            self.comm.allreduce_mean(self.grads.flat, done.stop - done.start, min(self.batch_size, n - start))
            if step_hook is not None:  # a LayerMonitor, say: it sees this step's trace and gradients
                step_hook(trace if xb is not None else None, self.grads)
            self.optimizer.step(self.grads)
        self.comm.allreduce_sum(self.metrics)  # every rank's rows (one process: as they are)
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
