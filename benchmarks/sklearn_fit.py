#!/usr/bin/env python3
"""gpubp.sklearn.MLPClassifier against scikit-learn's MLPClassifier: fit time, side by side in one run.

    python benchmarks/sklearn_fit.py                  # the CPU table: 784-256-10, adam, batch 200, float32
    python benchmarks/sklearn_fit.py --device gpu     # also 784-1024-1024-10 on the GPU, against scikit-learn
                                                      # on the CPU and PyTorch on the GPU (when installed)
    python benchmarks/sklearn_fit.py --tiny           # a few seconds, to check that it still runs
    python benchmarks/sklearn_fit.py --json out.json

Both estimators get the same hyperparameters, the same float32 data (random
pixels, labels from a random linear teacher) and the same BLAS threads; each
fits a fixed number of epochs (tol=0 and n_iter_no_change past max_iter, so
neither stops early). Each time is the median of several fits. With the same
random_state both follow the same trajectory, so the times compare the same work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from bench import _median_time  # noqa: E402  (beside this script)

from gpubp import backend  # noqa: E402

TARGET_CPU, TARGET_GPU = 0.7, 1 / 20  # gpubp / scikit-learn fit time


def data(samples: int, seed: int = 0):
    rng = numpy.random.default_rng(seed)
    X = rng.random((samples, 784), dtype=numpy.float32)
    teacher = rng.normal(size=(784, 10)).astype(numpy.float32)
    return X, (X @ teacher).argmax(axis=1)


def fit_seconds(make, X, y, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        estimator = make()
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: a fixed number of epochs is the point
            estimator.fit(X, y)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def options(hidden, epochs):
    return {"hidden_layer_sizes": hidden, "solver": "adam", "batch_size": 200, "max_iter": epochs, "tol": 0.0,
            "n_iter_no_change": epochs + 1, "random_state": 0}  # fmt: skip


def torch_fit_seconds(hidden, X, y, epochs, repeats) -> float | None:
    """The same MLP, Adam and batches in PyTorch eager on the GPU; None without a CUDA PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    layers, width = [], X.shape[1]
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    X_d, y_d = torch.tensor(X, device="cuda"), torch.tensor(y, device="cuda")

    def fit():
        model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 10)).cuda()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
        for _ in range(epochs):
            for start in range(0, len(X_d), 200):
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(X_d[start : start + 200]), y_d[start : start + 200]).backward()
                optimizer.step()
        torch.cuda.synchronize()

    return _median_time(fit, repeats)  # after a warm-up fit


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or gpu")
    parser.add_argument("--tiny", action="store_true", help="a small run: checks that the script works")
    parser.add_argument("--repeats", type=int, default=3, help="fits per estimator (default: 3)")
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads for both (default: 2)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    try:
        from sklearn.neural_network import MLPClassifier as Reference
        from threadpoolctl import threadpool_limits

        from gpubp.sklearn import MLPClassifier
    except ImportError as e:
        print(f"sklearn_fit.py needs the sklearn extra: pip install 'gpubp[sklearn]' ({e})", file=sys.stderr)
        return 2
    samples, epochs = (2000, 2) if args.tiny else (10000, 5)
    X, y = data(samples)
    rows = []
    configs = [("cpu", (256,))] + ([("gpu", (1024, 1024))] if args.device == "gpu" else [])
    print(f"# gpubp.sklearn vs scikit-learn MLPClassifier fit; {samples} samples, {epochs} epochs, adam, batch 200")
    print(f"# cpu: {backend.cpu_name()}, {args.threads} BLAS threads; repeats {args.repeats}\n")
    print("| device | sizes | gpubp s | scikit-learn s (cpu) | ratio | target | torch s | ratio vs torch |")
    print("|---|---|---|---|---|---|---|---|")
    with threadpool_limits(limits=args.threads, user_api="blas"):
        for device, hidden in configs:
            ours = fit_seconds(
                lambda d=device, h=hidden: MLPClassifier(device=d, **options(h, epochs)), X, y, args.repeats
            )
            theirs = fit_seconds(lambda h=hidden: Reference(**options(h, epochs)), X, y, args.repeats)
            torch_s = torch_fit_seconds(hidden, X, y, epochs, args.repeats) if device == "gpu" else None
            target = TARGET_CPU if device == "cpu" else TARGET_GPU
            row = {"device": device, "sizes": f"784-{'-'.join(map(str, hidden))}-10", "gpubp": ours,
                   "sklearn": theirs, "ratio": ours / theirs, "target": target, "torch": torch_s}  # fmt: skip
            rows.append(row)
            versus = f"{torch_s:.3f} | {ours / torch_s:.2f}" if torch_s else "not measured | –"
            met = "met" if row["ratio"] <= target else "not met"
            print(f"| {device} | {row['sizes']} | {ours:.3f} | {theirs:.3f} | {row['ratio']:.2f} | "
                  f"≤ {target:.2f} ({met}) | {versus} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"samples": samples, "epochs": epochs, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
