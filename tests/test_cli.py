"""The `gpubp` command line, run as a real process."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import gpubp

from .conftest import PLOT, require_module


def environment(**env):
    return {k: v for k, v in os.environ.items() if k != "GPUBP_DEVICE"} | env


def gpubp_cli(*args, cwd=None, **env):
    return subprocess.run(
        [sys.executable, "-m", "gpubp", *args],
        capture_output=True,
        text=True,
        env=environment(**env),
        timeout=300,
        cwd=cwd,
    )


def assert_clean_error(result, message):
    """One line on stderr naming the problem (after any progress), status 2, and no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("gpubp: error: ") and message in last, result.stderr


def test_info_reports_versions_devices_and_the_gpu_reason():
    result = gpubp_cli("info")
    assert result.returncode == 0, result.stderr
    # each line is "key  value", the keys padded to one width
    rows = {key.strip(): value.strip() for key, value in (line.split("  ", 1) for line in result.stdout.splitlines())}
    assert rows["gpubp"] == gpubp.__version__
    assert rows["numpy"] == np.__version__
    assert rows["device cpu"] == f"{gpubp.backend.cpu_name()}, {os.cpu_count()} cores"
    assert rows["python"] == sys.version.split()[0] and rows["blas"]
    reason = gpubp.gpu_unavailable_reason()
    if reason is None:
        assert rows["gpu"] == "available" and "device cuda:0" in rows
    else:
        assert rows["gpu"] == f"unavailable: {reason}"
    assert rows["device='auto' picks"] == str(gpubp.device("auto"))


def test_info_shows_a_bad_device_variable_without_crashing():
    result = gpubp_cli("info", GPUBP_DEVICE="tpu")
    assert result.returncode == 0, result.stderr
    assert "device='auto' picks  error: the environment variable GPUBP_DEVICE must be one of" in result.stdout


def test_version_flag():
    result = gpubp_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"gpubp {gpubp.__version__}"


def test_unknown_command_exits_2_with_usage():
    result = gpubp_cli("fly")
    assert result.returncode == 2
    assert "invalid choice: 'fly'" in result.stderr and "usage: gpubp" in result.stderr


# --- train, eval, predict ---------------------------------------------------------


def test_train_with_no_arguments_learns_digits(tmp_path):
    started = time.perf_counter()
    result = gpubp_cli("train", cwd=tmp_path)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    summary = result.stdout.splitlines()[-2]
    accuracy = float(summary.split("test accuracy ")[1].split("%")[0]) / 100
    assert accuracy >= 0.97, summary
    assert f"device {gpubp.device('auto')}" in summary
    epoch_lines = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 40 and "val_accuracy" in epoch_lines[-1]  # not a TTY: plain lines
    assert result.stdout.splitlines()[-1] == "saved the model to gpubp-digits.safetensors"
    saved = gpubp.load_checkpoint(tmp_path / "gpubp-digits.safetensors", device="cpu")
    assert saved.epoch == 40 and saved.net.sizes == (64, 256, 10)
    print(f"gpubp train with no arguments: {accuracy:.2%} test accuracy in {seconds:.1f} s")


