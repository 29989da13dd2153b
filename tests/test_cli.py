"""The `gpubp` command line, run as a real process."""

import os
import subprocess
import sys

import numpy as np

import gpubp


def gpubp_cli(*args, **env):
    environment = {k: v for k, v in os.environ.items() if k != "GPUBP_DEVICE"} | env
    return subprocess.run(
        [sys.executable, "-m", "gpubp", *args], capture_output=True, text=True, env=environment, timeout=120
    )


def test_info_reports_versions_devices_and_the_gpu_reason():
    result = gpubp_cli("info")
    assert result.returncode == 0, result.stderr
    # each line is "key  value", the keys padded to one width
    rows = {key.strip(): value.strip() for key, value in (line.split("  ", 1) for line in result.stdout.splitlines())}
    assert rows["gpubp"] == gpubp.__version__
    assert rows["numpy"] == np.__version__
    assert rows["device cpu"] == "available"
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
