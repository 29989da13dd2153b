"""The `gpubp` command line: parses arguments and calls the library.

    gpubp train [--data digits] [options]   train, report the test metrics, save the model
    gpubp eval MODEL --data ...             loss and accuracy of a saved model
    gpubp predict MODEL INPUT --out FILE    predictions as .csv or .npy
    gpubp info                              versions, devices, and why the GPU is unavailable

Errors print one line to stderr and exit with status 2. Ctrl-C or SIGTERM during
training stops at the next step boundary, keeps the last completed epoch's
checkpoint and exits with status 130 or 143; a second signal ends it at once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy

from . import atomic, backend, checkpoint, datasets, distributed, plot, train
from ._version import __version__
from .activations import ACTIVATIONS, HIDDEN
from .callbacks import Callback, CosineLR, EarlyStopping, History, ModelCheckpoint, StepLR
from .errors import GpubpError
from .losses import LOSSES
from .monitor import LayerMonitor
from .network import DTYPES, MLP
from .optim import SGD, Adam, AdamW, Optimizer
from .rows import is_memory_map

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
SCHEDULES = ("cosine", "step", "none")
MOMENTUM = 0.9  # --momentum's default


class UsageError(GpubpError):
    """A command-line request that cannot be carried out."""


def _layers(text: str) -> list[int]:
    try:
        widths = [int(w) for w in text.split(",") if w.strip()] if text.strip() else []
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected widths separated by commas, such as 64,32; got {text!r}") from None
    if any(w <= 0 for w in widths):
        raise argparse.ArgumentTypeError(f"every layer width must be positive; got {text!r}")
    return widths


def _whole(text: str, low: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ {low}; got {text!r}")
    return value


def _whole_or_zero(text: str) -> int:
    return _whole(text, 0)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 up to 1; got {text!r}")
    return value


# --- train -------------------------------------------------------------------


def _scaler_for(split, settings) -> datasets.Standardizer | None:
    if settings["standardize"] == "none":
        return None
    return datasets.Standardizer(per_feature=settings["standardize"] == "feature").fit(split.X_train)


def _scale(X, scaler_dict):
    if scaler_dict is None:  # a memory map stays one: fit converts it a batch at a time
        return X if is_memory_map(X) else numpy.asarray(X, dtype=numpy.float32)
    return datasets.Standardizer.from_dict(scaler_dict).transform(X)


def _training_settings(args, saved: dict | None) -> dict:
    """The options that must stay the same across a resumed run come from the checkpoint."""
    settings = dict(saved or {})
    fresh = {
        "data": args.data or "digits",
        "seed": args.seed,
        "batch_size": args.batch_size,
        "schedule": args.schedule,
        "test_size": args.test_size,
        "val_size": args.val_size,
        "standardize": args.standardize,
        "patience": args.patience,
        "header": args.header,
    }
    for key, value in fresh.items():
        settings.setdefault(key, value)
    if settings["standardize"] is None:
        settings["standardize"] = "global" if settings["data"] in ("digits", "mnist") else "feature"
    return settings


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
DEFAULTS = {  # --lr and --weight-decay when not given, per optimizer
    "sgd": {"lr": 0.1, "weight_decay": 1e-4},
    "adam": {"lr": 1e-3, "weight_decay": 0.0},
    "adamw": {"lr": 1e-3, "weight_decay": 1e-2},
}


def _optimizer(args, net) -> Optimizer:
    defaults = DEFAULTS[args.optimizer]
    lr = args.lr if args.lr is not None else defaults["lr"]
    decay = args.weight_decay if args.weight_decay is not None else defaults["weight_decay"]
    if args.optimizer == "sgd":
        return SGD(net, lr=lr, momentum=args.momentum, weight_decay=decay)
    if args.momentum != MOMENTUM:
        raise UsageError(f"--momentum is for --optimizer sgd; {args.optimizer} keeps its own moments")
    return OPTIMIZERS[args.optimizer](net, lr=lr, weight_decay=decay)


def _build_net(args, split, device) -> tuple[MLP, Optimizer]:
    if split.classification:
        loss = args.loss or "cross_entropy"
        output = args.output_activation
    else:
        loss = args.loss or "mse"
        output = args.output_activation or "identity"
    sizes = [split.X_train.shape[1], *args.layers, split.n_outputs]
    net = MLP(sizes, args.activation, output, loss, dtype=args.dtype, device=device, seed=args.seed)
    return net, _optimizer(args, net)


def _processes(args):
    """(communicator, device): under `mpiexec -n K` each rank binds its own GPU, by its local rank.
    The communicator reads the checkpoint to resume from; training makes its own, for the net's device."""
    if distributed.launched_size() == 1:
        return distributed.Single(), args.device
    return distributed.MPI(args.timeout), distributed.rank_device(args.device)


