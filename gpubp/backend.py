"""Devices and the array module `xp`: NumPy on the CPU, CuPy on an NVIDIA GPU.

This is the only module that imports cupy. It does so lazily, on the first
question about the GPU, so that `import gpubp` stays fast and works without it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import re
import warnings
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
            with _warnings_shown():
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

    Tells apart the cases a user fixes differently: CuPy missing, CuPy present
    but no driver or device, an index out of range, and a device the driver
    sees but CuPy cannot compute on because the CUDA libraries (cuBLAS, NVRTC)
    are missing. The last is found by a probe: one tiny matrix product and one
    elementwise kernel, run once per process and device.
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
    if index not in _probed:
        with _warnings_shown():
            _probed[index] = _probe(cupy, index)
    return _probed[index]


@contextlib.contextmanager
def _warnings_shown():
    """Warnings shown, never raised: a warning from CuPy or the CUDA library loader (under python -W error,
    or pytest's filterwarnings) says something about the setup, but the answer to "is the GPU usable"
    is kept for the whole process, and must not be "no" because of it."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        yield


_probed: dict[int, str | None] = {}  # device index: what the probe found (None: it computes)


def cuda_major() -> str:
    """ "12" or "13": the CUDA major version of the installed CuPy wheel, for install lines."""
    from importlib import metadata

    for major in ("13", "12"):
        try:
            metadata.version(f"cupy-cuda{major}x")
            return major
        except metadata.PackageNotFoundError:
            continue
    return "12"


def _probe(cupy, index: int) -> str | None:
    """None when cuBLAS and NVRTC load and a matrix product and a compiled kernel give the right numbers."""
    major = cuda_major()
    fix = (
        f"install them with pip install 'gpubp[cuda{major}]' (it brings cupy-cuda{major}x[ctk]), "
        "or install a CUDA toolkit and point CUDA_PATH at it"
    )
    for library in ("cublas", "nvrtc"):
        try:
            importlib.import_module(f"cupy_backends.cuda.libs.{library}")
        except Exception as e:  # ImportError: Failure finding "libcublasLt.so.12" ...
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return (
                f"CuPy {cupy.__version__} sees cuda:{index}, but the CUDA library {_LIBRARY_NAMES[library]} "
                f"did not load ({first}): {fix}"
            )
    try:
        with cupy.cuda.Device(index):
            a = cupy.full((2, 2), 1.5, dtype=numpy.float32)
            product = (a @ a) * 2 + 1  # cuBLAS, then kernels compiled by NVRTC
            ok = bool((product.get() == 10).all())
    except Exception as e:
        return (
            f"CuPy {cupy.__version__} sees cuda:{index}, but a first computation on it failed ({type(e).__name__}: {e})"
        )
    if not ok:
        return f"CuPy {cupy.__version__} sees cuda:{index}, but a 2×2 matrix product on it gave wrong numbers"
    return None


_LIBRARY_NAMES = {"cublas": "cuBLAS", "nvrtc": "NVRTC"}


def nccl():
    """CuPy's NCCL module, for multi-GPU training; DeviceError saying what to install when NCCL is missing.

    CuPy never imports cupy.cuda.nccl by itself, and that module only warns when
    the NCCL library is missing, so the check is made here.
    """
    cupy = _import_cupy()
    if cupy is None:
        raise DeviceError(f"the NCCL backend needs CuPy, and {_cupy_import_error}: pip install 'gpubp[cuda12-nccl]'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CuPy's own warning would repeat what the error below says
        module = importlib.import_module("cupy.cuda.nccl")
    if not getattr(module, "available", False):
        major = cuda_major()
        raise DeviceError(
            f"the NCCL backend (multi-GPU training) needs the NCCL library, which CuPy did not find: "
            f"pip install 'gpubp[cuda{major}-nccl]' (it brings nvidia-nccl-cu{major}), or pass backend='mpi'"
        )
    return module


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
        """`x` as an array on this device, copied only when it must move or change dtype.
        Host data in a dtype the GPU lacks is converted on the host first (see storable_dtype)."""
        if self.kind == "cpu":
            return numpy.asarray(to_numpy(x), dtype=dtype)
        if dtype is None and isinstance(x, numpy.ndarray):
            x = x.astype(storable_dtype(x.dtype, self), copy=False)  # a copy only where the dtype changes
        with self.activate():
            return self.xp.asarray(x, dtype=dtype)

    @property
    def bus_id(self) -> str:
        """Which physical device this is: the GPU's PCI bus id, the same in every process of the
        machine whatever index CUDA_VISIBLE_DEVICES gives it there; "cpu" for the CPU."""
        if self.kind == "cpu":
            return "cpu"
        return self.xp.cuda.Device(self.index).pci_bus_id

    @property
    def name(self) -> str:
        """A human-readable name: the GPU's model, or "cpu"."""
        if self.kind == "cpu":
            return "cpu"
        props = self.xp.cuda.runtime.getDeviceProperties(self.index)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)


CPU = Device("cpu")


def storable_dtype(dtype, device: Device) -> numpy.dtype:
    """The dtype in which host data of `dtype` goes to `device`: in native byte order (GPUs take no
    other), and on a GPU long double (NumPy's float128 on most Linux machines, which CuPy has no type
    for) as float64, which holds every number a float32 or float64 net computes with."""
    dtype = numpy.dtype(dtype).newbyteorder("=")
    return numpy.dtype(numpy.float64) if device.kind != "cpu" and dtype.char == "g" else dtype


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


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` means the device ran out of memory.

    NumPy's MemoryError and CuPy's OutOfMemoryError (a MemoryError), and cuBLAS failing
    to allocate its workspace, which CuPy raises as CUBLASError(CUBLAS_STATUS_ALLOC_FAILED).
    """
    if isinstance(error, MemoryError):
        return True
    return type(error).__name__ == "CUBLASError" and (
        getattr(error, "status", None) == _CUBLAS_STATUS_ALLOC_FAILED or "ALLOC_FAILED" in str(error)
    )


_CUBLAS_STATUS_ALLOC_FAILED = 3  # cublasStatus_t in cublas_api.h


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


def all_finite(xp, a) -> bool:
    """Whether every number in `a` is finite, with no array as large as `a`: NaN and ±inf
    reach the smallest or the largest value, and two reductions find them."""
    return bool(xp.isfinite(xp.stack([a.min(), a.max()])).all())


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
        try:
            rows.append((f"device cuda:{i}", Device("cuda", i).name))
        except Exception as e:  # the driver counts it but will not describe it
            rows.append((f"device cuda:{i}", f"unreadable ({type(e).__name__}: {e})"))
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