def test_train_options_log_and_resume(tmp_path):
    args = [
        "train",
        "--data",
        "spirals",
        "--layers",
        "16,8",
        "--activation",
        "tanh",
        "--epochs",
        "4",
        "--batch-size",
        "16",
        "--lr",
        "0.05",
        "--save",
        "s.safetensors",
        "--log",
        "run.jsonl",
        "--no-progress",
    ]
    result = gpubp_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert [r.get("epoch") for r in records[:-1]] == [1, 2, 3, 4]
    assert {"test_loss", "test_accuracy", "device", "seconds"} <= set(records[-1])
    net = gpubp.load(tmp_path / "s.safetensors", device="cpu")
    assert net.sizes == (2, 16, 8, 3) and net.activation.name == "tanh"

    result = gpubp_cli("train", "--resume", "s.safetensors", "--epochs", "6", "--log", "run.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    epochs = [json.loads(line).get("epoch") for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, None, 5, 6, None]  # the resumed run appends epochs 5 and 6
    assert gpubp.load_checkpoint(tmp_path / "s.safetensors", device="cpu").epoch == 6
    result = gpubp_cli("train", "--resume", "s.safetensors", "--epochs", "6", cwd=tmp_path)
    assert_clean_error(result, "has finished epoch 6 already; pass a larger --epochs")


def test_train_plots_the_curves(tmp_path):
    require_module("matplotlib", PLOT)
    result = gpubp_cli("train", "--data", "xor", "--epochs", "3", "--plot", "curves.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.stdout.splitlines()[-1] == "saved the model to gpubp-xor.safetensors, the curves to curves.png"


def test_plot_without_matplotlib_says_what_to_install(tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from gpubp.cli import main\n"
        "sys.exit(main(['train', '--data', 'xor', '--epochs', '1', '--plot', 'p.png']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=environment(), timeout=120
    )
    assert_clean_error(result, "plotting needs matplotlib: pip install 'gpubp[plot]'")
    assert list(tmp_path.iterdir()) == []  # refused before any training or saving


def test_eval_and_predict(tmp_path):
    result = gpubp_cli("train", "--data", "digits", "--epochs", "5", "--save", "d.safetensors", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trained_accuracy = result.stdout.split("test accuracy ")[1].split("%")[0]
    result = gpubp_cli("eval", "d.safetensors", "--data", "digits", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"accuracy {trained_accuracy}%" in result.stdout  # the same test rows as training held out

    X, y = gpubp.datasets.digits()
    np.save(tmp_path / "rows.npy", X[:20])
    np.savetxt(tmp_path / "rows.csv", X[:20], delimiter=",", header=",".join(f"px{i}" for i in range(64)), comments="")
    np.savetxt(tmp_path / "plain.csv", X[:20] * 1e-3, delimiter=",")  # no header; first field 0.000e+00
    assert gpubp_cli("predict", "d.safetensors", "rows.npy", "--out", "p.npy", cwd=tmp_path).returncode == 0
    result = gpubp_cli("predict", "d.safetensors", "rows.csv", "--out", "p.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    said = result.stdout.splitlines()
    assert said[0].startswith("read 20 rows of 64 values from rows.csv; skipped line 1 (a header: 'px0,px1,px2,")
    assert said[1:] == ["wrote 20 predictions to p.csv, one per row read, in order"]
    result = gpubp_cli("predict", "d.safetensors", "plain.csv", "--out", "plain.npy", cwd=tmp_path)
    assert result.returncode == 0 and "read 20 rows of 64 values from plain.csv\nwrote 20 " in result.stdout
    assert np.load(tmp_path / "plain.npy").shape == (20, 10)
    outputs = np.load(tmp_path / "p.npy")
    assert outputs.shape == (20, 10)
    np.testing.assert_allclose(outputs.sum(axis=1), 1, rtol=1e-5)
    table = (tmp_path / "p.csv").read_text().splitlines()
    assert table[0] == "prediction," + ",".join(f"p{k}" for k in range(10))
    predicted = [int(line.split(",")[0]) for line in table[1:]]
    assert predicted == outputs.argmax(axis=1).tolist()
    assert np.mean(np.array(predicted) == y[:20]) >= 0.8


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "missing.csv"], "data file 'missing.csv' does not exist"),
        (["train", "--data", "imagenet"], "data must be one of xor, spirals, digits, mnist"),
        (["train", "--data", "xor", "--lr", "-1"], "lr must be a finite number > 0; got -1.0"),
        (["train", "--data", "xor", "--device", "tpu"], "device must be one of auto, cpu, gpu, cuda, cuda:N"),
        (["train", "--resume", "nothing.safetensors"], "checkpoint 'nothing.safetensors' does not exist"),
        (["eval", "nothing.safetensors"], "checkpoint 'nothing.safetensors' does not exist"),
        (["train", "--data", "mnist", "--mnist-dir", "."], "pass download=True"),
    ],
)
def test_errors_are_one_clear_line_with_status_2(tmp_path, args, message):
    assert_clean_error(gpubp_cli(*args, cwd=tmp_path), message)


def test_data_that_does_not_fit_the_model(tmp_path):
    assert gpubp_cli("train", "--data", "xor", "--epochs", "1", "--save", "x.safetensors", cwd=tmp_path).returncode == 0
    assert_clean_error(
        gpubp_cli("eval", "x.safetensors", "--data", "digits", cwd=tmp_path),
        "the data has 64 features but the model takes 2",
    )
    np.save(tmp_path / "wide.npy", np.zeros((3, 5)))
    assert_clean_error(
        gpubp_cli("predict", "x.safetensors", "wide.npy", "--out", "p.csv", cwd=tmp_path),
        "must have 2 columns for this model; got shape (3, 5)",
    )
    assert_clean_error(
        gpubp_cli("predict", "x.safetensors", "wide.npy", "--out", "p.txt", cwd=tmp_path),
        "--out must end in .csv or .npy",
    )


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--layers", "64,x", "expected widths separated by commas"),
        ("--epochs", "0", "expected a whole number ≥ 1; got '0'"),
        ("--batch-size", "-3", "expected a whole number ≥ 1; got '-3'"),
        ("--val-size", "1.5", "expected a fraction from 0 up to 1"),
        ("--activation", "softmax", "invalid choice: 'softmax'"),
    ],
)
def test_bad_option_values_exit_2_with_usage(tmp_path, option, value, message):
    result = gpubp_cli("train", option, value, cwd=tmp_path)
    assert result.returncode == 2 and f"argument {option}: {message}" in result.stderr
    assert "usage: gpubp train" in result.stderr and "Traceback" not in result.stderr