def _resume(path, device, comm):
    """The checkpoint to resume from: rank 0 reads the file and sends its bytes to every rank."""
    if comm.size == 1:
        return checkpoint.load_checkpoint(path, device)
    data = b""
    if comm.rank == 0 and Path(path).is_file():
        data = Path(path).read_bytes()
    data = comm.broadcast_bytes(data)
    if not data:
        raise UsageError(f"checkpoint {str(path)!r} does not exist on rank 0")
    return checkpoint.loads(data, device, source=f"{path} (rank 0's)")


def cmd_train(args) -> int:
    stopper = _StopOnSignal()
    stopper.install()  # from the start: a signal while the data loads stops at the first step
    try:
        return _train(args, stopper)
    finally:
        stopper.uninstall()


def _train(args, stopper) -> int:
    started = time.perf_counter()
    if args.plot:
        plot.require_matplotlib()  # say so now, not after the training
    comm, device = _processes(args)
    say = print if comm.rank == 0 else _silent  # one voice: rank 0's
    run = _run(args, device, comm, say)
    X_train, y_train, validation = _training_rows(run)
    save_path = Path(args.save or args.resume or f"gpubp-{run.split.name}.safetensors")
    saver = ModelCheckpoint(save_path, settings=run.settings, standardizer=run.scaler)
    callbacks = _callbacks(args, run.settings, validation, saver, stopper, say)
    if args.log and run.initial_epoch == 0 and comm.rank == 0:
        atomic.write_bytes(args.log, b"")  # a fresh run starts a fresh log; a resumed one appends
    if comm.size > 1:  # NCCL for GPU nets, unless ranks share a GPU
        comm = distributed.communicator(run.net.device, timeout=args.timeout)
    say(
        f"training {run.net} on {run.split.name}: {len(X_train)} training rows"
        + (f", {len(validation[0])} validation" if validation else "")
        + f", {len(run.split.X_test)} test"
        + (f", on {comm.size} ranks ({comm.backend})" if comm.size > 1 else ""),
        file=sys.stderr,
    )
    try:
        history = train.fit(
            run.net,
            X_train,
            y_train,
            epochs=args.epochs,
            batch_size=run.settings["batch_size"],
            optimizer=run.optimizer,
            validation_data=validation,
            seed=run.settings["seed"],
            progress="lines" if args.no_progress else True,
            callbacks=callbacks,
            log=args.log,
            initial_epoch=run.initial_epoch,
            history=run.history,
            threads=args.threads,
            distributed=comm if comm.size > 1 else False,
            timeout=args.timeout,
        )
    except (KeyboardInterrupt, _Stopped) as stop:
        return _interrupted(stop, saver, save_path, say)
    if comm.rank != 0:
        return 0  # every rank holds the same weights: rank 0 reports
    return _report(args, run, history, save_path, started)


@dataclass
class _Run:
    """What a training run starts from: fresh, or resumed from a checkpoint."""

    settings: dict
    split: datasets.Split
    net: MLP
    optimizer: Optimizer
    scaler: dict | None  # the Standardizer, as saved in the checkpoint
    history: History | None
    initial_epoch: int


