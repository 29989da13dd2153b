#!/usr/bin/env python3
"""What LayerMonitor costs: fit's epochs with and without it, alternating within one run.

    python benchmarks/monitor_cost.py              # b64-h128, 784-128-10 sigmoid, SGD, float32, 1 BLAS thread
    python benchmarks/monitor_cost.py --tiny       # a few seconds, to check that it still runs

One fit trains the net with the monitor on in every other epoch, so a plain
epoch and a monitored one run back to back on the same net, with the same
caches and the same moment of the machine's drift. Each monitored epoch is
compared with the mean of the plain epochs on either side of it; the cost is
the median of those ratios, and the spread is their interquartile range. An
epoch's time runs from its on_epoch_begin to the end of its on_epoch_record,
so the monitor's work at the start and end of the epoch counts too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import gpubp  # noqa: E402

TARGET = 0.05  # the monitor may add at most 5% to an epoch


class EveryOtherEpoch(gpubp.Callback):
    """A LayerMonitor that watches the even epochs only, and the time of every epoch."""

    def __init__(self, every: int):
        self.monitor = gpubp.LayerMonitor(every=every)
        self.seconds = []  # every epoch's, in order: plain, monitored, plain, ...

    def on_train_begin(self, state):
        self.monitor.on_train_begin(state)

    def on_epoch_begin(self, state):
        self.on = state.epoch % 2 == 0
        self.started = time.perf_counter()
        if self.on:
            self.monitor.on_epoch_begin(state)

    def on_step_end(self, state, trace, grads):
        if self.on:
            self.monitor.on_step_end(state, trace, grads)

    def on_epoch_record(self, state, record):
        if self.on:
            self.monitor.on_epoch_record(state, record)
        self.seconds.append(time.perf_counter() - self.started)


def costs(X, y, batch: int, every: int, pairs: int) -> tuple[list[float], float]:
    """Each monitored epoch's time over its plain neighbours' mean, less 1; and a plain epoch's seconds."""
    net = gpubp.MLP([X.shape[1], 128, 10], activation="sigmoid", loss="cross_entropy", device="cpu", seed=0)
    watch = EveryOtherEpoch(every)
    gpubp.fit(net, X, y, epochs=2 * pairs + 1, batch_size=batch, callbacks=[watch], progress=False, threads=1)
    s = watch.seconds  # s[0], s[2], ... plain; s[1], s[3], ... monitored
    ratios = [s[i] / ((s[i - 1] + s[i + 1]) / 2) - 1 for i in range(1, len(s) - 1, 2)]
    return ratios, statistics.median(s[0::2])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a small run: checks that the script works")
    parser.add_argument("--pairs", type=int, default=30, help="monitored epochs per configuration (default: 30)")
    args = parser.parse_args(argv)
    samples, pairs = (1024, 2) if args.tiny else (12800, args.pairs)
    rng = numpy.random.default_rng(0)
    X, y = rng.random((samples, 784), dtype=numpy.float32), rng.integers(0, 10, samples)
    print(f"# LayerMonitor's cost: {samples} rows an epoch, 784-128-10 sigmoid, SGD, float32, 1 BLAS thread")
    print(f"# {pairs} monitored epochs per row, each against the plain epochs beside it\n")
    print("| config | every | plain s/epoch | cost (median) | middle half of the ratios | target |")
    print("|---|---|---|---|---|---|")
    for batch, every in ((64, 1), (64, 2), (256, 1)):
        ratios, plain = costs(X, y, batch, every, pairs)
        low, _, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
        cost = statistics.median(ratios)
        target = f"≤ {TARGET:.0%} ({'met' if cost <= TARGET else 'not met'})" if (batch, every) == (64, 1) else ""
        print(f"| b{batch}-h128 | {every} | {plain:.4f} | {cost:+.1%} | {low:+.1%} … {high:+.1%} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
