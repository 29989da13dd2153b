"""Data-parallel training: one process per device, the gradients all-reduced once per step.

Launch with `mpiexec -n K ...`; each process (rank) trains on its own shard of
every global batch. Two backends sit behind one small interface:

    "mpi"   mpi4py over host buffers (GPU buffers are staged through host memory,
            one copy each way, which also waits for the stream that wrote them)
    "nccl"  CuPy's NCCL communicator, GPU to GPU, bootstrapped over MPI

Every collective operation has a timeout: a rank that dies or hangs makes the
others stop the whole job with a message, instead of waiting forever. Without
a launcher (one process) `communicator()` returns `Single`, which does nothing,
and mpi4py is never imported.
"""

from __future__ import annotations

import os
import socket
import sys
import time

import numpy

from . import backend as backend_
from .errors import ArgumentError, DeviceError, MissingDependency, choice_error

BACKENDS = ("auto", "mpi", "nccl")
DEFAULT_TIMEOUT = 300.0  # seconds: long enough for a slow step, short enough not to waste a night
SPIN_SECONDS = 0.05  # poll without sleeping this long: a sleep costs more than a whole all-reduce

# What launchers (MPICH's Hydra, Open MPI, MVAPICH, Slurm) put in each process's environment.
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_NTASKS")
_LOCAL_RANK_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")
_LOCAL_SIZE_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_LOCAL_SIZE")


def _first_int(names) -> int | None:
    for name in names:
        try:  # int() itself decides: str.isdigit() also passes "²", which int() refuses
            value = int(os.environ.get(name, ""))
        except ValueError:
            continue  # unset, or not a number: ask the next launcher's variable
        if value >= 0:
            return value
    return None


def launched_size() -> int:
    """How many processes the launcher started: 1 when there is no launcher."""
    return _first_int(_SIZE_VARIABLES) or 1


def local_rank() -> int:
    """This process's index among those on the same machine: which GPU it should bind."""
    return _first_int(_LOCAL_RANK_VARIABLES) or 0


def local_size() -> int:
    """How many ranks share this machine (and its cores)."""
    return _first_int(_LOCAL_SIZE_VARIABLES) or 1


def rank_device(spec="auto") -> backend_.Device:
    """The device this rank trains on. A GPU asked for without an index ("gpu", "cuda", or "auto"
    finding one, GPUBP_DEVICE included) is cuda:(local rank mod the GPUs), so that the ranks of a
    machine spread over its GPUs; any other spec is taken as it is."""
    text = spec.strip().lower() if isinstance(spec, str) else None
    if text == "auto" and os.environ.get(backend_.ENV_DEVICE, "").strip():
        text = os.environ[backend_.ENV_DEVICE].strip().lower()
    chosen = backend_.device(spec)
    if chosen.kind == "cuda" and text in ("auto", "gpu", "cuda"):
        return backend_.device(f"cuda:{local_rank() % backend_.cuda_device_count()}")
    return chosen


