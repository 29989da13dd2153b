"""Devices and the array module `xp`: NumPy on the CPU, CuPy on an NVIDIA GPU.

This is the only module that imports cupy. It does so lazily, on the first
question about the GPU, so that `import gpubp` stays fast and works without it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
from dataclasses import dataclass
from types import ModuleType

import numpy

from .errors import ArgumentError, DeviceError, GpubpError

ENV_DEVICE = "GPUBP_DEVICE"
SPECS = ("auto", "cpu", "gpu", "cuda", "cuda:N")

_cupy: ModuleType | None = None
_cupy_import_error: str | None = None
_cupy_tried = False


def _import_cupy() -> ModuleType | None:
    """CuPy if it imports, else None with the reason kept in `_cupy_import_error`."""
    global _cupy, _cupy_import_error, _cupy_tried
    if not _cupy_tried:
        _cupy_tried = True
        try:
            import cupy

            _cupy = cupy
        except ImportError as e:
            missing = getattr(e, "name", None) == "cupy"
            _cupy_import_error = "CuPy is not installed" if missing else f"CuPy is installed but failed to import ({e})"
        except Exception as e:  # a broken CUDA install can raise anything at import
            _cupy_import_error = f"CuPy is installed but failed to import ({type(e).__name__}: {e})"
    return _cupy


def cuda_device_count() -> int:
    """How many CUDA devices CuPy can use; 0 when CuPy or the driver is missing."""
    cupy = _import_cupy()
    if cupy is None:
        return 0
    try:
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # CUDARuntimeError: no driver, driver too old, no device
        return 0


def gpu_unavailable_reason(index: int = 0) -> str | None:
    """Why cuda:`index` cannot be used, or None when it can.

    Tells apart the three cases a user fixes differently: CuPy missing,
    CuPy present but no driver or device, and an index out of range.
    """
    cupy = _import_cupy()
    if cupy is None:
        return _cupy_import_error
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return f"CuPy {cupy.__version__} is installed but found no usable CUDA driver or device ({e})"
    if count == 0:
        return f"CuPy {cupy.__version__} is installed but the driver reports no CUDA device"
    if index >= count:
        return f"cuda:{index} is out of range: {count} CUDA device(s) found (cuda:0 to cuda:{count - 1})"
    return None


def gpu_available(index: int = 0) -> bool:
    """True when CuPy imports and cuda:`index` is usable."""
    return gpu_unavailable_reason(index) is None


@dataclass(frozen=True)
class Device:
    """Where arrays live and compute runs: `kind` is "cpu" or "cuda"."""

    kind: str
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"

    @property
    def xp(self) -> ModuleType:
        """The array module: numpy for the CPU, cupy for CUDA."""
        return numpy if self.kind == "cpu" else _import_cupy()

    def activate(self):
        """A context in which new CuPy arrays and kernels go to this device."""
        if self.kind == "cpu":
            return contextlib.nullcontext()
        return self.xp.cuda.Device(self.index)

    def asarray(self, x, dtype=None):
        """`x` as an array on this device, copied only when it must move or change dtype."""
        if self.kind == "cpu":
            return numpy.asarray(to_numpy(x), dtype=dtype)
        with self.activate():
            return self.xp.asarray(x, dtype=dtype)

    @property
    def name(self) -> str:
        """A human-readable name: the GPU's model, or "cpu"."""
        if self.kind == "cpu":
            return "cpu"
        props = self.xp.cuda.runtime.getDeviceProperties(self.index)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)


CPU = Device("cpu")


def device(spec: str | Device = "auto") -> Device:
    """The Device for `spec`: "auto", "cpu", "gpu" or "cuda" (cuda:0), or "cuda:N".

    "auto" means the environment variable GPUBP_DEVICE when it is set, and
    otherwise cuda:0 if it is usable, else the CPU. Asking for a GPU that is
    not usable raises DeviceError saying why.
    """
    if isinstance(spec, Device):
        return spec
    if not isinstance(spec, str):
        raise ArgumentError(f"device must be a string such as {', '.join(SPECS)}, or a gpubp.Device; got {spec!r}")
    origin, given = "device", spec
    if spec.strip().lower() == "auto" and os.environ.get(ENV_DEVICE, "").strip():
        origin, given = f"the environment variable {ENV_DEVICE}", os.environ[ENV_DEVICE]
    text = given.strip().lower()
    if text == "auto":
        return Device("cuda", 0) if gpu_available(0) else CPU
    if text == "cpu":
        return CPU
    match = re.fullmatch(r"(?:gpu|cuda)(?::(\d+))?", text)
    if match is None:
        raise ArgumentError(f"{origin} must be one of {', '.join(SPECS)} (N a GPU index such as 0); got {given!r}")
    index = int(match.group(1) or 0)
    reason = gpu_unavailable_reason(index)
    if reason is not None:
        raise DeviceError(
            f"{origin} asks for cuda:{index}, which is not usable: {reason}. "
            "Install the GPU extra (pip install 'gpubp[cuda12]' or 'gpubp[cuda13]'), "
            "check the NVIDIA driver with nvidia-smi, or pass device='cpu'."
        )
    return Device("cuda", index)


def get_array_module(*arrays) -> ModuleType:
    """cupy if any of `arrays` lives on a GPU, else numpy."""
    for a in arrays:
        if type(a).__module__.partition(".")[0] == "cupy":
            return _import_cupy()
    return numpy


def device_of(x) -> Device:
    """The Device an array lives on."""
    if get_array_module(x) is numpy:
        return CPU
    return Device("cuda", x.device.id)


def to_numpy(x) -> numpy.ndarray:
    """`x` as a NumPy array on the host; a GPU array is copied back."""
    if get_array_module(x) is not numpy:
        return x.get()
    return numpy.asarray(x)


def cpu_name() -> str:
    """The CPU's model name, for reports (Linux's /proc/cpuinfo, else what platform knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> list[tuple[str, str]]:
    """The array libraries' versions, the devices, and why a GPU is missing, as rows."""
    cupy = _import_cupy()
    rows = [
        ("numpy", numpy.__version__),
        ("cupy", cupy.__version__ if cupy is not None else "not installed"),
        ("device cpu", f"{cpu_name()}, {os.cpu_count()} cores"),
    ]
    for i in range(cuda_device_count()):
        rows.append((f"device cuda:{i}", Device("cuda", i).name))
    reason = gpu_unavailable_reason(0)
    rows.append(("gpu", "available" if reason is None else f"unavailable: {reason}"))
    try:
        auto = str(device("auto"))
    except GpubpError as e:
        auto = f"error: {e}"
    if os.environ.get(ENV_DEVICE, "").strip():
        auto += f" (set by {ENV_DEVICE}={os.environ[ENV_DEVICE]})"
    rows.append(("device='auto' picks", auto))
    return rows
