"""Shared fixtures. The `device` fixture runs a test on the CPU and on the GPU.

Without a usable GPU the GPU case skips and says why (see `pytest -rs`);
GPUBP_REQUIRE_GPU=1, set by ci/test-gpu, turns that skip into a failure.

A test not marked gpu runs on the CPU whatever the machine has: for it,
device="auto" (MLP's default, the CLI's, and that of any process it starts)
means the CPU. A test that needs a GPU carries @pytest.mark.gpu, so that
`pytest -m gpu` finds it and the pin leaves it alone.
"""

import importlib
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gpubp
from gpubp import backend

pytest_plugins = ["pytester"]  # tests/test_harness.py runs small suites of its own

REQUIRE_GPU = os.environ.get("GPUBP_REQUIRE_GPU") == "1"
IN_CI = os.environ.get("GPUBP_CI") == "1"  # set by .ci/run, which installs every optional tool


def require_tool(missing_reason: str | None) -> None:
    """Skip when a tool is missing (pytest -rs shows why), but fail in CI, where it must be there."""
    if missing_reason is None:
        return
    if IN_CI:
        pytest.fail(f"GPUBP_CI=1 but {missing_reason}")
    pytest.skip(missing_reason, allow_module_level=True)  # also from a test module's imports


def require_module(name: str, missing_reason: str):
    """The module `name`, imported; require_tool's skip (or, in CI, failure) with `missing_reason` when it is not."""
    try:
        return importlib.import_module(name)
    except ImportError:
        require_tool(missing_reason)


def installed(name: str) -> bool:
    """Whether module `name` can be imported, without importing it. For a dotted name whose parent package is
    absent (nvidia.nccl where no nvidia-* wheel is installed) find_spec raises instead of answering."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


_CAP = """
import resource


def cap_memory(headroom):  # the address space capped just above what the process already uses: a real MemoryError
    used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + headroom, resource.RLIM_INFINITY))
"""


def run_with_memory_capped(code: str) -> str:
    """The standard output of `code`, run in a fresh Python that has cap_memory(headroom) to call."""
    if not Path("/proc/self/statm").exists():
        pytest.skip("needs Linux's /proc to cap the address space")
    result = subprocess.run([sys.executable, "-c", _CAP + textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


PLOT = "the plot extra (matplotlib) is not installed: pip install 'gpubp[plot]'"
SKLEARN = "the sklearn extra is not installed: pip install 'gpubp[sklearn]'"


def require_gpu(index: int = 0) -> None:
    """Skip (or, under GPUBP_REQUIRE_GPU=1, fail) unless cuda:`index` is usable.

    A test that needs a second GPU skips on a machine with one usable GPU even under
    GPUBP_REQUIRE_GPU=1: a one-GPU runner is a GPU runner, not a broken one.
    """
    reason = backend.gpu_unavailable_reason(index)
    if reason is None:
        return
    count = backend.cuda_device_count()
    if 0 < count <= index and backend.gpu_available(0):
        pytest.skip(f"needs {index + 1} GPUs (cuda:{index}); this machine has {count}")
    if REQUIRE_GPU:
        pytest.fail(f"GPUBP_REQUIRE_GPU=1 but no usable GPU: {reason}")
    pytest.skip(f"no usable GPU: {reason}")


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def device(request):
    if request.param == "gpu":
        require_gpu()
    return gpubp.device(request.param)


@pytest.fixture(autouse=True)
def _no_tf32(monkeypatch):
    # Parity tolerances assume full float32 matrix products; CuPy uses TF32 only when CUPY_TF32=1.
    monkeypatch.delenv("CUPY_TF32", raising=False)


@pytest.fixture(autouse=True)
def _cpu_unless_marked_gpu(request, monkeypatch):
    # On a GPU machine "auto" would pick cuda:0, and a test written for NumPy arrays would get CuPy's.
    if request.node.get_closest_marker("gpu") is None:
        monkeypatch.setenv(backend.ENV_DEVICE, "cpu")


def pytest_report_header(config):
    # Asked once, before any test: the run's log says at its top whether the GPU tests can run, and why not.
    reason = backend.gpu_unavailable_reason(0)
    return f"gpubp: {'cuda:0 is usable' if reason is None else f'no usable GPU: {reason}'}"