def cpu_threads_per_rank() -> int:
    """BLAS threads for each rank, so that the ranks on one machine do not fight over its cores."""
    return max(1, (os.cpu_count() or 1) // local_size())


class Single:
    """One process: every collective is a no-op."""

    rank, size, backend = 0, 1, "none"

    def broadcast(self, array, root: int = 0):
        return array

    def allreduce_sum(self, array):
        return array

    def allreduce_mean(self, array, rows: int, total: int):
        return array  # the mean over this process's rows is the mean over the batch

    def barrier(self) -> None:
        pass


class MPI:
    """Collectives over mpi4py, each waited for with a timeout."""

    backend = "mpi"

    def __init__(self, timeout: float = DEFAULT_TIMEOUT):
        try:
            from mpi4py import MPI as mpi
        except ImportError:
            raise MissingDependency("distributed training needs mpi4py: pip install 'gpubp[mpi]'") from None
        self.mpi, self.comm, self.timeout = mpi, mpi.COMM_WORLD, float(timeout)
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self._host = {}  # staging buffers for GPU arrays, made once per shape

    def wait(self, request, what: str) -> None:
        """Wait for a non-blocking operation; past the timeout, stop every rank with a message."""
        started = time.monotonic()
        while not request.Test():
            waited = time.monotonic() - started
            if waited > self.timeout:
                self.abort(f"{what} did not finish within {self.timeout:g} s: another rank has probably failed")
            if waited > SPIN_SECONDS:
                time.sleep(1e-3)  # a long wait: a rank is slow or gone, so stop spinning

    def abort(self, message: str):
        print(f"gpubp: rank {self.rank} of {self.size}: {message}. Stopping the whole job.", file=sys.stderr)
        sys.stderr.flush()
        time.sleep(0.5)  # let the launcher forward the message: Abort tears the job down at once
        self.comm.Abort(1)

    def _staged(self, array):
        """A buffer MPI can use for `array`: itself on the host, or a host copy of a GPU array.

        GPU arrays always go through host memory, even with a CUDA-aware MPI: the copy
        back waits for the stream that wrote the array, which MPI would not. GPU nets
        get the NCCL backend, which reads device memory on the stream itself.
        """
        if isinstance(array, numpy.ndarray):
            return array, False
        host = self._host.get((array.shape, array.dtype.str))
        if host is None:
            host = self._host[(array.shape, array.dtype.str)] = numpy.empty(array.shape, dtype=array.dtype)
        array.get(out=host)
        return host, True

    def allreduce_sum(self, array):
        buffer, staged = self._staged(array)
        self.wait(self.comm.Iallreduce(self.mpi.IN_PLACE, buffer, op=self.mpi.SUM), "an all-reduce")
        if staged:
            array.set(buffer)
        return array

    def allreduce_mean(self, array, rows: int, total: int):
        """Each rank's `array` is a mean over its `rows` of a batch of `total`: weighted by that share and
        summed, they give the mean over the whole batch, even when the shares differ."""
        array *= rows / total
        return self.allreduce_sum(array)

    def broadcast(self, array, root: int = 0):
        buffer, staged = self._staged(array)
        self.wait(self.comm.Ibcast(buffer, root=root), "a broadcast")
        if staged:
            array.set(buffer)
        return array

    def broadcast_bytes(self, data: bytes | None, root: int = 0) -> bytes:
        """`data` from `root` on every rank, as plain bytes (never pickled)."""
        length = numpy.array([len(data) if self.rank == root else 0], dtype=numpy.int64)
        self.broadcast(length, root)
        buffer = numpy.frombuffer(data, dtype=numpy.uint8).copy() if self.rank == root else None
        if buffer is None:
            buffer = numpy.empty(int(length[0]), dtype=numpy.uint8)
        self.broadcast(buffer, root)
        return buffer.tobytes()

    def barrier(self) -> None:
        self.wait(self.comm.Ibarrier(), "a barrier")

    def allgather_text(self, text: str) -> list[str]:
        """Every rank's `text` (at most 256 bytes of UTF-8), in rank order, on every rank."""
        mine = numpy.zeros(256, dtype=numpy.uint8)
        data = text.encode()[:256]
        mine[: len(data)] = numpy.frombuffer(data, dtype=numpy.uint8)
        everyone = numpy.empty((self.size, 256), dtype=numpy.uint8)
        self.wait(self.comm.Iallgather(mine, everyone), "an all-gather")
        return [row.tobytes().rstrip(b"\0").decode() for row in everyone]

    def shared_gpus(self, device) -> list[str]:
        """Where two or more ranks would compute on the same physical GPU, which NCCL refuses
        ("Duplicate GPU detected"): one line for each machine where they do; none when every
        rank has a GPU of its own."""
        places = self.allgather_text(f"{socket.gethostname()}\n{device.bus_id}\n{device}")
        machines = {}  # host: {bus id: [(rank, device name)]}
        for rank, place in enumerate(places):
            host, bus_id, name = place.split("\n")
            machines.setdefault(host, {}).setdefault(bus_id, []).append((rank, name))
        lines = []
        for host, gpus in machines.items():
            shared = [
                f"ranks {', '.join(str(r) for r, _ in held)} share the one at {bus_id} "
                f"({', '.join(sorted({name for _, name in held}))})"
                for bus_id, held in gpus.items()
                if len(held) > 1
            ]
            if shared:
                ranks = sum(len(held) for held in gpus.values())
                lines.append(f"{ranks} ranks on {host} use {len(gpus)} GPU(s): {', '.join(shared)}")
        return lines


class NCCL(MPI):
    """GPU-to-GPU collectives with NCCL; MPI only starts it (the unique id) and runs the barriers."""

    backend = "nccl"

    def __init__(self, device, timeout: float = DEFAULT_TIMEOUT):
        self.nccl = backend_.nccl()  # first: a missing NCCL is said at once, by every rank
        super().__init__(timeout)
        self.xp = device.xp
        with device.activate():
            # CuPy 14: the unique id is bytes (a tuple of ints before), and the communicator takes those bytes
            uid = self.broadcast_bytes(self.nccl.get_unique_id() if self.rank == 0 else None)
            self.communicator = self.nccl.NcclCommunicator(self.size, uid, self.rank)
        self._types = {numpy.dtype("float32"): self.nccl.NCCL_FLOAT32, numpy.dtype("float64"): self.nccl.NCCL_FLOAT64}

    def _finish(self, what: str) -> None:
        """NCCL runs on the stream: wait for it there, with the same timeout."""
        event = self.xp.cuda.Event()
        event.record()
        deadline = time.monotonic() + self.timeout
        while not event.done:
            if time.monotonic() > deadline:
                self.abort(f"{what} on NCCL did not finish within {self.timeout:g} s")
            time.sleep(1e-4)

    def allreduce_sum(self, array):
        if isinstance(array, numpy.ndarray):
            return super().allreduce_sum(array)  # host values such as the epoch's metrics
        stream = self.xp.cuda.get_current_stream().ptr
        ptr = array.data.ptr
        self.communicator.allReduce(ptr, ptr, array.size, self._types[array.dtype], self.nccl.NCCL_SUM, stream)
        self._finish("an all-reduce")
        return array

    def broadcast(self, array, root: int = 0):
        if isinstance(array, numpy.ndarray):
            return super().broadcast(array, root)
        stream = self.xp.cuda.get_current_stream().ptr
        self.communicator.bcast(array.data.ptr, array.size, self._types[array.dtype], root, stream)
        self._finish("a broadcast")
        return array


def communicator(device=None, backend: str = "auto", timeout: float = DEFAULT_TIMEOUT):
    """The communicator for this process: Single without a launcher, else MPI or NCCL.

    backend "auto" picks NCCL for GPU nets, and MPI for CPU nets and wherever two ranks
    compute on one GPU (NCCL needs a GPU for each rank): rank 0 says so. backend "nccl"
    refuses ranks that share a GPU with a DeviceError that says what to do.
    """
    if backend not in BACKENDS:
        raise choice_error("backend", backend, BACKENDS)
    if not timeout > 0:
        raise ArgumentError(f"timeout must be a number of seconds > 0; got {timeout!r}")
    if launched_size() == 1:
        return Single()
    on_gpu = device is not None and device.kind == "cuda"
    if backend == "nccl" and not on_gpu:
        raise ArgumentError("backend 'nccl' needs a GPU net (device='gpu'); use backend='mpi' on the CPU")
    if backend == "mpi" or not on_gpu:
        return MPI(timeout)
    comm = MPI(timeout)
    shared = comm.shared_gpus(device)  # every rank learns the same, so every rank chooses the same
    if not shared:
        return NCCL(device, timeout)
    where = "; ".join(shared)
    fix = (
        f"start at most as many ranks on a machine as it has GPUs (this one shows {backend_.cuda_device_count()}), "
        "and give each rank its own: device 'gpu' in gpubp train, or "
        "gpubp.distributed.rank_device('gpu') for fit's net"
    )
    if backend == "nccl":
        raise DeviceError(
            f"backend 'nccl' needs a GPU of its own for each rank, but {where}: {fix}; or pass backend='mpi'"
        )
    if comm.rank == 0:
        print(
            f"gpubp: {where}, and NCCL needs a GPU of its own for each rank, so the gradients go through MPI "
            f"and host memory instead (slower). For NCCL, {fix}.",
            file=sys.stderr,
            flush=True,
        )
    return comm
