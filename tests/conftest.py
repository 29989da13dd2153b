"""Shared fixtures. The `device` fixture runs a test on the CPU and on the GPU.

Without a usable GPU the GPU case skips and says why (see `pytest -rs`);
GPUBP_REQUIRE_GPU=1, set by ci/test-gpu, turns that skip into a failure.
"""

import importlib
import os

import pytest

import gpubp

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


PLOT = "the plot extra (matplotlib) is not installed: pip install 'gpubp[plot]'"
SKLEARN = "the sklearn extra is not installed: pip install 'gpubp[sklearn]'"


def require_gpu(index: int = 0) -> None:
    """Skip (or, under GPUBP_REQUIRE_GPU=1, fail) unless cuda:`index` is usable."""
    reason = gpubp.gpu_unavailable_reason(index)
    if reason is None:
        return
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
