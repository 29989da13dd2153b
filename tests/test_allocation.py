"""The steady state of training allocates nothing: every array a step writes is made before the first epoch."""

import tracemalloc

import numpy as np
import pytest

import gpubp

from .conftest import require_gpu, require_tool

MB = 1 << 20


class PeakAfterFirstEpoch(gpubp.Callback):
    """Starts tracemalloc after epoch 1 and records how far its peak rises over the later epochs."""

    def __init__(self):
        self.growth = None

    def on_epoch_end(self, state, record):
        if record["epoch"] == 1:
            tracemalloc.start()
            self.baseline = tracemalloc.get_traced_memory()[0]
        elif record["epoch"] == state.epochs:
            self.growth = tracemalloc.get_traced_memory()[1] - self.baseline
            tracemalloc.stop()


@pytest.mark.parametrize(
    "loss, output, momentum",
    [("mse", "sigmoid", 0.0), ("cross_entropy", "softmax", 0.9), ("bce", "sigmoid", "adam")],
    ids=["sigmoid-mse-sgd", "softmax-ce-momentum", "sigmoid-bce-adamw"],
)
def test_epochs_after_the_first_allocate_under_1_mb(loss, output, momentum):
    rng = np.random.default_rng(0)
    X = rng.random((4 * 1024 + 100, 784), dtype=np.float32)  # four full batches and a short one
    y = rng.integers(0, 10, size=len(X))
    net = gpubp.MLP([784, 1024, 10], activation="sigmoid", output_activation=output, loss=loss, device="cpu")
    Y = np.eye(10, dtype=np.float32)[y] if loss != "cross_entropy" else y
    probe = PeakAfterFirstEpoch()
    if momentum == "adam":
        opt = gpubp.AdamW(net, lr=1e-3)
    else:
        opt = gpubp.SGD(net, lr=0.01, momentum=momentum, weight_decay=1e-4)
    gpubp.fit(net, X, Y, epochs=3, batch_size=1024, optimizer=opt, callbacks=[probe], progress=False)
    # One 1024×1024 float32 temporary would be 4 MB: the limit catches any large array made per step.
    assert probe.growth is not None and probe.growth < 1 * MB, f"peak grew by {probe.growth / MB:.2f} MB"


def test_the_end_of_epoch_checks_make_nothing_as_large_as_the_parameters():
    # 4 million parameters: one boolean each would be 4 MB, made every epoch by a plain isfinite(params).all().
    rng = np.random.default_rng(0)
    X, y = rng.random((64, 2000), dtype=np.float32), rng.integers(0, 10, size=64)
    net = gpubp.MLP([2000, 2000, 10], loss="cross_entropy", device="cpu")
    probe = PeakAfterFirstEpoch()
    gpubp.fit(net, X, y, epochs=3, batch_size=64, optimizer=gpubp.SGD(net, lr=1e-3), callbacks=[probe], progress=False)
    assert probe.growth < 1 * MB, f"peak grew by {probe.growth / MB:.2f} MB"


def test_the_probe_sees_a_per_step_allocation():
    # The measurement can fail: a callback that allocates 4 MB each epoch is caught.
    class Wasteful(gpubp.Callback):
        def on_epoch_begin(self, state):
            self.buffer = np.ones((1024, 1024), dtype=np.float32)

    rng = np.random.default_rng(0)
    X, y = rng.random((256, 20), dtype=np.float32), rng.integers(0, 3, size=256)
    net = gpubp.MLP([20, 8, 3], loss="cross_entropy", device="cpu")
    probe = PeakAfterFirstEpoch()
    gpubp.fit(net, X, y, epochs=3, callbacks=[probe, Wasteful()], progress=False)
    assert probe.growth > 3 * MB


# --- on a real GPU: allocations and launches per step -------------------------------------------------

GPU_CASES = [("sigmoid", "mse", "sigmoid"), ("relu", "cross_entropy", "softmax"), ("tanh", "bce", "sigmoid")]


def per_step(count, net, optimizer, X, Y):
    """What `count(run)` measures for one training step: an epoch of 8 steps minus one of 4, over 4."""

    def epoch_of(steps):
        return lambda: gpubp.fit(net, X[: 64 * steps], Y[: 64 * steps], epochs=1, batch_size=64,
                                 optimizer=optimizer, progress=False)  # fmt: skip

    epoch_of(8)()  # compile every kernel and fill the memory pool first
    return (count(epoch_of(8)) - count(epoch_of(4))) / 4