def test_ctrl_c_keeps_the_last_epoch_and_exits_130(tmp_path):
    # Started with SIGINT ignored, as a shell starts its background jobs (`ci/test-cpu &`): Ctrl-C must work anyway.
    process = subprocess.Popen(
        [sys.executable, "-m", "gpubp", "train", "--epochs", "100000", "--save", "run.safetensors", "--no-progress"],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    path = tmp_path / "run.safetensors"
    deadline = time.monotonic() + 120
    while not path.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # a few more epochs
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted by SIGINT; the last completed epoch (" in stderr and ") is saved in run.safetensors" in stderr
    assert "gpubp train --resume run.safetensors" in stderr and "Traceback" not in stderr
    saved = gpubp.load_checkpoint(path, device="cpu")
    assert saved.epoch >= 1 and len(saved.meta["history"]["epoch"]) == saved.epoch


@pytest.mark.parametrize("optimizer, kind, lr", [("adam", "Adam", 1e-3), ("adamw", "AdamW", 1e-3), ("sgd", "SGD", 0.1)])
def test_train_with_each_optimizer_and_resume_it(tmp_path, optimizer, kind, lr):
    args = ["--data", "digits", "--epochs", "3", "--save", "m.safetensors", "--schedule", "none", "--no-progress"]
    result = gpubp_cli("train", "--optimizer", optimizer, *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.split("test accuracy ")[1].split("%")[0]) > 90
    saved = gpubp.load_checkpoint(tmp_path / "m.safetensors", device="cpu")
    assert type(saved.optimizer).__name__ == kind and saved.optimizer.lr == lr and saved.optimizer.steps > 0
    steps = saved.optimizer.steps
    result = gpubp_cli("train", "--resume", "m.safetensors", "--epochs", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    resumed = gpubp.load_checkpoint(tmp_path / "m.safetensors", device="cpu")
    assert type(resumed.optimizer).__name__ == kind and resumed.optimizer.steps == steps * 4 // 3


def test_momentum_is_refused_for_adam(tmp_path):
    result = gpubp_cli("train", "--optimizer", "adam", "--momentum", "0.5", cwd=tmp_path)
    assert_clean_error(result, "--momentum is for --optimizer sgd; adam keeps its own moments")


def test_train_monitor_prints_logs_and_plots_each_layer(tmp_path):
    require_module("matplotlib", PLOT)
    args = ["train", "--data", "digits", "--layers", "30,30", "--activation", "sigmoid", "--epochs", "2",
            "--monitor", "--log", "run.jsonl", "--plot", "run.png", "--no-progress"]  # fmt: skip
    result = gpubp_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("  layers  ")]
    assert len(lines) == 2 and all(line.count(" speed ") == 3 and "sat " in line for line in lines)
    records = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()][:2]
    assert [[layer["layer"] for layer in r["layers"]] for r in records] == [[0, 1, 2], [0, 1, 2]]
    assert (tmp_path / "run.png").read_bytes()[:4] == b"\x89PNG"


def test_sigterm_at_random_moments_exits_143_and_the_checkpoint_resumes(tmp_path):
    rng = np.random.default_rng(0)
    path, saved = tmp_path / "run.safetensors", []
    for delay in rng.uniform(0.0, 1.5, size=20):  # from the data's loading to the first epochs and later ones
        process = subprocess.Popen(
            [sys.executable, "-m", "gpubp", "train", "--epochs", "100000", "--save", path.name, "--no-progress",
             "--data", "digits"],
            cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        while not process.stderr.readline().startswith("training "):  # gpubp has started: its handlers are set
            assert process.poll() is None
        time.sleep(delay)
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 143 and time.monotonic() - sent < 5, stderr
        last = stderr.rstrip().splitlines()[-1]
        assert last.startswith("gpubp: interrupted by SIGTERM; ") and "Traceback" not in stderr, stderr
        if "is saved in" in last:
            epoch = int(last.split("completed epoch (")[1].split(")")[0])
            assert gpubp.load_checkpoint(path, device="cpu").epoch == epoch  # whole, and the epoch it says
            saved.append(epoch)
            path.unlink()  # the next trial starts afresh
    assert saved and len(saved) < 20  # some stops came before any epoch completed, some after
    result = gpubp_cli("train", "--epochs", "2", "--save", path.name, cwd=tmp_path)
    assert result.returncode == 0
    result = gpubp_cli("train", "--resume", path.name, "--epochs", "3", cwd=tmp_path)
    assert result.returncode == 0 and gpubp.load_checkpoint(path, device="cpu").epoch == 3


def test_a_second_signal_ends_at_once():
    code = (
        "import os, signal, time\n"
        "from gpubp.cli import _StopOnSignal\n"
        "stopper = _StopOnSignal(); stopper.install()\n"
        "os.kill(os.getpid(), signal.SIGTERM)  # the first: a stop is asked for, at the next step\n"
        "time.sleep(0.2)\n"
        "os.kill(os.getpid(), signal.SIGTERM)  # the second: now\n"
        "time.sleep(30)\n"
    )
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 143 and time.monotonic() - started < 10
    assert "gpubp: SIGTERM again: stopping at once" in result.stderr
