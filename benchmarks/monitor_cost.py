#!/usr/bin/env python3
"""What LayerMonitor costs: fit's epoch time with and without it, side by side in one run.

    python benchmarks/monitor_cost.py              # b64-h128, 784-128-10 sigmoid, SGD, float32, 1 BLAS thread
    python benchmarks/monitor_cost.py --tiny       # a few seconds, to check that it still runs

Each configuration trains the same net on the same random data for a few epochs;
the time of an epoch is the median over the epochs after the first, and the
runs alternate (plain, monitored, plain, ...) so that the machine's drift hits both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import gpubp  # noqa: E402

TARGET = 0.05  # the monitor may add at most 5% to an epoch


def epoch_seconds(X, y, hidden, batch, monitor, epochs) -> float:
    net = gpubp.MLP([X.shape[1], hidden, 10], activation="sigmoid", loss="cross_entropy", device="cpu", seed=0)
    callbacks = [gpubp.LayerMonitor(every=monitor)] if monitor else []
    history = gpubp.fit(net, X, y, epochs=epochs, batch_size=batch, callbacks=callbacks, progress=False, threads=1)
    return statistics.median(history.seconds[1:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a small run: checks that the script works")
    parser.add_argument("--rounds", type=int, default=3, help="alternating plain/monitored runs (default: 3)")
    args = parser.parse_args(argv)
    samples, epochs = (2048, 3) if args.tiny else (60000, 4)
    rng = numpy.random.default_rng(0)
    X, y = rng.random((samples, 784), dtype=numpy.float32), rng.integers(0, 10, samples)
    print(f"# LayerMonitor's cost: {samples} samples, 784-128-10 sigmoid, SGD, float32, 1 BLAS thread\n")
    print("| config | every | plain s/epoch | monitored s/epoch | cost | target |")
    print("|---|---|---|---|---|---|")
    for batch, every in ((64, 1), (64, 2), (256, 1)):
        plain, watched = [], []
        for _ in range(args.rounds):
            plain.append(epoch_seconds(X, y, 128, batch, 0, epochs))
            watched.append(epoch_seconds(X, y, 128, batch, every, epochs))
        a, b = statistics.median(plain), statistics.median(watched)
        target = f"≤ {TARGET:.0%} ({'met' if b / a - 1 <= TARGET else 'not met'})" if batch == 64 else ""
        print(f"| b{batch}-h128 | {every} | {a:.4f} | {b:.4f} | {b / a - 1:+.1%} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
