"""The benchmark script keeps working: CI runs it once at a tiny size (a behaviour check, not a timing)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_script(name, *args, timeout=600, **kwargs):
    """benchmarks/`name` run with `args` in a fresh Python, its output captured."""
    command = [sys.executable, str(ROOT / "benchmarks" / name), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


def test_bench_tiny_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = run_script("bench.py", "--tiny", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "| config | gpubp s |" in result.stdout and "| tiny-b32-h16-t1 |" in result.stdout
    assert "blas: " in result.stdout and "OPENBLAS_CORETYPE: " in result.stdout
    report = json.loads(out.read_text())
    [row] = report["rows"]
    assert row["gpubp"] > 0 and row["floor"] > 0
    # Every peer was either measured, and has a ratio, or named as skipped, with the reason.
    assert set(row["ratios"]) == {"floor"} | {peer for peer in ("torch", "sklearn") if peer in row}
    for peer in ("torch", "sklearn"):
        assert (peer in row) != (peer in report["skipped"])
        if peer in report["skipped"]:
            assert f"{peer}: skipped ({report['skipped'][peer]})" in result.stdout


def test_bench_refuses_an_unknown_peer():
    result = run_script("bench.py", "--tiny", "--peers", "tensorflow", timeout=120)
    assert result.returncode == 2 and "--peers takes torch and sklearn" in result.stderr


def test_scaling_script_compares_one_process_with_two_ranks(tmp_path):
    from .test_distributed import environment, mpiexec

    mpiexec()  # skips (or fails in CI) without MPI
    out = tmp_path / "scaling.json"
    result = run_script("scaling.py", "--json", str(out), env=environment())
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    two = report["2"]
    assert two["ranks"] == 2 and two["alpha_s"] > 0 and two["beta_bytes_per_s"] > 0
    assert all(0 < row["allreduce_ms"] < row["step_ms"] for row in two["rows"])
    assert "| 1024 | 1024 | 2 | 1 |" in result.stdout


def test_sklearn_fit_benchmark_runs_and_reports_the_ratio(tmp_path):
    from .conftest import SKLEARN, require_module

    require_module("sklearn", SKLEARN)
    out = tmp_path / "fit.json"
    result = run_script("sklearn_fit.py", "--tiny", "--repeats", "1", "--json", str(out))
    assert result.returncode == 0, result.stderr
    [row] = json.loads(out.read_text())["rows"]
    assert row["device"] == "cpu" and row["gpubp"] > 0 and row["sklearn"] > 0
    assert f"| cpu | 784-256-10 | {row['gpubp']:.3f} | {row['sklearn']:.3f} |" in result.stdout


def test_monitor_cost_benchmark_runs_and_writes_the_rows_it_prints(tmp_path):
    out = tmp_path / "monitor.json"
    result = run_script("monitor_cost.py", "--tiny", "--json", out)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("| b")]
    assert [line.split(" | ")[:2] for line in lines] == [["| b64-h128", "1"], ["| b64-h128", "2"], ["| b256-h128", "1"]]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["pairs"] == 2
    for line, row in zip(lines, report["rows"], strict=True):
        assert line.startswith(f"| {row['config']} | {row['every']} | {row['plain_s']:.4f} | {row['cost']:+.1%} |")
        assert row["plain_s"] > 0 and row["cost_low"] <= row["cost"] <= row["cost_high"]
    assert report["rows"][0]["target"] == 0.05 and report["rows"][1]["target"] is None  # the goal is b64, every 1


def test_host_streaming_benchmark_runs_and_finds_the_same_weights(tmp_path):
    out = tmp_path / "streaming.json"
    result = run_script("host_streaming.py", "--tiny", "--rounds", "1", "--json", out)
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("| cpu |")]
    assert line.endswith("| yes |")
    [row] = json.loads(out.read_text())["rows"]
    assert row["device"] == "cpu" and row["same_weights"] is True and row["resident_s"] > 0 and row["streamed_s"] > 0
    assert line.startswith(f"| cpu | {row['resident_s']:.4f} | {row['streamed_s']:.4f} | {row['ratio']:.2f}× |")
