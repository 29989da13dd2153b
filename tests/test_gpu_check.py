"""ci/gpu-check, the GPU runner's one command: its dry run wires every step end to end on the CPU."""

import importlib.machinery
import importlib.util
import json
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from .goldens import CASES, GOLDEN_DIR

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "ci" / "gpu-check"
STEPS = ["gpu-tests", "goldens", "nccl", "bench", "sklearn-fit", "host-streaming", "monitor-cost", "rest-of-suite"]
BENCHMARK_FILES = ["bench-cpu.json", "sklearn-fit-cpu.json", "host-streaming-cpu.json", "monitor-cost-cpu.json"]


def gpu_check(out, *args, timeout=240):
    command = [sys.executable, str(SCRIPT), "--dry-run", str(out), *map(str, args)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def summary(out) -> dict:
    return json.loads((Path(out) / "summary.json").read_text())


def committed_goldens() -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(GOLDEN_DIR.iterdir())}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One whole dry run (about 40 s on 2 cores), shared by the tests that read what it wrote."""
    out = tmp_path_factory.mktemp("gpu-check")
    before = committed_goldens()
    result = gpu_check(out)
    return out, result, before, committed_goldens()


def test_the_dry_run_passes_every_step_in_order_and_archives_each_log(dry_run):
    out, result, _, _ = dry_run
    assert result.returncode == 0, result.stdout + result.stderr
    report = summary(out)
    assert report["dry_run"] is True and report["device"] == "cpu" and report["budget_s"] == 480
    assert {"python", "numpy", "cupy", "torch", "gpubp"} <= set(report["versions"])
    assert [step["name"] for step in report["steps"]] == STEPS
    with tarfile.open(out / "logs.tar.gz") as tar:
        archived = set(tar.getnames())
    for step in report["steps"]:
        assert step["status"] in ("passed", "skipped"), step
        assert 0 <= step["seconds"] <= step["limit_s"], step
        assert step["log"] in archived, step
    gpu_tests, rest = report["steps"][0], report["steps"][-1]
    assert gpu_tests["status"] == "skipped" and gpu_tests["junit"] in archived  # no GPU in a dry run
    assert gpu_tests["counts"]["skipped"] > 0 and gpu_tests["counts"]["failed"] == gpu_tests["counts"]["errors"] == 0
    assert rest["status"] == "passed" and rest["counts"]["passed"] > 0 and rest["junit"] in archived
    text = (out / "summary.txt").read_text()
    assert text.startswith("ci/gpu-check, DRY RUN on the CPU, on cpu: every step that started passed or skipped.")
    assert all(re.search(rf"^  {name} +(passed|skipped) ", text, re.M) for name in STEPS), text
    assert "What to commit: nothing." in text


def test_the_dry_run_bundles_the_goldens_it_recorded_and_leaves_the_committed_ones_alone(dry_run):
    out, _, before, after = dry_run
    with tarfile.open(out / "goldens.tar.gz") as tar:
        names = sorted(tar.getnames())
    assert names == sorted(f"tests/golden/{case}.cpu.{ext}" for case in CASES for ext in ("npz", "json"))
    assert after == before  # same bytes, same mtimes: recorded elsewhere


def test_the_dry_run_writes_at_most_8_plain_files_and_each_benchmarks_json(dry_run):
    out, _, _, _ = dry_run
    entries = list(out.iterdir())
    assert all(p.is_file() for p in entries) and len(entries) <= 8
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in entries)
    assert {p.name for p in entries} == {"summary.json", "summary.txt", "logs.tar.gz", "goldens.tar.gz"} | set(
        BENCHMARK_FILES
    )
    for name in BENCHMARK_FILES:
        assert json.loads((out / name).read_text())["rows"], name


def test_a_tiny_budget_starts_no_step_but_still_writes_the_summary(tmp_path):
    result = gpu_check(tmp_path, "--budget", 5)
    assert result.returncode == 0, result.stdout + result.stderr  # not started is not a failure
    report = summary(tmp_path)
    assert [(s["name"], s["status"]) for s in report["steps"]] == [(name, "not started") for name in STEPS]
    assert "more than the 0 s left" in report["steps"][0]["detail"]
    assert "8 step(s) not started" in (tmp_path / "summary.txt").read_text()
    assert (tmp_path / "logs.tar.gz").exists()


def test_only_runs_the_chosen_steps_and_what_is_left_decides_the_rest(tmp_path):
    result = gpu_check(tmp_path, "--only", "nccl,rest-of-suite", "--budget", 70)
    assert result.returncode == 0, result.stdout + result.stderr
    status = {s["name"]: (s["status"], s["detail"]) for s in summary(tmp_path)["steps"]}
    assert status["nccl"] == ("passed", "every check passed")
    # 70 s less the 10 s kept for the archives and the time already spent: under the 60 s the rest needs
    assert status["rest-of-suite"][0] == "not started" and "it needs 60" in status["rest-of-suite"][1]
    assert status["bench"] == ("not started", "not chosen (--only)")


def test_an_unknown_step_and_an_unusable_outdir_are_refused(tmp_path):
    result = gpu_check(tmp_path, "--only", "lint")
    assert result.returncode == 2 and "--only takes step names (gpu-tests, goldens," in result.stderr
    (tmp_path / "a-file").write_text("")
    result = gpu_check(tmp_path / "a-file" / "out")
    assert result.returncode == 2 and "is not a writable folder" in result.stderr
    result = gpu_check(tmp_path)  # holds a-file, which would not come back with the summary
    assert result.returncode == 2 and "already holds a-file" in result.stderr


def test_sigterm_stops_the_running_step_and_still_writes_the_summary(tmp_path):
    command = [sys.executable, str(SCRIPT), "--dry-run", str(tmp_path)]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        for line in process.stdout:
            if "gpu-tests (limit" in line:
                break
        time.sleep(1)  # pytest is running by now
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    report = summary(tmp_path)
    assert report["interrupted"] == "SIGTERM"
    assert report["steps"][0]["status"] == "failed" and "interrupted (SIGTERM)" in report["steps"][0]["detail"]
    assert {s["status"] for s in report["steps"][1:]} == {"not started"}


def load_gpu_check(monkeypatch):
    """ci/gpu-check as a module (its file name has no .py)."""
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(SCRIPT))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("gpu_check", loader))
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # dataclasses look their module up there
    loader.exec_module(module)
    return module


def test_a_step_past_its_limit_is_stopped_with_everything_it_started(tmp_path, monkeypatch):
    gpu_check_module = load_gpu_check(monkeypatch)
    pid_file = tmp_path / "grandchild.pid"
    deaf = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(120)"  # only SIGKILL ends it
    spawn = (
        f"import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', {deaf!r}]); "
        f"open({str(pid_file)!r}, 'w').write(str(child.pid)); print('spawned', flush=True); time.sleep(120)"
    )
    step = gpu_check_module.Step("sleeper", 3, [sys.executable, "-c", spawn])
    outcome = gpu_check_module.run_step(step, 1, 3, tmp_path, gpu_check_module.child_environment(dry_run=True))
    assert outcome.status == "timed out" and outcome.detail.startswith("stopped at its limit of 3 s")
    assert 3 <= outcome.seconds < 20
    log = (tmp_path / "01-sleeper.log").read_text()
    assert "spawned" in log and "# exit status" in log
    assert ended(int(pid_file.read_text()))


def ended(pid: int, within: float = 5.0) -> bool:
    """Whether process `pid` is gone (or a zombie awaiting init) within a few seconds: SIGKILL takes a moment."""
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if stat.read_text().rpartition(") ")[2].startswith("Z"):
                return True
        except OSError:  # gone
            return True
        time.sleep(0.05)
    return False
