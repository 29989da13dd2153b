"""Recorded runs ("goldens"): fixed short trainings whose loss curve and final
weights are stored under tests/golden/, one file pair per case and device.

ci/record-goldens writes them; tests/test_golden.py reruns every case on every
usable device and compares with every recording present, so a GPU recording
committed once keeps the CPU path honest from then on.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import gpubp

GOLDEN_DIR = Path(__file__).parent / "golden"
STEPS = 20
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}  # relative, as in the parity policy


@dataclass(frozen=True)
class Case:
    name: str
    sizes: tuple
    activation: str
    loss: str
    dtype: str
    optimizer: dict
    output_activation: str | None = None
    samples: int = 64
    batch: int = 16


CASES = {
    c.name: c
    for c in (
        Case("sigmoid-mse-f64", (4, 8, 3), "sigmoid", "mse", "float64", {"lr": 0.5}),
        Case("relu-ce-f32", (4, 16, 8, 3), "relu", "cross_entropy", "float32", {"lr": 0.1, "momentum": 0.9}),
        Case(
            "tanh-bce-f64",
            (4, 6, 2),
            "tanh",
            "bce",
            "float64",
            {"lr": 0.3, "momentum": 0.5, "nesterov": True, "weight_decay": 1e-3},
        ),
        Case("leaky-mse-f32", (4, 12, 2), "leaky_relu", "mse", "float32", {"lr": 0.05}, output_activation="identity"),
    )
}


def case_data(case: Case):
    """The case's inputs and targets, from a fixed host seed (the same on every machine)."""
    rng = np.random.default_rng(1234)
    X = rng.normal(size=(case.samples, case.sizes[0]))
    n_out = case.sizes[-1]
    if case.loss == "cross_entropy":
        Y = rng.integers(0, n_out, size=case.samples)
    elif case.loss == "bce":
        Y = rng.integers(0, 2, size=(case.samples, n_out)).astype(float)
    else:
        Y = rng.normal(size=(case.samples, n_out))
    return X, Y


def run_case(case: Case, device) -> dict:
    """Train `case` for STEPS minibatch steps; return its loss curve and final parameters on the host."""
    net = gpubp.MLP(
        case.sizes,
        activation=case.activation,
        output_activation=case.output_activation,
        loss=case.loss,
        dtype=case.dtype,
        device=device,
        seed=7,
    )
    opt = gpubp.SGD(net, **case.optimizer)
    X, Y = case_data(case)
    X, Y = net.inputs(X), net.device.asarray(Y)  # on the device once, as fit does
    before = net.loss(net.predict(X), Y)
    losses = []
    for step in range(STEPS):
        rows = slice((step * case.batch) % case.samples, (step * case.batch) % case.samples + case.batch)
        trace = net.forward(X[rows])
        losses.append(net.loss(trace.output, Y[rows]))
        opt.step(net.backward(trace, Y[rows]))
    return {
        "losses": np.array(losses),
        "params": gpubp.to_numpy(net.params).copy(),
        "loss_on_all_data": (before, net.loss(net.predict(X), Y)),
    }


def relative_error(actual, expected) -> float:
    """max |actual − expected| / max |expected|: the parity policy's relative error."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), np.finfo(float).tiny))


def golden_path(case_name: str, device_kind: str, folder: Path = GOLDEN_DIR) -> Path:
    return Path(folder) / f"{case_name}.{device_kind}.npz"


def metadata(device) -> dict:
    """Where a recording was made: the device and the library versions."""
    cupy_version = None
    if device.kind == "cuda":
        cupy_version = device.xp.__version__
    return {
        "device": str(device),
        "device_name": device.name if device.kind == "cuda" else gpubp.backend.cpu_name(),
        "gpubp": gpubp.__version__,
        "numpy": np.__version__,
        "cupy": cupy_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "steps": STEPS,
    }


def record(device, folder: Path = GOLDEN_DIR) -> list[Path]:
    """Write one golden per case for `device` into `folder` (tests/golden/ by default); returns the paths written."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    written = []
    for case in CASES.values():
        result = run_case(case, device)
        path = golden_path(case.name, device.kind, folder)
        meta = metadata(device) | {"case": case.name, "dtype": case.dtype}
        np.savez(path, losses=result["losses"], params=result["params"])
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
        written.append(path)
    return written


def recordings() -> list[Path]:
    return sorted(GOLDEN_DIR.glob("*.npz"))
