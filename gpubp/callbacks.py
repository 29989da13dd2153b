"""What fit reports and what can hook into it: the History, the callbacks, the schedules.

A callback sees the TrainState at the start and end of training and of every
epoch, and may change the optimizer's learning rate or stop the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import checkpoint
from .errors import ArgumentError, check_whole
from .optim import Optimizer

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "seconds", "lr")


@dataclass
class History:
    """Per-epoch metrics: `history.loss[i]` is the training loss of epoch `history.epoch[i]`.

    accuracy is None for regression; the val_ columns are None without validation data.
    """

    epoch: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    layers: list = field(default_factory=list)  # per epoch: LayerMonitor's list of per-layer dicts, or None

    def append(self, record: dict) -> None:
        self.epoch.append(record["epoch"])
        for name in (*METRICS, "layers"):
            getattr(self, name).append(record.get(name))

    def records(self) -> list[dict]:
        """One dict per epoch, as written to a --log file."""
        records = []
        for i, e in enumerate(self.epoch):
            record = {"epoch": e, **{m: getattr(self, m)[i] for m in METRICS}}
            if i < len(self.layers) and self.layers[i] is not None:
                record["layers"] = self.layers[i]
            records.append(record)
        return records

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, **{m: getattr(self, m) for m in (*METRICS, "layers")}}

    @classmethod
    def from_dict(cls, data: dict) -> History:
        history = cls(**{k: list(data.get(k, [])) for k in ("epoch", *METRICS, "layers")})
        history.layers += [None] * (len(history.epoch) - len(history.layers))  # from a run without a monitor
        return history

    def __len__(self) -> int:
        return len(self.epoch)


@dataclass
class TrainState:
    """What callbacks see and may change: set `stop = True` to end training after this epoch."""

    net: object
    optimizer: Optimizer
    history: History
    epoch: int = 0  # the epoch in progress, counted from 1
    epochs: int = 0
    seed: int = 0  # epoch e shuffles with numpy.random.default_rng([seed, e])
    rank: int = 0  # this process's rank in distributed training; 0 alone saves and reports
    comm: object = None  # the communicator of distributed training (gpubp.distributed); None before fit sets it
    batch_size: int = 0  # the most rows a step has (the batch, or all the rows when there are fewer)
    stop: bool = False


class Callback:
    """Hooks called by fit; override the ones you need."""

    def on_train_begin(self, state: TrainState) -> None: ...

    def on_epoch_begin(self, state: TrainState) -> None: ...

    def on_step_end(self, state: TrainState, trace, grads) -> None:
        """After each step's backward pass (and all-reduce), before the update: the step's Trace
        (None on a rank with no rows in the step) and Grads. Only callbacks that override it are called."""

    def on_epoch_record(self, state: TrainState, record: dict) -> None:
        """Add numbers of your own to the epoch's record, before it goes to the History and the log."""

    def on_epoch_end(self, state: TrainState, record: dict) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...


class EarlyStopping(Callback):
    """Stop when the validation loss has not improved by `min_delta` for `patience` epochs,
    and put back the weights of the best epoch."""

    def __init__(self, patience: int = 5, min_delta: float = 0.0, restore_best: bool = True):
        self.patience = check_whole("patience", patience, 1)
        self.min_delta, self.restore_best = float(min_delta), restore_best
        self.best, self.best_epoch, self.best_params, self.waited = math.inf, 0, None, 0

    def on_epoch_end(self, state, record):
        if record.get("val_loss") is None:
            raise ArgumentError("EarlyStopping watches the validation loss: pass validation_data to fit")
        if record["val_loss"] < self.best - self.min_delta:
            self.best, self.best_epoch, self.waited = record["val_loss"], record["epoch"], 0
            if self.restore_best:
                self.best_params = state.net.params.copy()
        else:
            self.waited += 1
            state.stop = self.waited >= self.patience

    def on_train_end(self, state):
        if state.stop and self.best_params is not None:
            state.net.params[...] = self.best_params


class StepLR(Callback):
    """lr = initial_lr × gamma^⌊(epoch − 1) / step_size⌋: drop by `gamma` every `step_size` epochs."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size, self.gamma = check_whole("step_size", step_size, 1), float(gamma)

    def on_epoch_begin(self, state):
        state.optimizer.lr = state.optimizer.initial_lr * self.gamma ** ((state.epoch - 1) // self.step_size)


class CosineLR(Callback):
    """lr follows half a cosine from initial_lr in the first epoch down towards `min_lr`.

    lr = min_lr + ½ (initial_lr − min_lr)(1 + cos(π (epoch − 1) / epochs)), so even the
    last epoch keeps a learning rate above min_lr and does some work.
    """

    def __init__(self, min_lr: float = 0.0):
        self.min_lr = float(min_lr)

    def on_epoch_begin(self, state):
        progress = (state.epoch - 1) / state.epochs
        opt = state.optimizer
        opt.lr = self.min_lr + 0.5 * (opt.initial_lr - self.min_lr) * (1 + math.cos(math.pi * progress))


class ModelCheckpoint(Callback):
    """Save the net, its optimizer, the epoch, the shuffle seed and the history to `path` after every epoch.

    Each save is atomic, so an interrupted run always leaves the last completed
    epoch on disk, ready for fit(..., initial_epoch=...) or `gpubp train --resume`.
    `meta` is stored alongside (for example the data's name). Put it after an
    EarlyStopping in the callbacks, so that the best weights it restores are saved too.
    """

    def __init__(self, path, **meta):
        self.path, self.meta = path, meta
        self.saved_epoch = None  # the last epoch written to `path` by this run

    def _save(self, state, epoch):
        checkpoint.save(
            state.net,
            self.path,
            state.optimizer,
            epoch=epoch,
            shuffle_seed=state.seed,  # with the epoch, the whole state of the shuffling RNG
            history=state.history.to_dict(),
            **self.meta,
        )
        self.saved_epoch = epoch

    def on_epoch_end(self, state, record):
        if state.rank == 0:  # one writer: every rank holds the same weights
            self._save(state, record["epoch"])

    def on_train_end(self, state):
        if state.stop and self.saved_epoch is not None:
            self._save(state, self.saved_epoch)  # an earlier callback may have changed the weights
