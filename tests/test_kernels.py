"""The fused CUDA kernels: they compile (NVRTC, no GPU needed), their arithmetic matches the
unfused path (the same source run through a C++ compiler), and on a GPU they match for real.
"""

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

import gpubp
from gpubp import activations, kernels, losses

from .conftest import require_gpu, require_tool

FUSABLE = [act for act in activations.ACTIVATIONS.values() if act.cuda is not None]
LOSSES = list(losses.LOSSES.values())
DTYPES = ["float32", "float64"]
TOLERANCE = {"float32": 2e-6, "float64": 1e-14}


def nvrtc_or_skip():
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as e:  # no CuPy, or no NVRTC library beside it
        require_tool(f"NVRTC is not available ({type(e).__name__}: {e}); pip install nvidia-cuda-nvrtc-cu12")
    return nvrtc


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_kernel_compiles_with_nvrtc(dtype):
    nvrtc = nvrtc_or_skip()
    program = nvrtc.createProgram(kernels.source(dtype, FUSABLE, LOSSES), "gpubp.cu", (), ())
    try:
        nvrtc.compileProgram(program, (*kernels.OPTIONS, "-arch=compute_90"))
    except Exception:
        pytest.fail(nvrtc.getProgramLog(program))
    ptx = nvrtc.getPTX(program).decode()
    for name in kernels.kernel_names(FUSABLE, LOSSES):
        assert f".entry {name}(" in ptx, name


def test_a_broken_kernel_does_not_compile():
    # The compile check can fail: a formula with a typo in it is caught.
    nvrtc = nvrtc_or_skip()
    broken = activations.Activation("broken", activations.sigmoid, activations.sigmoid_prime, cuda=("exq(-z)", "a"))
    program = nvrtc.createProgram(kernels.source("float32", [broken]), "broken.cu", (), ())
    with pytest.raises(nvrtc.NVRTCError):
        nvrtc.compileProgram(program, ("-arch=compute_90",))
    assert "exq" in nvrtc.getProgramLog(program)


# --- the same source, run on the CPU -------------------------------------------------------

# Stands in for what CUDA provides, so the kernel source compiles as plain C++: a kernel is then
# an ordinary function, called once per (block, thread) with the built-in indices set first.
HOST_PRELUDE = """
#include <cmath>
using std::exp;
using std::log;
using std::sqrt;
using std::tanh;
struct Dim3 { unsigned x, y, z; };
template <class A, class B> A atomicAdd(A* address, B value) { A old = *address; *address = old + value; return old; }
static Dim3 blockIdx, threadIdx, blockDim;
#define __global__
extern "C" void set_thread(unsigned block, unsigned thread, unsigned threads) {
    blockIdx.x = block; threadIdx.x = thread; blockDim.x = threads;
}
"""


