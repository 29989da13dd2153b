"""Device selection, the array module, and the fallbacks when the GPU is missing."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import gpubp
from gpubp import backend

from .conftest import installed, require_gpu, require_tool

HAS_CUPY = installed("cupy")


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter, so import-time behaviour is really tested."""
    environment = {k: v for k, v in os.environ.items() if k != backend.ENV_DEVICE} | env
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)


def test_cpu_device():
    dev = gpubp.device("cpu")
    assert dev.kind == "cpu" and str(dev) == "cpu" and dev.xp is np
    assert gpubp.device(dev) is dev


def test_auto_picks_the_gpu_exactly_when_one_is_usable(monkeypatch):
    monkeypatch.delenv(backend.ENV_DEVICE, raising=False)
    assert str(gpubp.device("auto")) == ("cuda:0" if gpubp.gpu_available() else "cpu")
    assert str(gpubp.device()) == str(gpubp.device("auto"))


@pytest.mark.parametrize("spec", ["tpu", "cuda:-1", "cuda:x", "gpu0", ""])
def test_bad_specs_name_the_choices(spec):
    with pytest.raises(gpubp.ArgumentError, match=r"device must be one of auto, cpu, gpu, cuda, cuda:N.*got"):
        gpubp.device(spec)


def test_non_string_spec_is_refused():
    with pytest.raises(gpubp.ArgumentError, match="device must be a string"):
        gpubp.device(0)


def test_env_variable_sets_what_auto_means(monkeypatch):
    monkeypatch.setenv(backend.ENV_DEVICE, "cpu")
    assert str(gpubp.device("auto")) == "cpu"
    assert str(gpubp.device("cpu")) == "cpu"  # an explicit spec still wins
    monkeypatch.setenv(backend.ENV_DEVICE, "quantum")
    with pytest.raises(gpubp.ArgumentError, match="GPUBP_DEVICE must be one of .* got 'quantum'"):
        gpubp.device("auto")


def test_env_asking_for_a_missing_gpu_says_where_the_request_came_from(monkeypatch):
    if gpubp.gpu_available():
        pytest.skip("a GPU is usable here, so GPUBP_DEVICE=gpu is satisfied")
    monkeypatch.setenv(backend.ENV_DEVICE, "gpu")
    with pytest.raises(gpubp.DeviceError, match="GPUBP_DEVICE asks for cuda:0"):
        gpubp.device("auto")


def test_cupy_installed_without_a_gpu_falls_back_and_explains():
    require_tool(None if HAS_CUPY else "CuPy is not installed (pip install 'gpubp[cuda12]'; CI installs it)")
    if gpubp.gpu_available():
        pytest.skip("a GPU is usable here: this test is about machines without one")
    reason = gpubp.gpu_unavailable_reason()
    assert "CuPy" in reason and "installed" in reason and "driver" in reason
    assert str(gpubp.device("auto")) == "cpu"
    with pytest.raises(gpubp.DeviceError) as info:
        gpubp.device("gpu")
    message = str(info.value)
    assert reason in message
    assert "gpubp[cuda12]" in message and "nvidia-smi" in message and "device='cpu'" in message
    assert isinstance(info.value, RuntimeError)


def test_a_driver_without_the_cuda_libraries_falls_back_and_names_the_library(monkeypatch, capsys):
    # Staged: the driver sees one GPU (getDeviceCount needs nothing else), while cuBLAS is really
    # missing here, as on a machine with plain cupy-cuda12x and only the NVIDIA driver.
    require_tool(None if HAS_CUPY else "CuPy is not installed (pip install 'gpubp[cuda12]'; CI installs it)")
    if gpubp.gpu_available():
        pytest.skip("a GPU is usable here: this test is about machines whose CUDA libraries are missing")
    import cupy

    monkeypatch.setattr(cupy.cuda.runtime, "getDeviceCount", lambda: 1)
    monkeypatch.setattr(backend, "_probed", {})
    reason = gpubp.gpu_unavailable_reason()
    assert reason.startswith(f"CuPy {cupy.__version__} sees cuda:0, but ")
    try:
        from cupy_backends.cuda.libs import cublas  # noqa: F401
    except ImportError:  # as in CI: the probe must name the library and the install line
        assert "the CUDA library cuBLAS did not load (" in reason and "libcublas" in reason
        assert "pip install 'gpubp[cuda12]' (it brings cupy-cuda12x[ctk])" in reason and "CUDA_PATH" in reason
    assert str(gpubp.device("auto")) == "cpu"
    with pytest.raises(gpubp.DeviceError, match="which is not usable: CuPy .* sees cuda:0, but"):
        gpubp.device("gpu")
    from gpubp import cli

    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"unavailable: {reason}" in out and "device='auto' picks  cpu" in out


def test_without_nccl_the_nccl_backend_says_what_to_install():
    require_tool(None if HAS_CUPY else "CuPy is not installed (pip install 'gpubp[cuda12]'; CI installs it)")
    if installed("nvidia.nccl"):
        pytest.skip("the NCCL wheel is installed here: this test is about machines without it")
    message = "needs the NCCL library, which CuPy did not find: pip install 'gpubp[cuda12-nccl]'"
    with pytest.raises(gpubp.DeviceError, match=re.escape(message)):
        backend.nccl()
    with pytest.raises(gpubp.DeviceError, match=re.escape("(it brings nvidia-nccl-cu12), or pass backend='mpi'")):
        gpubp.distributed.NCCL(gpubp.device("cpu"))  # refused before MPI or the device is touched


