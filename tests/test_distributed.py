"""Data-parallel training with real processes under mpiexec: parity with one process, checkpoints,
and a killed rank that stops the job instead of hanging it."""

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gpubp
from gpubp import atomic, distributed

from .conftest import require_tool
from .distributed_worker import setup, train
from .goldens import relative_error

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = WORKER.parent.parent


def mpiexec() -> str:
    found = shutil.which("mpiexec", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    has_mpi4py = importlib.util.find_spec("mpi4py") is not None
    require_tool(None if found and has_mpi4py else "mpiexec or mpi4py is missing: pip install 'gpubp[mpi]'")
    return found


def environment(device="cpu"):
    """The ranks' environment: gpubp from this tree, and device "auto" meaning `device`. The CPU by
    default, on a GPU machine too, where "auto" would bind GPUs and choose NCCL."""
    env = dict(os.environ, GPUBP_DEVICE=device)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def launch(ranks, *args, timeout=180):
    command = [mpiexec(), "-n", str(ranks), sys.executable, str(WORKER), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment())


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-12), ("float32", 1e-5)])
def test_k_ranks_give_the_weights_of_one_process(tmp_path, ranks, dtype, tolerance):
    out = tmp_path / "run"
    result = launch(ranks, "parity", dtype, str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    together = np.load(f"{out}.npz")

    X, y, net, opt = setup(dtype)
    alone = train(net, opt, X, y, distributed=False)
    assert relative_error(together["params"], net.params) <= tolerance
    assert relative_error(together["losses"], alone.loss) <= tolerance
    # The accuracy counts every rank's rows (a float32 near-tie may flip one row).
    np.testing.assert_allclose(
        together["accuracy"], alone.accuracy, rtol=0, atol=1.5 / len(X) if dtype == "float32" else 0
    )
    # Every rank, whatever weights and velocity it was built with, ends where one process ends.
    for rank in range(ranks):
        mine = np.load(f"{out}.rank{rank}.npz")
        assert relative_error(mine["params"], net.params) <= tolerance, f"rank {rank}"
        assert relative_error(mine["velocity"], opt.velocity) <= tolerance, f"rank {rank}"


def test_a_checkpoint_from_two_ranks_loads_in_one_process(tmp_path):
    out = tmp_path / "run"
    assert launch(2, "parity", "float64", str(out)).returncode == 0
    saved = gpubp.load_checkpoint(f"{out}.safetensors", device="cpu")
    together = np.load(f"{out}.npz")
    X, *_ = setup("float64")
    np.testing.assert_array_equal(saved.net.predict(X), together["predictions"])
    written = ["run.npz", "run.rank0.npz", "run.rank1.npz", "run.safetensors"]
    assert saved.epoch == 4 and sorted(p.name for p in tmp_path.iterdir()) == written


def test_without_a_launcher_it_is_one_process_and_mpi4py_stays_unimported():
    code = (
        "import sys, numpy as np, gpubp\n"
        "net = gpubp.MLP([2, 3, 2], loss='cross_entropy', device='cpu')\n"
        "gpubp.fit(net, np.zeros((8, 2)), np.zeros(8, dtype=int), epochs=1, distributed=True, progress=False)\n"
        "print(gpubp.distributed.communicator().size, 'mpi4py' in sys.modules)"
    )
    env = {k: v for k, v in environment().items() if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "False"]


def start_forever(tmp_path, timeout):
    """Two ranks training until stopped, saving every epoch; returns the process, the pids and the file."""
    checkpoint = tmp_path / "run.safetensors"
    command = [mpiexec(), "-n", "2", sys.executable, str(WORKER), "forever", str(checkpoint), str(timeout)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())
    seen = ""
    while len(re.findall(r"rank (\d) pid (\d+)", seen)) < 2:  # the two ranks' lines may interleave
        line = process.stdout.readline()
        assert line, process.stderr.read()
        seen += line
    pids = {int(rank): int(pid) for rank, pid in re.findall(r"rank (\d) pid (\d+)", seen)}
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # a few more epochs
    return process, pids, checkpoint


def assert_stopped_with_a_message(process, checkpoint, within, *messages):
    started = time.monotonic()
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    assert time.monotonic() - started < within
    assert any(m in stdout + stderr for m in messages), stdout + stderr
    assert gpubp.load_checkpoint(checkpoint, device="cpu").epoch >= 1  # rank 0's last save is whole
    # The launcher may SIGKILL rank 0 mid-save, leaving its temporary file: the next save sweeps it away.
    atomic.write_bytes(checkpoint, checkpoint.read_bytes())
    assert [p.name for p in checkpoint.parent.iterdir()] == [checkpoint.name]


def test_a_killed_rank_stops_the_job_with_a_message(tmp_path):
    process, pids, checkpoint = start_forever(tmp_path, timeout=30)
    os.kill(pids[1], signal.SIGKILL)
    # MPICH's launcher notices the death itself; the timeout is the fallback for launchers that do not.
    assert_stopped_with_a_message(process, checkpoint, 30, "BAD TERMINATION", "did not finish within")


def test_a_hung_rank_stops_the_job_at_the_timeout(tmp_path):
    process, pids, checkpoint = start_forever(tmp_path, timeout=3)
    os.kill(pids[1], signal.SIGSTOP)  # alive but silent: only the timeout can notice
    try:
        assert_stopped_with_a_message(
            process, checkpoint, 30, "gpubp: rank 0 of 2: an all-reduce did not finish within 3 s"
        )
    finally:
        try:
            os.kill(pids[1], signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_gpubp_train_under_mpiexec(tmp_path):
    command = [mpiexec(), "-n", "2", sys.executable, "-m", "gpubp", "train", "--epochs", "3", "--save", "m.safetensors"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=environment(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("test accuracy") == 1  # rank 0 alone reports
    assert "on 2 ranks (mpi)" in result.stderr
    accuracy = float(result.stdout.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 95
    assert gpubp.load_checkpoint(tmp_path / "m.safetensors", device="cpu").epoch == 3


def rank_pid(launcher: int, rank: int) -> int:
    """The process id of gpubp's rank `rank` started by the mpiexec `launcher`, found in /proc by its
    rank variable (MPICH's or Open MPI's) and its ancestry: another job's ranks are never picked."""
    parents, found = {}, []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            variables = (entry / "environ").read_bytes().split(b"\0")
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        names = (f"PMI_RANK={rank}".encode(), f"OMPI_COMM_WORLD_RANK={rank}".encode())
        if b"gpubp\0train" in command and any(name in variables for name in names):
            found.append(int(entry.name))
    for pid in found:
        ancestor = pid
        while ancestor in parents and ancestor != launcher:
            ancestor = parents[ancestor]
        if ancestor == launcher:
            return pid
    raise AssertionError(f"no rank {rank} of mpiexec {launcher} found in /proc")


def test_sigterm_to_mpiexec_stops_every_rank_after_the_same_step_and_the_checkpoint_resumes(tmp_path):
    path, epoch = tmp_path / "m.safetensors", None
    command = [mpiexec(), "-n", "2", sys.executable, "-m", "gpubp", "train", "--epochs", "100000", "--save",
               path.name, "--no-progress"]  # fmt: skip
    # To the launcher, which passes it on to every rank; then to rank 1 alone, as if the signal
    # reached the ranks at different moments: rank 0 must stop with it, not wait for it.
    for delay, to_rank in ((0.0, None), (1.5, None), (3.0, None), (1.5, 1)):
        process = subprocess.Popen([*command, "--timeout", "15"], cwd=tmp_path, env=environment(),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        while not process.stderr.readline().startswith("training "):  # rank 0 has started training
            assert process.poll() is None
        time.sleep(delay)
        os.kill(process.pid if to_rank is None else rank_pid(process.pid, to_rank), signal.SIGTERM)
        sent = time.monotonic()
        _, stderr = process.communicate(timeout=60)
        assert time.monotonic() - sent < 10 and "did not finish within" not in stderr, stderr  # no rank waited
        assert process.returncode == 143, stderr
        assert stderr.count("gpubp: interrupted by SIGTERM; ") == 1, stderr  # rank 0 says it, once
        if "is saved in" in stderr:
            epoch = int(stderr.split("completed epoch (")[1].split(")")[0])
            assert gpubp.load_checkpoint(path, device="cpu").epoch == epoch
    assert epoch is not None  # the later stops came after an epoch was saved
    resumed = subprocess.run([*command[:6], "train", "--resume", path.name, "--epochs", str(epoch + 1)],
                             capture_output=True, text=True, cwd=tmp_path, env=environment(), timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert gpubp.load_checkpoint(path, device="cpu").epoch == epoch + 1


@pytest.mark.parametrize("placement", ["one GPU", "a GPU each"])
def test_ranks_on_one_gpu_train_over_mpi_and_say_so_and_nccl_refuses_them(tmp_path, placement):
    # Staged on the CPU: every rank's net says cuda:0, and the GPUs' bus ids are the same (as two ranks
    # on one GPU see it) or differ by rank (as with a GPU each). NCCL would fail on the first.
    result = launch(2, "shared-gpu", placement, str(tmp_path / "chosen"))
    assert result.returncode == 0, result.stdout + result.stderr
    got = {}
    for rank in (0, 1):
        for line in (tmp_path / f"chosen.rank{rank}.txt").read_text().splitlines():
            backend, text = line.split(": ", 1)
            got[f"rank {rank} {backend}"] = text
    if placement == "one GPU":
        for rank in (0, 1):
            assert got[f"rank {rank} auto"] == "mpi"
            assert got[f"rank {rank} nccl"].startswith(
                "DeviceError: backend 'nccl' needs a GPU of its own for each rank, but 2 ranks on "
            )
            assert " use 1 GPU(s): ranks 0, 1 share the one at 0000:3b:00.0 (cuda:0)" in got[f"rank {rank} nccl"]
            assert "this one shows 1)" in got[f"rank {rank} nccl"] and "backend='mpi'" in got[f"rank {rank} nccl"]
        assert result.stderr.count("so the gradients go through MPI and host memory instead") == 1  # rank 0 alone
    else:  # no GPU is shared, so both choose NCCL (whose library CI lacks, and says so)
        for rank in (0, 1):
            for backend in ("auto", "nccl"):
                assert got[f"rank {rank} {backend}"].startswith(("nccl", "DeviceError: the NCCL backend")), got
        assert "go through MPI" not in result.stderr


def test_each_rank_binds_the_gpu_of_its_local_rank(monkeypatch):
    monkeypatch.setattr(gpubp.backend, "gpu_unavailable_reason", lambda index=0: None)  # staged: GPUs compute
    monkeypatch.setattr(gpubp.backend, "cuda_device_count", lambda: 2)
    monkeypatch.setenv("MPI_LOCALRANKID", "3")
    monkeypatch.delenv("GPUBP_DEVICE")
    for spec in ("auto", "gpu", "cuda", " GPU "):
        assert distributed.rank_device(spec) == gpubp.Device("cuda", 1), spec  # 3 mod 2
    assert distributed.rank_device("cuda:0") == gpubp.Device("cuda", 0)  # an index is taken as it is
    assert distributed.rank_device("cpu") == gpubp.backend.CPU
    monkeypatch.setenv("GPUBP_DEVICE", "cpu")
    assert distributed.rank_device("auto") == gpubp.backend.CPU  # the variable "auto" reads
    monkeypatch.setenv("GPUBP_DEVICE", "cuda:0")
    assert distributed.rank_device("auto") == gpubp.Device("cuda", 0)
    monkeypatch.setenv("GPUBP_DEVICE", "gpu")
    assert distributed.rank_device("auto") == gpubp.Device("cuda", 1)


def test_bad_backend_and_timeout():
    with pytest.raises(gpubp.ArgumentError, match="backend must be one of 'auto', 'mpi', 'nccl'"):
        distributed.communicator(backend="gloo")
    with pytest.raises(gpubp.ArgumentError, match="timeout must be a number of seconds > 0"):
        distributed.communicator(timeout=0)


@pytest.mark.gpu
def test_nccl_backend_on_two_gpus(tmp_path):
    count = gpubp.backend.cuda_device_count()
    if count < 2:
        pytest.skip(f"the NCCL backend needs 2 or more GPUs; {count} found")
    command = [mpiexec(), "-n", "2", sys.executable, "-m", "gpubp", "train", "--epochs", "2", "--device", "gpu",
               "--save", "m.safetensors"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=environment(), timeout=600)
    assert result.returncode == 0, result.stderr
    assert "on 2 ranks (nccl)" in result.stderr
    assert gpubp.load_checkpoint(tmp_path / "m.safetensors", device="cpu").epoch == 2


def test_launcher_variables_are_read_by_int_not_by_a_string_test(monkeypatch):
    for name in (*distributed._SIZE_VARIABLES, *distributed._LOCAL_RANK_VARIABLES, *distributed._LOCAL_SIZE_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    assert distributed.launched_size() == 1 and distributed.local_rank() == 0 and distributed.local_size() == 1
    monkeypatch.setenv("PMI_SIZE", "²")  # str.isdigit() says yes; int() refuses it
    assert distributed.launched_size() == 1
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "-3")  # not a size: the next variable decides
    monkeypatch.setenv("PMI_SIZE", " 4 ")
    assert distributed.launched_size() == 4
    monkeypatch.setenv("MPI_LOCALRANKID", "+1")
    assert distributed.local_rank() == 1