def _run(args, device, comm, say) -> _Run:
    """The settings, the data's split and the net to train, resumed when --resume names a checkpoint."""
    resumed = _resume(args.resume, device, comm) if args.resume else None
    settings = _training_settings(args, resumed.meta.get("settings") if resumed else None)
    split = datasets.load_split(
        settings["data"],
        settings["test_size"],
        settings["seed"],
        mnist_dir=args.mnist_dir,
        download=args.download,
        header=settings.get("header", "auto"),
    )
    if split.report:
        say(split.report, file=sys.stderr)
    if resumed is not None:
        if resumed.epoch >= args.epochs:
            raise UsageError(f"{args.resume} has finished epoch {resumed.epoch} already; pass a larger --epochs")
        net, optimizer = resumed.net, resumed.optimizer or _optimizer(args, resumed.net)
        history = History.from_dict(resumed.meta.get("history", {}))
        run = _Run(settings, split, net, optimizer, resumed.meta.get("standardizer"), history, resumed.epoch)
    else:
        scaler = _scaler_for(split, settings)
        net, optimizer = _build_net(args, split, device)
        run = _Run(settings, split, net, optimizer, scaler.to_dict() if scaler is not None else None, None, 0)
    if net.sizes[0] != split.X_train.shape[1]:
        raise UsageError(f"the data has {split.X_train.shape[1]} features but the model takes {net.sizes[0]}")
    return run


def _training_rows(run: _Run):
    """(X_train, y_train, validation): the training rows scaled, and --val-size of them held out."""
    X_train, y_train = _scale(run.split.X_train, run.scaler), run.split.y_train
    if run.settings["val_size"] > 0 and len(X_train) >= 20:
        X_train, X_val, y_train, y_val = datasets.train_test_split(
            X_train, y_train, run.settings["val_size"], seed=run.settings["seed"]
        )
        return X_train, y_train, (X_val, y_val)
    return X_train, y_train, None


