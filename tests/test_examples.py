"""The example scripts run, end to end, and do what they say."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name, *args):
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_xor_example_learns_xor():
    out = run_example("xor.py", "--device", "cpu", "--steps", "3000")
    assert "accuracy 100% on cpu" in out


def test_research_script_prints_every_layers_blame():
    out = run_example("research_script.py")
    losses = [float(line.split("E = ")[1]) for line in out.splitlines() if "E = " in line]
    assert len(losses) == 3 and losses[2] < losses[0]  # three steps, and the error went down
    assert out.count("blame δ") == 6  # two layers, three steps


def test_readme_research_script_runs_as_written():
    readme = (EXAMPLES.parent / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    losses = [float(line.split("E = ")[1]) for line in result.stdout.splitlines() if line.startswith("E = ")]
    assert len(losses) == 3 and losses[2] < losses[0]
    assert result.stdout.count("blame:") == 6