def test_a_warning_while_cupy_imports_does_not_make_the_gpu_unusable():
    # Under -W error (and pytest's filterwarnings) a warning from CuPy's import, such as the CUDA library
    # loader's notes on CUDA_PATH, would otherwise become "CuPy failed to import" for the whole process.
    require_tool(None if HAS_CUPY else "CuPy is not installed (pip install 'gpubp[cuda12]'; CI installs it)")
    code = (
        "import importlib.abc, sys, warnings\n"
        "class Warns(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'cupy':\n"
        "            warnings.warn('a note from the CUDA library loader', UserWarning)\n"
        "sys.meta_path.insert(0, Warns())\n"
        "from gpubp import backend\n"
        "print(backend._import_cupy() is not None, backend._cupy_import_error)\n"
    )
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "None"]
    assert "UserWarning: a note from the CUDA library loader" in result.stderr  # shown, not swallowed


def test_installed_answers_for_a_module_whose_parent_package_is_absent():
    # As nvidia.nccl where CuPy uses a system CUDA toolkit and no nvidia-* wheel is installed.
    assert installed("numpy.linalg") and not installed("numpy.no_such_module")
    assert not installed("gpubp_absent_package.nccl")


def test_cupy_is_installed_in_ci():
    # .ci/run installs cupy-cuda12x so that the fallback above is tested for real.
    require_tool(None if HAS_CUPY else "CuPy is not installed (pip install 'gpubp[cuda12]')")
    import cupy

    assert gpubp.backend._import_cupy() is cupy


def test_cupy_missing_falls_back_and_explains():
    # sys.modules["cupy"] = None makes `import cupy` raise ImportError, as on a machine without it.
    result = run_python(
        "import sys; sys.modules['cupy'] = None\n"
        "import gpubp\n"
        "print(gpubp.gpu_unavailable_reason()); print(gpubp.device('auto'))\n"
        "try:\n    gpubp.device('cuda:1')\nexcept gpubp.DeviceError as e:\n    print(e)\n"
    )
    assert result.returncode == 0, result.stderr
    reason, auto, error = result.stdout.splitlines()
    assert reason == "CuPy is not installed"
    assert auto == "cpu"
    assert error.startswith("device asks for cuda:1, which is not usable: CuPy is not installed.")
    assert "pip install 'gpubp[cuda12]'" in error


def test_import_is_fast_and_does_not_import_cupy():
    result = run_python(
        "import sys, time; t = time.perf_counter(); import gpubp\n"
        "print(time.perf_counter() - t); print('cupy' in sys.modules)"
    )
    assert result.returncode == 0, result.stderr
    seconds, cupy_loaded = result.stdout.split()
    assert cupy_loaded == "False"
    assert float(seconds) < 2.0


@pytest.mark.gpu
def test_index_out_of_range():
    require_gpu()
    count = backend.cuda_device_count()
    reason = gpubp.gpu_unavailable_reason(count)
    assert reason.startswith(f"cuda:{count} is out of range: {count} CUDA device(s) found")
    with pytest.raises(gpubp.DeviceError, match="out of range"):
        gpubp.device(f"cuda:{count}")


def test_arrays_move_to_the_device_and_back(device):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    on_device = device.asarray(host)
    assert gpubp.get_array_module(on_device) is device.xp
    assert gpubp.device_of(on_device) == device
    back = gpubp.to_numpy(on_device)
    assert type(back) is np.ndarray
    np.testing.assert_array_equal(back, host)


def test_asarray_copies_only_when_it_must():
    host = np.ones((2, 2), dtype=np.float32)
    assert np.shares_memory(gpubp.device("cpu").asarray(host), host)
    assert gpubp.device("cpu").asarray(host, dtype=np.float64).dtype == np.float64
    assert gpubp.get_array_module(host) is np
    assert gpubp.get_array_module([1, 2]) is np


def test_only_a_gpu_converts_long_double_on_the_host():
    gpu = gpubp.Device("cuda", 0)  # a description only: nothing here touches a GPU
    assert gpubp.backend.storable_dtype(np.longdouble, gpu) == np.float64
    assert gpubp.backend.storable_dtype(np.longdouble, gpubp.backend.CPU) == np.longdouble
    for device in (gpu, gpubp.backend.CPU):
        assert gpubp.backend.storable_dtype(">f4", device) == np.dtype("<f4")  # native byte order
        assert gpubp.backend.storable_dtype(np.int16, device) == np.int16


@pytest.mark.gpu
def test_cublas_failing_to_allocate_counts_as_out_of_memory():
    require_gpu()  # CuPy's CUBLASError exists only where cuBLAS loads
    from cupy_backends.cuda.libs import cublas

    assert gpubp.backend.is_out_of_memory(cublas.CUBLASError(3))  # CUBLAS_STATUS_ALLOC_FAILED
    assert not gpubp.backend.is_out_of_memory(cublas.CUBLASError(7))  # CUBLAS_STATUS_INVALID_VALUE
