#!/usr/bin/env python3
"""Data-parallel scaling on this machine: 1 process against K ranks, and the all-reduce's share.

    python benchmarks/scaling.py                 # launches 1 and 2 ranks with mpiexec, prints the table
    python benchmarks/scaling.py --ranks 1,2,3 --json scaling.json

Each rank trains the benchmark's 784-H-10 sigmoid MLP (softmax, cross-entropy,
plain SGD, float32) on its share of every global batch. The ranks on one machine
split its cores: with 2 cores, 1 process uses 2 BLAS threads and each of 2 ranks
uses 1. The all-reduce is timed inside the step. The latency α and bandwidth β
of the all-reduce are fitted from a sweep of message sizes, for the cost model
in SCALING.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gpubp  # noqa: E402
from gpubp import distributed  # noqa: E402

CONFIGS = [(64, 128), (256, 512), (1024, 1024)]  # (global batch, hidden width)
SAMPLES, REPEATS = 16384, 3


class TimedMPI(distributed.MPI):
    """The MPI communicator, adding up the seconds spent in gradient all-reduces."""

    seconds = 0.0
    calls = 0

    def allreduce_sum(self, array):
        started = time.perf_counter()
        result = super().allreduce_sum(array)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        return result


def measure(batch, hidden, comm, threads):
    rng = numpy.random.default_rng(0)
    X, y = rng.random((SAMPLES, 784), dtype=numpy.float32), rng.integers(0, 10, size=SAMPLES)
    net = gpubp.MLP([784, hidden, 10], activation="sigmoid", loss="cross_entropy", device="cpu")
    steps = -(-SAMPLES // batch)
    history = gpubp.fit(
        net, X, y, epochs=1 + REPEATS, batch_size=batch, optimizer=gpubp.SGD(net, lr=0.01), progress=False,
        threads=threads, distributed=comm if comm is not None else False,
    )  # fmt: skip
    allreduce = 0.0
    if comm is not None:  # every step's all-reduce, over all epochs (the epochs' metrics are negligible)
        allreduce, comm.seconds = comm.seconds / ((1 + REPEATS) * steps), 0.0
    step = statistics.median(history.seconds[1:]) / steps
    return {"batch": batch, "hidden": hidden, "params": int(net.params.size), "step_ms": step * 1e3,
            "allreduce_ms": allreduce * 1e3, "threads": threads}  # fmt: skip


def allreduce_sweep(comm):
    """Seconds per all-reduce of float32 buffers from 1 element to 16 M."""
    points = []
    for size in [1, 64, 1024, 16384, 65536, 262144, 1048576, 4194304, 16777216]:
        buffer = numpy.ones(size, dtype=numpy.float32)
        repeats = max(5, min(500, 2_000_000 // size))
        comm.barrier()
        started = time.perf_counter()
        for _ in range(repeats):
            comm.allreduce_sum(buffer)
        points.append((size * 4, (time.perf_counter() - started) / repeats))
    return points


def fit_alpha_beta(points, ranks):
    """α and β of the ring all-reduce, T(m) = 2(K−1) α + 2(K−1)/K · m / β.

    α from the small messages, where latency is all there is; β from the large ones
    (64 kB to 4 MB: above that, the copies fall out of this machine's caches).
    """
    hops, share = 2 * (ranks - 1), 2 * (ranks - 1) / ranks
    alpha = statistics.median(t for m, t in points if m <= 4096) / hops
    beta = statistics.median(share * m / (t - hops * alpha) for m, t in points if 65536 <= m <= 4 << 20)
    return float(alpha), float(beta)


def worker(out):
    size = distributed.launched_size()
    comm = TimedMPI(timeout=120) if size > 1 else None
    threads = distributed.cpu_threads_per_rank()
    rows = [measure(b, h, comm, threads) for b, h in CONFIGS]
    if size == 1 and threads > 1:  # one process on one core: the compute a single device does, for the model
        rows += [measure(b, h, None, 1) for b, h in CONFIGS]
    result = {"ranks": size, "rows": rows}
    if comm is not None:
        points = allreduce_sweep(comm)
        alpha, beta = fit_alpha_beta(points, size)
        result |= {"allreduce": points, "alpha_s": alpha, "beta_bytes_per_s": beta}
    if comm is None or comm.rank == 0:
        Path(out).write_text(json.dumps(result))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", default="1,2", help="rank counts to compare (default: 1,2)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    mpiexec = shutil.which("mpiexec", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    results = {}
    for ranks in [int(k) for k in args.ranks.split(",")]:
        out = Path(tempfile.mkdtemp()) / "result.json"
        command = [sys.executable, __file__, "--worker", str(out)]
        if ranks > 1:
            if mpiexec is None:
                parser.error("mpiexec is not installed: pip install 'gpubp[mpi]'")
            command = [mpiexec, "-n", str(ranks), *command]
        subprocess.run(command, check=True)
        results[ranks] = json.loads(out.read_text())
    base = {}
    for r in results[min(results)]["rows"]:
        base.setdefault((r["batch"], r["hidden"]), r)  # the first: one process with all the cores
    print(f"cpu: {os.cpu_count()} cores; {SAMPLES} samples; step times are medians of {REPEATS} epochs\n")
    print("| global batch | H | ranks | threads each | step ms | all-reduce ms | all-reduce share | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for ranks, result in sorted(results.items()):
        for r in result["rows"]:
            one = base[(r["batch"], r["hidden"])]["step_ms"]
            print(
                f"| {r['batch']} | {r['hidden']} | {ranks} | {r['threads']} | {r['step_ms']:.3f} | "
                f"{r['allreduce_ms']:.3f} | {r['allreduce_ms'] / r['step_ms']:.0%} | {one / r['step_ms']:.2f} |"
            )
    for ranks, result in sorted(results.items()):
        if "alpha_s" in result:
            print(f"\n{ranks} ranks: all-reduce latency α = {result['alpha_s'] * 1e6:.1f} µs per hop, "
                  f"bandwidth β = {result['beta_bytes_per_s'] / 1e9:.2f} GB/s")  # fmt: skip
            for nbytes, seconds in result["allreduce"]:
                print(f"  {nbytes:>10} bytes: {seconds * 1e6:10.1f} µs")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
