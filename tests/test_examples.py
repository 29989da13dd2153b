"""The example scripts and the README's research script run, end to end, and do what they say."""

import subprocess
import sys
from pathlib import Path

import numpy as np

import gpubp

from .conftest import PLOT, SKLEARN, require_module
from .test_datasets import small_mnist

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(name, *args, cwd=None):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_xor_example_learns_xor():
    assert "accuracy 100% on cpu" in run_example("xor.py", "--device", "cpu", "--steps", "3000")


def test_backprop_by_hand_prints_the_worked_numbers():
    out = run_example("backprop_by_hand.py")
    # The same numbers as tests/test_hand_worked.py, where they are derived in comments.
    assert "0.751365" in out and "0.274811" in out  # ŷ and E
    assert "[0.138499]" in out and "[0.013368 0.014996]" in out  # output and hidden blame
    assert "[0.358916 0.408666]" in out  # Wo after the step
    before, after = 0.274811, float(out.split("error after the step: ")[1].split()[0])
    assert after < before


def test_custom_training_loop_inspects_the_deltas():
    out = run_example("custom_training_loop.py", "--steps", "120", "--device", "cpu")
    lines = [line for line in out.splitlines() if line.startswith("step")]
    assert len(lines) == 5 and all(len(line.split("layer:")[1].split()) == 3 for line in lines)  # 3 layers
    first, last = (float(line.split("E = ")[1].split()[0]) for line in (lines[0], lines[-1]))
    assert last < first


def test_digits_example_trains_and_saves(tmp_path):
    out = run_example("digits.py", "--epochs", "5", "--device", "cpu", "--save", "d.safetensors", cwd=tmp_path)
    accuracy = float(out.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 90
    assert gpubp.load(tmp_path / "d.safetensors", device="cpu").sizes == (64, 256, 10)


def test_cpu_vs_gpu_example_reports_parity_or_why_the_gpu_was_skipped():
    out = run_example("cpu_vs_gpu.py", "--steps", "5")
    reason = gpubp.gpu_unavailable_reason()
    if reason is None:
        assert out.count("within") == 2, out
    else:
        assert out.count(f"the GPU was skipped: {reason}") == 2


def test_mnist_example_on_small_generated_files(tmp_path):
    files, _ = small_mnist(np.random.default_rng(0), n_train=64, n_test=16)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    out = run_example("mnist.py", "--dir", str(tmp_path), "--epochs", "1", "--hidden", "8", "--device", "cpu")
    assert "MNIST test accuracy" in out


def readme_python_block(containing: str) -> str:
    readme = (ROOT / "README.md").read_text()
    blocks = [block.split("```", 1)[0] for block in readme.split("```python\n")[1:]]
    [block] = [b for b in blocks if containing in b]
    return block


def run_code(code, cwd=None):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result


def test_readme_research_script_runs_as_written():
    result = run_code(readme_python_block("net.backward("))
    losses = [float(line.split("E = ")[1]) for line in result.stdout.splitlines() if line.startswith("E = ")]
    assert len(losses) == 3 and losses[2] < losses[0]
    assert result.stdout.count("blame:") == 6


def test_readme_training_example_runs_as_written(tmp_path):
    result = run_code(readme_python_block("gpubp.fit("), cwd=tmp_path)
    assert float(result.stdout.split("best val_accuracy ")[1].split("%")[0]) > 90
    assert (tmp_path / "digits.safetensors").exists()


def test_sklearn_pipeline_example_searches_and_scores():
    require_module("sklearn", SKLEARN)
    out = run_example("sklearn_pipeline.py", "--device", "cpu", "--max-iter", "30")
    accuracy = float(out.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 90 and "on cpu" in out and "best: {'mlpclassifier__alpha'" in out


def test_vanishing_gradients_example_shows_nielsens_table(tmp_path):
    require_module("matplotlib", PLOT)
    out = run_example("vanishing_gradients.py", "--epochs", "5", "--plot", str(tmp_path / "v.png"))
    rows = [line for line in out.splitlines() if line.startswith("  [64, 30, 30, 30, 30, 10]")]
    sigmoid, relu = ([float(r) for r in row.split(": ")[1].split(", ")] for row in rows)
    assert len(sigmoid) == len(relu) == 3
    assert min(sigmoid) > 3  # each earlier sigmoid layer learns several times slower than the next
    assert all(0.5 < r < 2 for r in relu)  # ReLU with He's initialisation: within a small factor
    assert (tmp_path / "v.png").read_bytes()[:4] == b"\x89PNG"
