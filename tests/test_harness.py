"""The test harness itself: tests not marked gpu stay on the CPU on any machine, tests that need a GPU
say so with the mark, and a one-GPU runner skips what needs two."""

import ast
import os
from pathlib import Path

import pytest

import gpubp
from gpubp import backend

from . import conftest

TESTS = Path(__file__).parent


def test_a_test_not_marked_gpu_runs_on_the_cpu_where_a_gpu_is_usable(monkeypatch):
    monkeypatch.setattr(backend, "gpu_unavailable_reason", lambda index=0: None)  # staged: cuda:0 computes
    assert backend.gpu_available(0)
    assert gpubp.device("auto") == backend.CPU  # without the pin, "auto" would pick cuda:0 here
    assert gpubp.MLP([2, 3, 2]).device == backend.CPU
    assert os.environ[backend.ENV_DEVICE] == "cpu"  # and so does every process a test starts


def test_the_pin_leaves_tests_marked_gpu_alone(pytester, monkeypatch):
    monkeypatch.setenv(backend.ENV_DEVICE, "cuda:7")  # what a GPU runner might set for the whole run
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    pytester.makeconftest("from tests.conftest import _cpu_unless_marked_gpu  # noqa: F401\n")
    pytester.makepyfile(
        """
        import os
        import pytest

        def test_plain():
            assert os.environ["GPUBP_DEVICE"] == "cpu"

        @pytest.mark.gpu
        def test_marked():
            assert os.environ["GPUBP_DEVICE"] == "cuda:7"

        @pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
        def device(request):
            return request.param

        def test_each_device(device):
            assert os.environ["GPUBP_DEVICE"] == ("cpu" if device == "cpu" else "cuda:7")
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=4)


def test_a_second_gpu_skips_on_a_one_gpu_runner_even_when_gpus_are_required(monkeypatch):
    monkeypatch.setattr(conftest, "REQUIRE_GPU", True)
    monkeypatch.setattr(backend, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(
        backend, "gpu_unavailable_reason", lambda index=0: None if index == 0 else f"cuda:{index} is out of range"
    )
    conftest.require_gpu(0)  # the one GPU is there
    with pytest.raises(pytest.skip.Exception, match=r"needs 2 GPUs \(cuda:1\); this machine has 1"):
        conftest.require_gpu(1)
    # No usable GPU at all is still a failure under GPUBP_REQUIRE_GPU=1, for cuda:1 as for cuda:0.
    monkeypatch.setattr(backend, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(backend, "gpu_unavailable_reason", lambda index=0: "CuPy is not installed")
    for index in (0, 1):
        with pytest.raises(pytest.fail.Exception, match="GPUBP_REQUIRE_GPU=1 but no usable GPU: CuPy is not"):
            conftest.require_gpu(index)


def _is_gpu_mark(node) -> bool:
    """Whether a decorator or pytestmark entry is pytest.mark.gpu (called or not)."""
    node = node.func if isinstance(node, ast.Call) else node
    return isinstance(node, ast.Attribute) and node.attr == "gpu" and ast.unparse(node.value) == "pytest.mark"


def unmarked_gpu_tests(source: str) -> list[str]:
    """The test functions in `source` that call require_gpu but carry no @pytest.mark.gpu."""
    tree = ast.parse(source)
    module_marked = any(
        isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
        and any(_is_gpu_mark(n) for n in ast.walk(node.value))
        for node in tree.body
    )
    found = []
    for node in tree.body:
        if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
            continue
        calls = any(
            isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "require_gpu"
            for n in ast.walk(node)
        )
        if calls and not module_marked and not any(_is_gpu_mark(d) for d in node.decorator_list):
            found.append(node.name)
    return found


def test_every_test_that_asks_for_a_gpu_is_marked_gpu():
    # pytest -m gpu (ci/gpu-check's first step) finds a GPU test by its mark alone.
    unmarked = {p.name: unmarked_gpu_tests(p.read_text()) for p in sorted(TESTS.glob("test_*.py"))}
    assert {name: tests for name, tests in unmarked.items() if tests} == {}


def test_the_mark_check_sees_a_missing_mark():
    plain = "def test_a():\n    require_gpu()\n"
    marked = "import pytest\n@pytest.mark.gpu\ndef test_a():\n    require_gpu()\n"
    by_module = "import pytest\npytestmark = [pytest.mark.gpu]\ndef test_a():\n    require_gpu(1)\n"
    assert unmarked_gpu_tests(plain) == ["test_a"]
    assert unmarked_gpu_tests(marked) == unmarked_gpu_tests(by_module) == []
