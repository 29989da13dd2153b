#!/usr/bin/env python3
"""gpubp against PyTorch eager, scikit-learn and the GEMM floor, side by side in one run.

    python benchmarks/bench.py                    # the CPU table
    python benchmarks/bench.py --device gpu       # the GPU table (CuPy, and PyTorch CUDA if installed)
    python benchmarks/bench.py --sweep sweep.png  # step time against batch size and against width
    python benchmarks/bench.py --tiny             # a few seconds, to check that it still runs
    python benchmarks/bench.py --json results.json

The work: a 784-H-10 MLP (sigmoid hidden layer, softmax output with
cross-entropy, the same for every peer), plain SGD, float32, one epoch over
random samples. Every peer uses the same number of threads; each time is the
median of several epochs after a warm-up one. The GEMM floor is the time of
that epoch's matrix products alone (X@W, δ@Wᵀ and aᵀ@δ for each layer) with
the same BLAS: the cost of an MLP epoch that no implementation can go under.
Peers that are not installed are skipped, and the table says so.

On machines that set OPENBLAS_CORETYPE, NumPy's OpenBLAS runs an older kernel;
run with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` to measure the one it
would pick, and check the "blas" line of the header.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import gpubp  # noqa: E402
from gpubp import plot  # noqa: E402

N_IN, N_OUT, LR = 784, 10, 0.01


@dataclass(frozen=True)
class Config:
    name: str
    batch: int
    hidden: int
    threads: int
    samples: int
    targets: dict  # peer -> the largest gpubp/peer time ratio that meets the goal


CPU_CONFIGS = [
    Config("b64-h128-t1", 64, 128, 1, 60000, {"torch": 0.5, "sklearn": 0.5, "floor": 1.15}),
    Config("b256-h512-t2", 256, 512, 2, 60000, {"sklearn": 0.5, "floor": 1.15}),
    Config("b1024-h1024-t2", 1024, 1024, 2, 60000, {"torch": 0.9, "sklearn": 0.5, "floor": 1.15}),
]
GPU_CONFIGS = [
    Config("b64-h128", 64, 128, 1, 65536, {"torch": 1.0}),
    Config("b1024-h1024", 1024, 1024, 1, 65536, {"torch": 1.0, "floor": 1.15}),  # between launch- and GEMM-bound
    Config("b8192-h4096", 8192, 4096, 1, 65536, {"floor": 1 / 0.9}),
]
TINY_CONFIGS = [Config("tiny-b32-h16-t1", 32, 16, 1, 512, {"torch": 0.5, "sklearn": 0.5, "floor": 1.15})]


def data(config: Config, seed: int = 0):
    rng = numpy.random.default_rng(seed)
    X = rng.random((config.samples, N_IN), dtype=numpy.float32)
    y = rng.integers(0, N_OUT, size=config.samples)
    return X, y


def sync_for(device):
    """A function that waits for the device's queued work: timings must include it."""
    if device.kind == "cpu":
        return lambda: None
    return lambda: device.xp.cuda.get_current_stream().synchronize()


# --- the peers: each returns the median seconds of one epoch ------------------------------


def time_gpubp(config, X, y, device, repeats):
    net = gpubp.MLP([N_IN, config.hidden, N_OUT], activation="sigmoid", loss="cross_entropy", device=device)
    threads = config.threads if net.device.kind == "cpu" else None
    history = gpubp.fit(
        net, X, y, epochs=1 + repeats, batch_size=config.batch, optimizer=gpubp.SGD(net, lr=LR),
        progress=False, threads=threads,
    )  # fmt: skip
    return statistics.median(history.seconds[1:])  # the first epoch warms up


def time_torch(config, X, y, device, repeats):
    import torch

    torch.set_num_threads(config.threads)
    where = "cpu" if device.kind == "cpu" else f"cuda:{device.index}"
    model = torch.nn.Sequential(
        torch.nn.Linear(N_IN, config.hidden), torch.nn.Sigmoid(), torch.nn.Linear(config.hidden, N_OUT)
    ).to(where)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    X_t, y_t = torch.from_numpy(X).to(where), torch.from_numpy(y).to(where)
    generator = torch.Generator(device=where).manual_seed(0)
    sync = (lambda: None) if where == "cpu" else torch.cuda.synchronize

    def epoch():
        order = torch.randperm(len(X_t), device=where, generator=generator)
        for start in range(0, len(X_t), config.batch):
            rows = order[start : start + config.batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(X_t[rows]), y_t[rows]).backward()
            opt.step()
        sync()

    return _median_time(epoch, repeats)