def gpu_case(activation, loss, output):
    rng = np.random.default_rng(0)
    X, y = rng.random((512, 32), dtype=np.float32), rng.integers(0, 4, size=512)
    width = 1 if output == "sigmoid" and loss == "bce" else 4
    net = gpubp.MLP([32, 64, width], activation=activation, output_activation=output, loss=loss, device="gpu")
    Y = y if loss == "cross_entropy" else (np.eye(4, dtype=np.float32)[y] if width == 4 else (y % 2)[:, None])
    return net, gpubp.SGD(net, lr=0.01, momentum=0.9), X, Y


@pytest.mark.gpu
@pytest.mark.parametrize("activation, loss, output", GPU_CASES)
def test_a_gpu_step_allocates_nothing_from_the_memory_pool(activation, loss, output):
    require_gpu()
    net, optimizer, X, Y = gpu_case(activation, loss, output)
    cupy = net.xp
    pool, allocations = cupy.get_default_memory_pool(), []

    def counting(size):  # the real pool, with every request counted
        allocations.append(size)
        return pool.malloc(size)

    def count(run):
        allocations.clear()
        cupy.cuda.set_allocator(counting)
        try:
            run()
        finally:
            cupy.cuda.set_allocator(pool.malloc)
        return len(allocations)

    assert per_step(count, net, optimizer, X, Y) == 0


def cuda_profiler():
    """torch.profiler's (profile, ProfilerActivity, DeviceType), or require_tool's skip saying why not.

    Only a CUDA build of torch that sees the GPU records kernels; a CPU build warns that CUDA is
    not available (an error under filterwarnings) and would record nothing at all.
    """
    try:
        import torch
        from torch.profiler import DeviceType, ProfilerActivity, profile
    except ImportError:
        require_tool("torch is not installed: its profiler (CUPTI) counts every kernel the process launches")
    if not torch.cuda.is_available():
        require_tool(f"torch {torch.__version__} does not see a GPU (a CPU build?): its profiler would count no kernel")
    return profile, ProfilerActivity, DeviceType


def check_launches(launches: float, layers: int, budget: int) -> None:
    """Between the launches no step can do without and kernels.py's count, with room for cuBLAS's splits."""
    # Never fewer than 3L - 1 matrix products, L bias + activation kernels, L bias sums and the update:
    # a profiler that records nothing fails here.
    assert launches >= 5 * layers, f"{launches:g} launches per step: fewer than the {5 * layers} any step makes"
    assert launches <= budget + 3 * layers, f"{launches:g} launches per step; kernels.py counts {budget}"


def test_the_launch_check_fails_a_profiler_that_records_nothing_or_too_much():
    check_launches(15, 2, 15)
    with pytest.raises(AssertionError, match="fewer than the 10 any step makes"):
        check_launches(0, 2, 15)
    with pytest.raises(AssertionError, match="kernels.py counts 15"):
        check_launches(22, 2, 15)


def test_a_cpu_build_of_torch_is_no_launch_counter(monkeypatch):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU here: this test is about a CPU build")
    from . import conftest

    monkeypatch.setattr(conftest, "IN_CI", False)  # require_tool skips here even in CI, where torch is CPU-only
    with pytest.raises(pytest.skip.Exception, match=r"does not see a GPU \(a CPU build\?\)"):
        cuda_profiler()


@pytest.mark.gpu
@pytest.mark.parametrize("activation, loss, output", GPU_CASES)
def test_a_gpu_step_makes_the_launches_kernels_py_counts(activation, loss, output):
    require_gpu()
    profile, ProfilerActivity, DeviceType = cuda_profiler()
    net, optimizer, X, Y = gpu_case(activation, loss, output)

    def count(run):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            run()
            net.xp.cuda.Device().synchronize()
        kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA and "Mem" not in e.name]
        return len(kernels)

    launches = per_step(count, net, optimizer, X, Y)
    layers = net.n_layers
    budget = 6 * layers + 3 + (2 if loss == "mse" else 0)  # kernels.py's count (the mse output delta: 2 more)
    print(f"{activation}-{loss}-{output}: {launches:g} launches per step; kernels.py counts {budget}")
    check_launches(launches, layers, budget)
