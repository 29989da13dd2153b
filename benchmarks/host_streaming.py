#!/usr/bin/env python3
"""Data on the host against data on the device: fit's epoch time either way, side by side in one run.

    python benchmarks/host_streaming.py --device gpu   # 784-1024-10 at batch 1024: the goal is ≤ 1.2×
    python benchmarks/host_streaming.py --tiny         # a few seconds on the CPU, to check that it still runs
    python benchmarks/host_streaming.py --json out.json

The same net (same seed) trains on the same random data with data_on_device=True
and with data_on_device=False, for a few epochs each, alternating so that the
machine's drift hits both. An epoch's time is fit's own (history.seconds); the
first epoch of each run is dropped as warm-up. The two runs' weights must agree
bit for bit, since their batches do.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import gpubp  # noqa: E402

GOAL = 1.2  # host-streamed epochs may take at most 1.2× the device-resident ones


def run(X, y, hidden, batch, device, on_device, epochs):
    net = gpubp.MLP([X.shape[1], hidden, 10], activation="sigmoid", loss="cross_entropy", device=device, seed=0)
    history = gpubp.fit(net, X, y, epochs=epochs, batch_size=batch, data_on_device=on_device, progress=False)
    return statistics.median(history.seconds[1:]), gpubp.to_numpy(net.params)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or gpu (default: cpu)")
    parser.add_argument("--tiny", action="store_true", help="a small run: checks that the script works")
    parser.add_argument("--rounds", type=int, default=3, help="alternating pairs of runs (default: 3)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    rows, hidden, batch, epochs = (4096, 64, 256, 3) if args.tiny else (60_000, 1024, 1024, 4)
    device = gpubp.device(args.device)
    rng = numpy.random.default_rng(0)
    X, y = rng.random((rows, 784), dtype=numpy.float32), rng.integers(0, 10, rows)
    print(f"# data on the host against data on {device}: {rows} rows, 784-{hidden}-10 sigmoid, batch {batch}\n")
    print("| device | resident s/epoch | streamed s/epoch | ratio | goal | same weights |")
    print("|---|---|---|---|---|---|")
    resident, streamed, same = [], [], True
    for _ in range(args.rounds):
        seconds, on_device = run(X, y, hidden, batch, device, True, epochs)
        resident.append(seconds)
        seconds, on_host = run(X, y, hidden, batch, device, False, epochs)
        streamed.append(seconds)
        same = same and numpy.array_equal(on_device, on_host)
    a, b = statistics.median(resident), statistics.median(streamed)
    verdict = f"≤ {GOAL}× ({'met' if b / a <= GOAL else 'not met'})"
    print(f"| {device} | {a:.4f} | {b:.4f} | {b / a:.2f}× | {verdict} | {'yes' if same else 'NO'} |")
    if args.json:
        row = {"device": str(device), "samples": rows, "sizes": f"784-{hidden}-10", "batch": batch, "epochs": epochs,
               "resident_s": a, "streamed_s": b, "ratio": b / a, "goal": GOAL, "goal_met": b / a <= GOAL,
               "same_weights": same, "resident_runs_s": resident, "streamed_runs_s": streamed}  # fmt: skip
        Path(args.json).write_text(json.dumps({"rounds": args.rounds, "rows": [row]}, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