def time_sklearn(config, X, y, device, repeats):
    import warnings

    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    model = MLPClassifier(
        hidden_layer_sizes=(config.hidden,), activation="logistic", solver="sgd", batch_size=config.batch,
        learning_rate_init=LR, momentum=0.0, nesterovs_momentum=False, alpha=0.0, shuffle=True, random_state=0,
    )  # fmt: skip
    classes = numpy.arange(N_OUT)
    with threadpool_limits(limits=config.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _median_time(lambda: model.partial_fit(X, y, classes=classes), repeats)  # one epoch each


def time_floor(config, X, y, device, repeats):
    """The epoch's matrix products alone, on preallocated arrays, with the same BLAS (or cuBLAS)."""
    from threadpoolctl import threadpool_limits

    xp, sync = device.xp, sync_for(device)
    sizes = [N_IN, config.hidden, N_OUT]
    with device.activate():
        rng = numpy.random.default_rng(1)
        weights = [device.asarray(rng.normal(0, 0.05, (i, o)).astype(numpy.float32)) for i, o in zip(sizes, sizes[1:])]
        X_dev = device.asarray(X)

        def batch_products(x):
            n = len(x)
            acts = [x]
            for W in weights:  # forward: z = a @ W
                acts.append(xp.matmul(acts[-1], W, out=buffers[(n, W.shape[1], "z")]))
            delta = acts[-1]
            for l in range(len(weights) - 1, -1, -1):  # backward: aᵀ @ δ, then δ @ Wᵀ
                xp.matmul(acts[l].T, delta, out=buffers[(l, "grad")])
                if l > 0:
                    delta = xp.matmul(delta, weights[l].T, out=buffers[(n, weights[l].shape[0], "delta")])

        buffers = {(l, "grad"): xp.empty_like(W) for l, W in enumerate(weights)}
        for n in {config.batch, len(X) % config.batch or config.batch}:
            for w in sizes[1:]:
                buffers[(n, w, "z")] = xp.empty((n, w), dtype=numpy.float32)
            for w in sizes[1:-1]:
                buffers[(n, w, "delta")] = xp.empty((n, w), dtype=numpy.float32)

        def epoch():
            for start in range(0, len(X_dev), config.batch):
                batch_products(X_dev[start : start + config.batch])
            sync()

        limits = threadpool_limits(limits=config.threads) if device.kind == "cpu" else contextlib.nullcontext()
        with limits:
            return _median_time(epoch, repeats)


def _median_time(epoch, repeats):
    epoch()  # warm-up: first-touch pages, BLAS buffers, kernel compilation
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


PEERS = {"torch": ("torch", time_torch), "sklearn": ("sklearn", time_sklearn)}


def available_peers(device, wanted):
    """The peers that can run here, and for the others the reason they were skipped."""
    import importlib.util

    ready, skipped = {}, {}
    for name in wanted:
        module, timer = PEERS[name]
        if importlib.util.find_spec(module) is None:
            skipped[name] = "not installed"
        elif name == "sklearn" and device.kind != "cpu":
            skipped[name] = "CPU only"
        elif name == "torch" and device.kind != "cpu" and not _torch_cuda():
            skipped[name] = "this PyTorch has no CUDA"
        else:
            ready[name] = timer
    return ready, skipped


def _torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# --- the report ------------------------------------------------------------------------------


def environment(device) -> dict:
    from threadpoolctl import threadpool_info

    blas = [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    versions = {"gpubp": gpubp.__version__, "numpy": numpy.__version__, "python": platform.python_version()}
    for name in ("torch", "sklearn", "cupy"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": str(device) if device.kind == "cpu" else f"{device} ({device.name})",
        "cpu": gpubp.backend.cpu_name(),
        "cores": os.cpu_count(),
        "blas": "; ".join(sorted(set(blas))) or "unknown",
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "unset"),
        "versions": versions,
    }


def run(configs, device, peers, repeats):
    rows = []
    ready, skipped = available_peers(device, peers)
    for config in configs:
        X, y = data(config)
        row = {"config": config.name, "batch": config.batch, "hidden": config.hidden, "threads": config.threads}
        row["steps"] = -(-config.samples // config.batch)
        row["gpubp"] = time_gpubp(config, X, y, device, repeats)
        for name, timer in ready.items():
            row[name] = timer(config, X, y, device, repeats)
        row["floor"] = time_floor(config, X, y, device, repeats)
        row["ratios"] = {peer: row["gpubp"] / row[peer] for peer in ("torch", "sklearn", "floor") if peer in row}
        row["targets"] = {p: t for p, t in config.targets.items() if p in row["ratios"]}
        rows.append(row)
        print(f"  measured {config.name}", file=sys.stderr, flush=True)
    return rows, skipped


def table(rows, skipped) -> str:
    peers = [p for p in ("torch", "sklearn") if any(p in r for r in rows)]
    head = ["config", "gpubp s", *[f"{p} s" for p in peers], "floor s", *[f"÷ {p}" for p in (*peers, "floor")]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["config"], f"{r['gpubp']:.4f}"] + [f"{r[p]:.4f}" if p in r else "—" for p in peers]
        cells.append(f"{r['floor']:.4f}")
        for p in (*peers, "floor"):
            ratio, target = r["ratios"].get(p), r["targets"].get(p)
            if ratio is None:
                cells.append("—")
            else:
                verdict = "" if target is None else (f" ✓ ≤ {target:.2f}" if ratio <= target else f" ✗ > {target:.2f}")
                cells.append(f"{ratio:.2f}{verdict}")
        lines.append("| " + " | ".join(cells) + " |")
    for name, reason in skipped.items():
        lines.append(f"\n{name}: skipped ({reason})")
    return "\n".join(lines)


def sweep(path, device, repeats, peers):
    """gpubp, PyTorch and the floor, per step, against batch size (H = 512) and against width (batch 256)."""
    plt = plot.require_matplotlib()
    ready, _ = available_peers(device, [p for p in peers if p == "torch"])
    threads = min(2, os.cpu_count() or 1)
    batches, widths = (16, 32, 64, 128, 256, 512, 1024), (64, 128, 256, 512, 1024, 2048)
    axes_spec = [  # (label, the Config field on the x axis, configurations)
        ("batch size (H = 512)", "batch", [Config(f"b{b}", b, 512, threads, max(8 * b, 4096), {}) for b in batches]),
        ("hidden width (batch 256)", "hidden", [Config(f"h{h}", 256, h, threads, 8192, {}) for h in widths]),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    results = {}
    for ax, (label, field, configs) in zip(axes, axes_spec):
        series = {"gpubp": [], **{p: [] for p in ready}, "floor": []}
        xs = []
        for config in configs:
            X, y = data(config)
            steps = -(-config.samples // config.batch)
            xs.append(getattr(config, field))
            series["gpubp"].append(time_gpubp(config, X, y, device, repeats) / steps * 1e3)
            for name, timer in ready.items():
                series[name].append(timer(config, X, y, device, repeats) / steps * 1e3)
            series["floor"].append(time_floor(config, X, y, device, repeats) / steps * 1e3)
        for name, values in series.items():
            style = "--" if name == "floor" else "-"
            ax.plot(xs, values, style, marker="o", markersize=3, label="GEMM floor" if name == "floor" else name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("ms per training step")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        results[label] = {"x": xs, **series}
    fig.suptitle(f"784-H-10 sigmoid MLP, float32, {threads} threads, {device}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or gpu")
    parser.add_argument("--tiny", action="store_true", help="one small configuration: checks that the script runs")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per peer (default: 3)")
    parser.add_argument("--peers", default="torch,sklearn", help="which peers to try (default: torch,sklearn)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--sweep", help="measure step time against batch size and width; draw it into this PNG")
    args = parser.parse_args(argv)
    device = gpubp.device(args.device)
    peers = [p for p in args.peers.split(",") if p]
    unknown = set(peers) - set(PEERS)
    if unknown:
        parser.error(f"--peers takes torch and sklearn; got {sorted(unknown)}")
    env = environment(device)
    print("\n".join(f"{k}: {v}" for k, v in env.items()))
    results = {"environment": env}
    if args.sweep:
        results["sweep"] = sweep(args.sweep, device, args.repeats, peers)
        print(f"sweep drawn into {args.sweep}")
    else:
        configs = TINY_CONFIGS if args.tiny else CPU_CONFIGS if device.kind == "cpu" else GPU_CONFIGS
        rows, skipped = run(configs, device, peers, 1 if args.tiny else args.repeats)
        print()
        print(table(rows, skipped))
        results |= {"rows": rows, "skipped": skipped}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