def _callbacks(args, settings, validation, saver, stopper, say) -> list[Callback]:
    """The run's callbacks, in the order they run: early stopping (its best weights, restored at the end,
    are what the saver saves), the schedule, the monitor and its lines, the saver, then the signal stop
    (after the saver: an epoch that completes is saved before the stop)."""
    callbacks = []
    if settings["patience"]:
        if validation is None:
            raise UsageError("--patience watches the validation loss: give --val-size > 0")
        callbacks.append(EarlyStopping(patience=settings["patience"]))
    if settings["schedule"] == "cosine":
        callbacks.append(CosineLR())
    elif settings["schedule"] == "step":
        callbacks.append(StepLR(step_size=max(1, args.epochs // 3), gamma=0.1))
    if args.monitor:
        monitor = LayerMonitor()
        callbacks += [monitor, _MonitorLines(monitor, say)]
    callbacks.append(saver)
    if stopper.previous:
        callbacks.append(stopper)
    return callbacks


def _interrupted(stop, saver, save_path, say) -> int:
    """Say what was kept after a Ctrl-C or a signal, and how to resume; the exit status."""
    if saver.saved_epoch is None:
        where = "no epoch had completed, so nothing was saved"
    else:
        where = f"the last completed epoch ({saver.saved_epoch}) is saved in {save_path}"
    name = f" by {signal.Signals(stop.signum).name}" if isinstance(stop, _Stopped) else ""
    say(f"\ngpubp: interrupted{name}; {where}. Resume with: gpubp train --resume {save_path}", file=sys.stderr)
    return 128 + stop.signum if isinstance(stop, _Stopped) else EXIT_INTERRUPTED


def _report(args, run: _Run, history, save_path, started) -> int:
    """Rank 0's end of a run: the test rows' loss and accuracy, the log's last line and the plot."""
    test = train.evaluate(run.net, _scale(run.split.X_test, run.scaler), run.split.y_test)
    seconds = time.perf_counter() - started
    summary = {
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        "device": str(run.net.device),
        "seconds": seconds,
        "epochs": len(history),
    }
    if args.log:
        with open(args.log, "a") as f:
            f.write(json.dumps(summary) + "\n")
    if args.plot:
        plot.plot_history(history, args.plot, title=f"gpubp on {run.split.name}")
    accuracy = f"  test accuracy {test['accuracy']:.2%}" if test["accuracy"] is not None else ""
    print(f"test loss {test['loss']:.4f}{accuracy}  device {run.net.device}  time {seconds:.1f}s")
    print(f"saved the model to {save_path}" + (f", the curves to {args.plot}" if args.plot else ""))
    return 0


def _silent(*args, **kwargs) -> None:
    pass


class _Stopped(Exception):
    """A stop asked for by a signal, raised at a step boundary."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _StopOnSignal(Callback):
    """SIGTERM (docker stop, Kubernetes, SLURM) and Ctrl-C during gpubp train: finish the step in progress,
    then stop, keeping the last completed epoch's checkpoint. A second signal ends the process at once.

    The handlers are set explicitly, so Ctrl-C works even when the process started with SIGINT
    ignored (as a shell's background jobs do). Under mpiexec, which passes a SIGTERM or Ctrl-C on
    to every rank, the ranks agree after each step, with an all-reduce of two numbers, on whether
    any of them got one: so they all stop after the same step, and none waits for the others.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum, self.previous = None, {}
        self.seen = numpy.zeros(2)  # whether this rank got SIGTERM, and SIGINT: summed over the ranks

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers (main() called from a thread): keep the defaults
        for signum in self.SIGNALS:
            self.previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # a second signal while stopping: now
            sys.stderr.write(f"\ngpubp: {signal.Signals(signum).name} again: stopping at once\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        self.signum = signum

    def _check(self, state) -> None:
        if state.comm is None or state.comm.size == 1:
            if self.signum is not None:
                raise _Stopped(self.signum)
            return
        self.seen[...] = [self.signum == signal.SIGTERM, self.signum == signal.SIGINT]  # taken before the
        state.comm.allreduce_sum(self.seen)  # all-reduce: a signal during it counts at the next step, everywhere
        if self.seen.any():
            raise _Stopped(signal.SIGTERM if self.seen[0] else signal.SIGINT)

    def on_step_end(self, state, trace, grads) -> None:
        self._check(state)

    def on_epoch_end(self, state, record) -> None:
        self._check(state)


class _MonitorLines(Callback):
    """--monitor: a compact line of each layer's numbers after each epoch's line."""

    def __init__(self, monitor, say):
        self.monitor, self.say = monitor, say

    def on_epoch_end(self, state, record):
        self.say(f"  layers  {self.monitor.line(record)}", file=sys.stderr)


# --- eval, predict, info -------------------------------------------------------


def cmd_eval(args) -> int:
    ckpt = checkpoint.load_checkpoint(args.model, args.device)
    settings = ckpt.meta.get("settings") or {}
    split = datasets.load_split(
        args.data or settings.get("data", "digits"),
        settings.get("test_size", 0.2),
        settings.get("seed", 0),
        mnist_dir=args.mnist_dir,
        download=args.download,
        header=args.header if args.data else settings.get("header", "auto"),
    )
    if split.report:
        print(split.report, file=sys.stderr)
    if split.X_test.shape[1] != ckpt.net.sizes[0]:
        raise UsageError(f"the data has {split.X_test.shape[1]} features but the model takes {ckpt.net.sizes[0]}")
    X = _scale(split.X_test, ckpt.meta.get("standardizer"))
    result = train.evaluate(ckpt.net, X, split.y_test)
    accuracy = f"  accuracy {result['accuracy']:.2%}" if result["accuracy"] is not None else ""
    print(f"{split.name} test rows: {len(X)}  loss {result['loss']:.4f}{accuracy}  device {ckpt.net.device}")
    return 0


def _read_inputs(path: Path, header: str) -> tuple[numpy.ndarray, str]:
    """The rows to predict, and a line saying how many were read (and which lines were skipped)."""
    if not path.is_file():
        raise UsageError(f"input file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        table = datasets.read_csv(path, header)
        table.check_finite("the input")
        return table.values, table.describe()
    try:
        if suffix == ".npy":
            X = numpy.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with numpy.load(path, allow_pickle=False) as data:
                if "X" not in data:
                    raise UsageError(f"{path} must hold an array named X; it holds {sorted(data.files)}")
                X = data["X"]
        else:
            raise UsageError(f"input file must end in .csv, .npy or .npz; got {path.name!r}")
    except ValueError as e:
        raise UsageError(f"could not read {path} ({e})") from None
    rows = len(X) if X.ndim else 0
    return X, f"read {rows} row{'s' * (rows != 1)} from {path.name}"


def cmd_predict(args) -> int:
    ckpt = checkpoint.load_checkpoint(args.model, args.device)
    out = Path(args.out)
    if out.suffix.lower() not in (".csv", ".npy"):
        raise UsageError(f"--out must end in .csv or .npy; got {out.name!r}")
    X, report = _read_inputs(Path(args.input), args.header)
    if X.ndim != 2 or X.shape[1] != ckpt.net.sizes[0]:
        raise UsageError(f"{args.input} must have {ckpt.net.sizes[0]} columns for this model; got shape {X.shape}")
    output = backend.to_numpy(ckpt.net.predict(_scale(X, ckpt.meta.get("standardizer"))))
    if len(output) != len(X):  # one prediction per row read, in order: never fewer
        raise UsageError(f"made {len(output)} predictions for {len(X)} rows; nothing was written")
    if out.suffix.lower() == ".npy":
        import io

        buffer = io.BytesIO()
        numpy.save(buffer, output)
        atomic.write_bytes(out, buffer.getvalue())
    else:
        classes = train.accuracy_kind(ckpt.net) is not None
        if classes:
            labels = (output[:, 0] > 0.5).astype(int) if output.shape[1] == 1 else output.argmax(axis=1)
            header = ["prediction"] + [f"p{k}" for k in range(output.shape[1])]
            rows = [[str(c)] + [f"{v:.6g}" for v in row] for c, row in zip(labels, output)]
        else:
            header = [f"y{k}" for k in range(output.shape[1])]
            rows = [[f"{v:.6g}" for v in row] for row in output]
        text = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
        atomic.write_bytes(out, text.encode())
    print(report)
    print(f"wrote {len(output)} predictions to {out}, one per row read, in order")
    return 0


def cmd_info(args) -> int:
    rows = [("gpubp", __version__), ("python", sys.version.split()[0]), *backend.describe(), ("blas", _blas())]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _blas() -> str:
    """The BLAS library NumPy uses, from its build configuration."""
    try:
        config = numpy.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older NumPy has no mode="dicts"
        return "unknown"


# --- the parser ----------------------------------------------------------------


def _data_options(p, default_help):
    p.add_argument(
        "--data",
        help=f"xor, spirals, digits, mnist, PATH.npz, PATH.csv, or PATH/X.npy with its labels in PATH/y.npy "
        f"(train_X.npy goes with train_y.npy), opened as memory maps ({default_help})",
    )
    p.add_argument("--mnist-dir", help="folder holding the MNIST IDX files (default: the cache)")
    p.add_argument("--download", action="store_true", help="download MNIST into the cache if missing")
    p.add_argument("--device", default="auto", help="auto, cpu, gpu or cuda:N (default: auto)")
    _header_option(p)


def _header_option(p):
    p.add_argument(
        "--header",
        choices=datasets.csvfile.HEADER_CHOICES,
        default="auto",
        help="is a .csv file's first line a header? (default: auto, when one of its fields is not a number)",
    )


def _train_options(t) -> None:
    """gpubp train's options, after the data's."""
    t.add_argument("--layers", type=_layers, default=[256], help="hidden widths, such as 64,32 (default: 256)")
    t.add_argument("--activation", default="relu", choices=HIDDEN, help="hidden activation (default: relu)")
    t.add_argument("--output-activation", choices=tuple(ACTIVATIONS), help="(default: chosen by the loss)")
    t.add_argument("--loss", choices=tuple(LOSSES), help="(default: cross_entropy for labels, mse for values)")
    t.add_argument("--epochs", type=_whole, default=40, help="(default: 40)")
    t.add_argument("--batch-size", type=_whole, default=32, help="(default: 32)")
    t.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="sgd", help="(default: sgd)")
    t.add_argument("--lr", type=float, help="learning rate (default: 0.1 for sgd, 1e-3 for adam and adamw)")
    t.add_argument("--momentum", type=float, default=MOMENTUM, help=f"sgd's momentum (default: {MOMENTUM})")
    t.add_argument(
        "--weight-decay", type=float, help="(default: 1e-4 for sgd, 0 for adam, 1e-2 for adamw's decoupled decay)"
    )
    t.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="learning-rate schedule (default: cosine)")
    t.add_argument(
        "--patience", type=_whole_or_zero, default=0, help="stop after this many epochs without a better val_loss"
    )
    t.add_argument("--val-size", type=_fraction, default=0.1, help="share of the training rows held out (0.1)")
    t.add_argument("--test-size", type=_fraction, default=0.2, help="share of the rows kept for the test (0.2)")
    t.add_argument("--standardize", choices=("feature", "global", "none"), help="input scaling (default: by data)")
    t.add_argument("--dtype", choices=DTYPES, default="float32", help="(default: float32)")
    t.add_argument("--seed", type=int, default=0, help="weights, split and shuffling (default: 0)")
    t.add_argument("--threads", type=_whole, help="BLAS threads on the CPU (default: as many as the BLAS picks)")
    t.add_argument(
        "--timeout",
        type=float,
        default=distributed.DEFAULT_TIMEOUT,
        help="under mpiexec: seconds to wait for the other ranks before stopping the job (default: 300)",
    )
    t.add_argument("--save", help="where to save the model (default: gpubp-DATA.safetensors)")
    t.add_argument("--resume", help="continue the run saved in this checkpoint")
    t.add_argument("--log", help="write one JSON object per epoch to this .jsonl file")
    t.add_argument("--plot", help="draw the loss and accuracy curves into this .png (needs gpubp[plot])")
    t.add_argument("--no-progress", action="store_true", help="plain lines instead of a progress bar")
    t.add_argument(
        "--monitor",
        action="store_true",
        help="watch each layer: speed of learning, update ratio, saturated or dead units (printed, logged, plotted)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpubp", description="Train multilayer perceptrons by explicit backpropagation."
    )
    parser.add_argument("--version", action="version", version=f"gpubp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = commands.add_parser("train", help="train a network and save it", description="Train a network and save it.")
    _data_options(t, "default: digits")
    _train_options(t)
    t.set_defaults(run=cmd_train)

    e = commands.add_parser("eval", help="loss and accuracy of a saved model on a data set's test rows")
    e.add_argument("model", help="a .safetensors file written by gpubp train")
    _data_options(e, "default: the data the model was trained on")
    e.set_defaults(run=cmd_eval)

    p = commands.add_parser("predict", help="predictions of a saved model for the rows of a file")
    p.add_argument("model", help="a .safetensors file written by gpubp train")
    p.add_argument("input", help="rows to predict: .csv (no label column), .npy, or .npz with an array X")
    p.add_argument("--out", required=True, help="where to write: .csv (class and outputs) or .npy (outputs)")
    p.add_argument("--device", default="auto", help="auto, cpu, gpu or cuda:N (default: auto)")
    _header_option(p)
    p.set_defaults(run=cmd_predict)

    i = commands.add_parser("info", help="versions, devices, and why the GPU is unavailable when it is")
    i.set_defaults(run=cmd_info)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (GpubpError, OSError) as e:
        message = str(e) if isinstance(e, GpubpError) else f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")
        print(f"gpubp: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ngpubp: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
