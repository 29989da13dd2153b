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
import sys
import time

import numpy

from .backend import nccl as _nccl
from .errors import ArgumentError, MissingDependency, choice_error

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


class NCCL(MPI):
    """GPU-to-GPU collectives with NCCL; MPI only starts it (the unique id) and runs the barriers."""

    backend = "nccl"

    def __init__(self, device, timeout: float = DEFAULT_TIMEOUT):
        self.nccl = _nccl()  # before MPI starts: a missing NCCL is said at once, by every rank
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

    backend "auto" picks NCCL for GPU nets and MPI for CPU nets.
    """
    if backend not in BACKENDS:
        raise choice_error("backend", backend, BACKENDS)
    if not timeout > 0:
        raise ArgumentError(f"timeout must be a number of seconds > 0; got {timeout!r}")
    if launched_size() == 1:
        return Single()
    on_gpu = device is not None and device.kind == "cuda"
    if backend == "nccl" or (backend == "auto" and on_gpu):
        if not on_gpu:
            raise ArgumentError("backend 'nccl' needs a GPU net (device='gpu'); use backend='mpi' on the CPU")
        return NCCL(device, timeout)
    return MPI(timeout)
