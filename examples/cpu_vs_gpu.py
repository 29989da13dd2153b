"""The same code on the CPU and on the GPU, and how far apart their weights end up.

    python examples/cpu_vs_gpu.py [--steps 20]

On a machine without a usable GPU it says why and runs the CPU alone.
"""

import argparse

import numpy as np

import gpubp

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=20)
args = parser.parse_args()

rng = np.random.default_rng(0)
X, y = rng.normal(size=(256, 20)), rng.integers(0, 5, size=256)


def train_on(device, dtype):
    net = gpubp.MLP([20, 64, 5], activation="tanh", loss="cross_entropy", dtype=dtype, device=device, seed=1)
    opt = gpubp.SGD(net, lr=0.1, momentum=0.9)
    for step in range(args.steps):
        rows = slice(32 * (step % 8), 32 * (step % 8) + 32)
        opt.step(net.backward(net.forward(X[rows]), y[rows]))
    return gpubp.to_numpy(net.params)


reason = gpubp.gpu_unavailable_reason()
for dtype, tolerance in (("float64", 1e-10), ("float32", 1e-4)):
    cpu = train_on("cpu", dtype)
    if reason is not None:
        print(f"{dtype}: trained on the CPU; the GPU was skipped: {reason}")
        continue
    gpu = train_on("gpu", dtype)
    error = np.abs(gpu - cpu).max() / np.abs(cpu).max()
    verdict = "within" if error <= tolerance else "OUTSIDE"
    print(f"{dtype}: {args.steps} steps, relative difference CPU vs GPU {error:.2e} ({verdict} {tolerance:g})")