class HostModule:
    """Kernel source compiled by g++ into a shared library: a module whose functions ctypes can call."""

    def __init__(self, code, folder, name):
        compiler = shutil.which("g++")
        require_tool(None if compiler else "g++ is not installed")
        src, lib = folder / f"{name}.cpp", folder / f"{name}.so"
        src.write_text(HOST_PRELUDE + code)
        result = subprocess.run(
            [compiler, "-shared", "-fPIC", "-O1", "-ffp-contract=off", str(src), "-o", str(lib)],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        self.lib = ctypes.CDLL(str(lib))

    def get_function(self, name):
        return self.lib[name]  # a new function object each call, as CuPy's RawModule.get_function gives


class HostKernels:
    """The kernels compiled by g++ into a shared library, launched thread by thread through ctypes."""

    def __init__(self, dtype, folder, monitor=False):
        code = kernels.source(dtype, monitor=True) if monitor else kernels.source(dtype, FUSABLE, LOSSES)
        self.lib = HostModule(code, folder, f"{'monitor' if monitor else 'kernels'}_{dtype}").lib
        self.scalar = ctypes.c_float if dtype == "float32" else ctypes.c_double
        self.dtype = np.dtype(dtype)

    def launch(self, name, n, *args):
        threads = kernels.THREADS
        converted = []
        for a in args:
            if isinstance(a, np.ndarray):
                assert a.dtype in (self.dtype, np.float64, np.int64, np.uint64) and a.flags.c_contiguous
                converted.append(ctypes.c_void_p(a.ctypes.data))
            elif a is None:
                converted.append(ctypes.c_void_p(0))
            elif isinstance(a, bool):
                converted.append(ctypes.c_int(a))
            elif isinstance(a, int):
                converted.append(ctypes.c_longlong(a))
            else:
                converted.append(self.scalar(a))
        function = getattr(self.lib, name)
        for block in range((n + threads - 1) // threads):
            for thread in range(threads):  # the last block runs past n: the kernels must guard
                self.lib.set_thread(block, thread, threads)
                function(*converted)


@pytest.fixture(scope="module", params=DTYPES)
def host(request, tmp_path_factory):
    return HostKernels(request.param, tmp_path_factory.mktemp("kernels"))


def random(shape, dtype, seed, low=-3.0, high=3.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype(dtype)


@pytest.mark.parametrize("act", FUSABLE, ids=lambda a: a.name)
def test_bias_activation_kernel_matches_the_unfused_path(host, act):
    z, b = random((5, 67), host.dtype, 1), random((67,), host.dtype, 2)  # 335 elements: two blocks
    z_fused, a_fused = z.copy(), np.full_like(z, np.nan)
    host.launch(f"bias_{act.name}", z.size, b, z_fused, a_fused, z.size, z.shape[1])
    z_ref = z.copy()
    a_ref = act.activate(z_ref, b, out=np.empty_like(z))
    np.testing.assert_allclose(z_fused, z_ref, rtol=TOLERANCE[host.dtype.name])
    np.testing.assert_allclose(a_fused, a_ref, rtol=TOLERANCE[host.dtype.name], atol=1e-30)


@pytest.mark.parametrize("act", FUSABLE, ids=lambda a: a.name)
def test_delta_kernel_matches_the_unfused_path(host, act):
    z = random((7, 50), host.dtype, 3)
    a = act(z, out=np.empty_like(z))
    upstream = random((7, 50), host.dtype, 4)
    fused = upstream.copy()
    host.launch(f"delta_{act.name}", fused.size, fused, a, fused.size)
    expected = act.backprop(upstream.copy(), z, a)
    np.testing.assert_allclose(fused, expected, rtol=TOLERANCE[host.dtype.name], atol=1e-30)


def test_output_minus_target_kernel_matches_the_unfused_path(host):
    output, y = random((9, 10), host.dtype, 5, 0, 1), random((9, 10), host.dtype, 6, 0, 1)
    fused = np.full_like(output, np.nan)
    host.launch("output_minus_target", output.size, output, y, fused, output.size, 9.0)
    np.testing.assert_array_equal(fused, losses.mse_gradient(output, y))  # the same two roundings


def test_bias_softmax_kernel_matches_the_unfused_path(host):
    z, b = random((7, 10), host.dtype, 11, -20, 20), random((10,), host.dtype, 12)
    z_fused, a_fused = z.copy(), np.full_like(z, np.nan)
    host.launch("bias_softmax", len(z), b, z_fused, a_fused, len(z), z.shape[1])  # one thread per row
    z_ref = z.copy()
    a_ref = activations.ACTIVATIONS["softmax"].activate(z_ref, b, out=np.empty_like(z))
    np.testing.assert_array_equal(z_fused, z_ref)
    np.testing.assert_allclose(a_fused, a_ref, rtol=4 * TOLERANCE[host.dtype.name], atol=1e-30)


def test_delta_softmax_kernel_matches_the_unfused_path(host):
    softmax = activations.ACTIVATIONS["softmax"]
    a = softmax(random((6, 9), host.dtype, 13), out=np.empty((6, 9), host.dtype))
    upstream = random((6, 9), host.dtype, 14)
    fused = upstream.copy()
    host.launch("delta_softmax", len(fused), fused, a, len(fused), fused.shape[1])
    expected = softmax.backprop(upstream.copy(), None, a, np.empty_like(a))
    np.testing.assert_allclose(fused, expected, rtol=4 * TOLERANCE[host.dtype.name], atol=1e-7)


ROW_CASES = [(loss, output, width) for loss, output in [("mse", "sigmoid"), ("mse", "identity"), ("bce", "sigmoid")]
             for width in (1, 4)] + [("cross_entropy", "softmax", 4), ("bce", "softmax", 4)]  # fmt: skip


@pytest.mark.parametrize("loss, output, width", ROW_CASES)
def test_row_metrics_kernel_matches_the_unfused_bookkeeping(host, loss, output, width):
    net = gpubp.MLP([3, width], output_activation=output, loss=loss, dtype=host.dtype.name, device="cpu")
    rows = 300  # two blocks of threads
    out = net.predict(random((rows, 3), host.dtype, 15))
    y = net.targets(np.random.default_rng(16).integers(0, width, rows), rows) if loss == "cross_entropy" else None
    if y is None:
        y = random((rows, width), host.dtype, 17, 0, 1).round()  # 0/1 targets: every loss accepts them
    out[0, 0], out[1, -1] = 0, 1  # log(0) must be clipped, not -inf
    expected = np.full((2, rows), np.nan, dtype=host.dtype)
    gpubp.train.measure(net, out, y, net.workspace(rows), expected[0], expected[1])
    fused = np.full((2, rows), np.nan, dtype=host.dtype)
    kind = gpubp.train.accuracy_kind(net)
    host.launch(f"row_metrics_{loss}", rows, out, y, fused[0], fused[1], rows, width, kernels.ACCURACY[kind])
    np.testing.assert_allclose(fused[0], expected[0], rtol=4 * TOLERANCE[host.dtype.name], atol=1e-6)
    if kind is None:
        assert np.isnan(fused[1]).all()  # nothing is written where accuracy means nothing
    else:
        np.testing.assert_array_equal(fused[1], expected[1])
        assert 0 < expected[1].sum() < rows  # some right, some wrong: the comparison is really tested


@pytest.mark.parametrize(
    "options",
    [{}, {"weight_decay": 0.01}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}],
    ids=["plain", "weight_decay", "momentum", "nesterov"],
)
def test_sgd_kernel_matches_the_unfused_optimizer(host, options):
    net = gpubp.MLP([20, 13, 3], dtype=host.dtype.name, device="cpu", seed=2)
    opt = gpubp.SGD(net, lr=0.05, **options)
    grads = net.new_grads()
    params, velocity = net.params.copy(), None if opt.velocity is None else opt.velocity.copy()
    for step in range(3):
        grads.flat[...] = random(grads.flat.shape, host.dtype, 10 + step)
        opt.step(grads)  # the NumPy path
        host.launch(
            "sgd_step", params.size, params, grads.flat, velocity, params.size,
            opt.lr, opt.momentum, opt.weight_decay, opt.lr * opt.momentum, opt.nesterov,
        )  # fmt: skip
    np.testing.assert_allclose(params, net.params, rtol=TOLERANCE[host.dtype.name])
    if velocity is not None:
        np.testing.assert_allclose(velocity, opt.velocity, rtol=TOLERANCE[host.dtype.name])


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_monitor_kernels_compile_with_nvrtc_in_a_module_of_their_own(dtype):
    nvrtc = nvrtc_or_skip()
    program = nvrtc.createProgram(kernels.source(dtype, monitor=True), "monitor.cu", (), ())
    try:
        nvrtc.compileProgram(program, (*kernels.OPTIONS, "-arch=compute_90"))
    except Exception:
        pytest.fail(nvrtc.getProgramLog(program))
    ptx = nvrtc.getPTX(program).decode()
    assert all(f".entry {name}(" in ptx for name in kernels.kernel_names(monitor=True))
    assert ".entry sgd_step(" not in ptx  # the training kernels do not depend on atomicAdd on doubles


@pytest.fixture(scope="module", params=DTYPES)
def monitor_host(request, tmp_path_factory):
    return HostKernels(request.param, tmp_path_factory.mktemp("monitor"), monitor=True)


def test_monitor_squares_kernel_sums_each_part_across_the_chunks(monitor_host):
    # Parts that end exactly on a chunk boundary (128), inside a chunk, and one of a single number
    sizes = [128, 1, 63, 64, 10, 200]
    ends = np.cumsum(sizes).astype(np.int64)
    g = random(ends[-1], monitor_host.dtype, 5)
    squares = np.full(len(sizes), 0.0)
    chunks = -(-g.size // kernels.MONITOR_CHUNK)
    monitor_host.launch("monitor_squares", chunks, g, ends, len(ends), chunks, kernels.MONITOR_CHUNK, squares)
    expected = [np.sum(part.astype(np.float64) ** 2) for part in np.split(g, ends[:-1])]
    np.testing.assert_allclose(squares, expected, rtol=1e-12)


def test_monitor_saturated_kernel_counts_past_the_line_on_both_sides(monitor_host):
    z = random(1000, monitor_host.dtype, 6, low=-8.0, high=8.0)
    line = monitor_host.dtype.type(5.5)
    z[:4] = [line, -line, np.nan, np.nextafter(line, np.inf)]  # on the line: not past it; NaN: not counted
    count = np.array([7], dtype=np.uint64)  # the kernel adds to what is there
    chunks = -(-z.size // kernels.MONITOR_CHUNK)
    monitor_host.launch("monitor_saturated", chunks, z, chunks, kernels.MONITOR_CHUNK, z.size, line, count)
    expected = np.count_nonzero((z > line) | (-line > z))
    assert 100 < expected < 900 and count[0] == 7 + expected


def test_monitor_fired_kernel_adds_each_units_positive_outputs(monitor_host):
    a = random((37, 300), monitor_host.dtype, 7)  # more units than a block of threads
    a[:, :5] = -np.abs(a[:, :5])  # five units that never fire
    a[3, 7] = np.nan  # NaN stays, as in relu
    fired = random((1, 300), monitor_host.dtype, 8, low=0.0, high=1.0)
    fired[0, :5] = 0
    before = fired.copy()
    monitor_host.launch("monitor_fired", a.shape[1], a, a.shape[0], a.shape[1], fired)
    expected = before + np.maximum(a, 0).sum(axis=0)  # np.maximum keeps NaN too
    np.testing.assert_allclose(fired, expected, rtol=TOLERANCE[monitor_host.dtype.name])
    assert (fired[0, :5] == 0).all() and np.isnan(fired[0, 7])


def test_the_monitor_kernels_are_not_used_off_the_gpu(monkeypatch):
    assert not kernels.monitor_fusable(gpubp.device("cpu"))
    monkeypatch.setenv(kernels.ENV_FUSED, "0")  # decided before any GPU is asked about
    assert not kernels.monitor_fusable(gpubp.Device("cuda", 0))
    grad, ends, squares = np.ones(6, dtype=np.float32), np.array([3, 6]), np.zeros(2)
    assert kernels.monitor_squares(grad, ends, squares) is False and not squares.any()
    assert kernels.monitor_saturated(grad, 0.5, np.zeros(1, dtype=np.uint64)) is False
    assert kernels.monitor_fired(grad.reshape(2, 3), np.zeros((1, 3), dtype=np.float32)) is False


def test_kernel_functions_are_built_once_and_then_looked_up(tmp_path):
    # The cache with a real compiler behind it: g++ here, NVRTC and the driver on a GPU.
    built = []

    def build(code):
        built.append(code)
        return HostModule(code, tmp_path, f"m{len(built)}")

    cache = kernels.KernelCache(build)
    sigmoid, tanh = activations.ACTIVATIONS["sigmoid"], activations.ACTIVATIONS["tanh"]
    first = cache.function(0, "float32", "bias_sigmoid", sigmoid)
    assert cache.function(0, np.float32, "bias_sigmoid", sigmoid) is first  # the same object, not a new one
    assert cache.function(0, "float32", "delta_sigmoid", sigmoid) is not first
    assert len(built) == 1  # both from one module
    cache.function(0, "float64", "bias_sigmoid", sigmoid)
    cache.function(1, "float32", "bias_sigmoid", sigmoid)  # another GPU loads its own
    cache.function(0, "float32", "bias_tanh", tanh)
    cache.function(0, "float32", "sgd_step")
    assert len(built) == 5 and "double" in built[1] and "bias_tanh" in built[3] and "bias_sigmoid" not in built[4]
    # and what comes back is the compiled kernel: z += b, a = σ(z) over 3 elements, as one "thread" each
    z, b, a = np.zeros(3, np.float32), np.array([0.0, 1.0, -1.0], np.float32), np.empty(3, np.float32)
    pointers = [ctypes.c_void_p(x.ctypes.data) for x in (b, z, a)]
    for i in range(3):
        cache.modules[(0, "float32", "sigmoid")].lib.set_thread(0, i, 3)
        first(*pointers, ctypes.c_longlong(3), ctypes.c_longlong(3))
    np.testing.assert_allclose(a, 1 / (1 + np.exp(-b)), rtol=1e-6)


@pytest.mark.parametrize(
    "kind, options",
    [("Adam", {}), ("Adam", {"weight_decay": 0.01}), ("Adam", {"betas": (0.3, 0.9)}),
     ("AdamW", {}), ("AdamW", {"weight_decay": 0.1, "betas": (0.2, 0.95), "eps": 1e-6})],
    ids=["adam", "adam-l2", "adam-beta1-below-half", "adamw", "adamw-options"],
)  # fmt: skip
def test_adam_kernel_matches_the_unfused_optimizer(host, kind, options):
    net = gpubp.MLP([20, 13, 3], dtype=host.dtype.name, device="cpu", seed=2)
    opt = getattr(gpubp, kind)(net, lr=0.01, **options)
    grads = net.new_grads()
    params, m, v = net.params.copy(), opt.m.copy(), opt.v.copy()
    (beta1, beta2), wd = opt.betas, opt.weight_decay
    for step in range(1, 4):
        grads.flat[...] = random(grads.flat.shape, host.dtype, 20 + step)
        opt.step(grads)  # the NumPy path
        weight = 1 - beta1
        host.launch(
            "adam_step", params.size, params, grads.flat, m, v, params.size, 1 - opt.lr * wd, wd, opt.decoupled,
            weight, 1 - weight, beta2, 1 - beta2, -opt.lr / (1 - beta1**step), (1 - beta2**step) ** 0.5, opt.eps,
        )  # fmt: skip
    for fused, unfused in ((params, net.params), (m, opt.m), (v, opt.v)):
        np.testing.assert_array_equal(fused, unfused)  # the same operations in the same order


# --- on a real GPU -------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_gpu_training_matches_the_unfused_gpu_path_and_the_cpu(dtype, monkeypatch):
    require_gpu()
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(96, 12)), rng.integers(0, 4, size=96)
    results = {}
    for label, device, fused in (("cpu", "cpu", "1"), ("gpu unfused", "gpu", "0"), ("gpu fused", "gpu", "1")):
        monkeypatch.setenv(kernels.ENV_FUSED, fused)
        for act in ("sigmoid", "tanh", "relu", "leaky_relu", "identity"):
            net = gpubp.MLP([12, 16, 4], activation=act, loss="cross_entropy", dtype=dtype, device=device, seed=3)
            opt = gpubp.SGD(net, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
            gpubp.fit(net, X, y, epochs=2, batch_size=32, optimizer=opt, progress=False)
            results[(label, act)] = gpubp.to_numpy(net.params)
    tolerance = 1e-10 if dtype == "float64" else 1e-4
    for act in ("sigmoid", "tanh", "relu", "leaky_relu", "identity"):
        reference = results[("cpu", act)]
        for label in ("gpu unfused", "gpu fused"):
            error = np.abs(results[(label, act)] - reference).max() / np.abs(reference).max()
            assert error <= tolerance, (label, act, error)


@pytest.mark.gpu
def test_fused_kernels_really_run_on_the_gpu():
    require_gpu()
    net = gpubp.MLP([4, 8, 3], loss="cross_entropy", device="gpu")
    z = net.xp.ones((2, 8), dtype=net.dtype)
    out = kernels.bias_activation(net.activation, z, net.biases[0], None)
    assert out is not None and gpubp.get_array_module(out) is net.xp  # the fused path, not the fallback
    expected = 1 / (1 + np.exp(-1.0))
    np.testing.assert_allclose(gpubp.to_numpy(out), expected, rtol=1e-6)


def test_fused_path_is_not_taken_for_numpy_arrays():
    z, b = np.zeros((2, 3), dtype=np.float32), np.zeros(3, dtype=np.float32)
    act = activations.ACTIVATIONS["sigmoid"]
    assert kernels.bias_activation(act, z, b, None) is None
    assert kernels.delta(act, z, z) is None
    assert kernels.output_minus_target(z, z, None) is None
    assert kernels.sgd_step(z, z, None, 0.1, 0.0, 0.0, False) is False
    assert kernels.bias_softmax(z, b, None) is None and kernels.delta_softmax(z, z) is None
    assert kernels.row_metrics(losses.LOSSES["mse"], None, z, z, z[0], z[1]) is False
