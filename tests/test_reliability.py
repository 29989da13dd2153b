"""Bad input gets gpubp's own clear errors, extreme values stay finite, and hostile or broken files
never run code or load half-way."""

import json
import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

import gpubp
from gpubp import checkpoint

from .conftest import require_gpu

ROOT = Path(__file__).resolve().parent.parent


def net(**kwargs):
    return gpubp.MLP([3, 4, 2], device="cpu", **({"loss": "cross_entropy"} | kwargs))


# --- input validation at every entry point ------------------------------------------------------

GOOD_X = np.zeros((4, 3))
GOOD_Y = np.array([0, 1, 1, 0])


@pytest.mark.parametrize(
    "X, error, message",
    [
        (np.zeros((4, 3, 1)), gpubp.ShapeError, r"X must have shape \(N, 3\) for this net; got \(4, 3, 1\)"),
        (np.zeros((4, 5)), gpubp.ShapeError, r"got \(4, 5\)"),
        (np.zeros((0, 3)), gpubp.ShapeError, r"at least one row"),
        (np.array([[1.0, np.nan, 0.0]]), gpubp.ArgumentError, r"X holds NaN or infinite values"),
        (np.array([[1.0, np.inf, 0.0]]), gpubp.ArgumentError, r"X holds NaN or infinite values"),
        (np.array([[1, 2, 3]], dtype=object), gpubp.ArgumentTypeError, r"X must hold numbers .*got dtype object"),
        (np.array([["a", "b", "c"]]), gpubp.ArgumentTypeError, r"got dtype <U1"),
        (np.array([[1j, 0, 0]]), gpubp.ArgumentTypeError, r"got dtype complex128"),
        ([[1, 2, 3], [4, 5]], gpubp.ArgumentTypeError, r"X must be an array of numbers; NumPy could not make one"),
    ],
)
def test_bad_X_at_forward_predict_and_fit(X, error, message):
    model = net()
    for call in (model.forward, model.predict, lambda X: gpubp.fit(model, X, GOOD_Y[: len(X)], epochs=1)):
        with pytest.raises(error, match=message):
            call(X)


@pytest.mark.parametrize(
    "Y, error, message",
    [
        (np.array([0, 1, 1]), gpubp.ShapeError, r"class labels Y must have shape \(4,\)"),
        (np.zeros((4, 3)), gpubp.ShapeError, r"Y must have shape \(4, 2\) to match 4 rows of X and 2 outputs"),
        (np.array([0, 1, 2, 0]), gpubp.ArgumentError, r"must lie in \[0, 2\) for 2 outputs; got values from 0 to 2"),
        (np.array([0, -1, 1, 0]), gpubp.ArgumentError, r"got values from -1 to 1"),
        (np.array([0.0, 1.0, 0.5, 0.0]), gpubp.ArgumentTypeError, r"integers in \[0, 2\); got dtype float64"),
        (np.array([[1.0, np.nan]] * 4), gpubp.ArgumentError, r"Y holds NaN or infinite values"),
    ],
)
def test_bad_Y_at_backward_loss_and_fit(Y, error, message):
    model = net()
    trace = model.forward(GOOD_X)
    calls = (
        lambda Y: model.backward(trace, Y),
        lambda Y: model.loss(trace.output, Y),
        lambda Y: gpubp.fit(model, GOOD_X, Y, epochs=1),
    )
    for call in calls:
        with pytest.raises(error, match=message):
            call(Y)


def test_integer_and_bool_X_are_converted_as_documented():
    model = net(dtype="float64")
    expected = model.predict(np.array([[1.0, 0.0, 1.0]]))
    np.testing.assert_array_equal(model.predict(np.array([[1, 0, 1]])), expected)
    np.testing.assert_array_equal(model.predict(np.array([[True, False, True]])), expected)


@pytest.mark.parametrize("on_device", [True, False])
def test_long_double_X_trains_as_its_float64_copy(device, on_device, tmp_path):
    # NumPy's float128 (long double) has no CuPy type: a GPU net converts it on the host, as float64.
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    long = X.astype(np.longdouble)
    assert long.dtype.char == "g"

    def trained(X):
        model = gpubp.MLP([3, 4, 2], loss="cross_entropy", device=device, seed=1)
        gpubp.fit(model, X, y, epochs=2, batch_size=8, progress=False, data_on_device=on_device)
        return gpubp.to_numpy(model.params)

    np.testing.assert_array_equal(trained(long), trained(X))
    model = gpubp.MLP([3, 4, 2], loss="cross_entropy", device=device, seed=1)
    np.testing.assert_array_equal(gpubp.to_numpy(model.predict(long)), gpubp.to_numpy(model.predict(X)))


def test_host_data_is_checked_as_the_net_will_hold_it(tmp_path):
    # A float64 1e39 is finite, but inf in a float32 net: refused before training, not met as a NaN loss.
    X = np.zeros((50, 3))
    X[37, 1] = 1e39
    np.save(tmp_path / "X.npy", X)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    message = r"X holds NaN or infinite values, or numbers too large for the net's float32; remove or impute"
    with pytest.raises(gpubp.ArgumentError, match=message):
        gpubp.fit(net(), mapped, np.zeros(50, dtype=int), epochs=1, progress=False)
    gpubp.fit(net(dtype="float64"), mapped, np.zeros(50, dtype=int), epochs=1, progress=False)  # it fits there


def test_only_a_gpu_converts_long_double_on_the_host():
    gpu = gpubp.Device("cuda", 0)  # a description only: nothing here touches a GPU
    assert gpubp.backend.storable_dtype(np.longdouble, gpu) == np.float64
    assert gpubp.backend.storable_dtype(np.longdouble, gpubp.backend.CPU) == np.longdouble
    for device in (gpu, gpubp.backend.CPU):
        assert gpubp.backend.storable_dtype(">f4", device) == np.dtype("<f4")  # native byte order
        assert gpubp.backend.storable_dtype(np.int16, device) == np.int16


@pytest.mark.gpu
def test_a_gpu_array_given_to_a_cpu_net_is_copied_over():
    require_gpu()
    model = net(dtype="float64")
    X = gpubp.device("gpu").asarray(np.ones((2, 3)))
    np.testing.assert_array_equal(model.predict(X), model.predict(np.ones((2, 3))))
    gpu_model = gpubp.MLP([3, 4, 2], loss="cross_entropy", dtype="float64", device="gpu")
    assert gpubp.device_of(gpu_model.predict(np.ones((2, 3)))) == gpu_model.device


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, r"batch_size must be ≥ 1; got 0"),
        ({"epochs": 0}, r"epochs must be ≥ 1; got 0"),
        ({"optimizer": "sgd"}, r"optimizer must be a gpubp.SGD, Adam or AdamW; got 'sgd'"),
        ({"callbacks": [print]}, r"callbacks must be gpubp.Callback objects"),
        ({"log": "/no/such/folder/run.jsonl"}, r"log: the folder for '/no/such/folder/run.jsonl' does not exist"),
    ],
)
def test_bad_fit_options(kwargs, message):
    model = net()
    with pytest.raises(gpubp.GpubpError, match=message):
        gpubp.fit(model, GOOD_X, GOOD_Y, **({"epochs": 1} | kwargs))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": 0}, r"lr must be a finite number > 0"),
        ({"lr": float("nan")}, r"got nan"),
        ({"lr": -0.1}, r"got -0.1"),
        ({"lr": float("inf")}, r"got inf"),
    ],
)
def test_bad_learning_rates(kwargs, message):
    with pytest.raises(gpubp.ArgumentError, match=message):
        gpubp.SGD(net(), **kwargs)


def test_bad_seed_and_names():
    with pytest.raises(gpubp.ArgumentError, match=r"seed must be a whole number ≥ 0; got -1"):
        gpubp.MLP([2, 2], seed=-1, device="cpu")
    with pytest.raises(gpubp.ArgumentError, match=r"loss must be one of"):
        gpubp.MLP([2, 2], loss="hinge", device="cpu")


def test_save_and_load_arguments(tmp_path):
    with pytest.raises(gpubp.ArgumentTypeError, match=r"net must be a gpubp.MLP; got dict"):
        gpubp.save({}, tmp_path / "m.safetensors")
    with pytest.raises(gpubp.ArgumentTypeError, match=r"path must be a file path; got 42"):
        gpubp.load(42)


# --- a fuzz test: whatever comes in, either it works or a gpubp error says why -------------------

DTYPES = st.sampled_from(["float32", "float64", "int8", "int64", "uint8", "bool", "complex64", "U2", "O", "m8[s]"])


@st.composite
def odd_arrays(draw):
    dtype = np.dtype(draw(DTYPES))
    shape = draw(array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    if dtype.kind in "fc":
        return draw(arrays(dtype, shape, elements=st.floats(allow_nan=True, allow_infinity=True, width=32)))
    if dtype.kind in "UOm":
        return np.zeros(shape, dtype=dtype)
    return draw(arrays(dtype, shape))


def either_works_or_explains(call):
    try:
        with np.errstate(all="ignore"):
            call()
    except gpubp.GpubpError:
        pass  # a clear error of gpubp's own; anything else escapes and fails the test


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(X=odd_arrays(), Y=odd_arrays())
def test_fuzz_forward_predict_fit(X, Y):
    model = net()
    either_works_or_explains(lambda: model.forward(X))
    either_works_or_explains(lambda: model.predict(X))
    either_works_or_explains(lambda: gpubp.fit(model, X, Y, epochs=1, batch_size=2, progress=False))


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    model = net()
    path = tmp_path_factory.mktemp("good") / "good.safetensors"
    gpubp.save(model, path, gpubp.SGD(model, lr=0.1, momentum=0.9), epoch=1)
    return path.read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_load(good_checkpoint, tmp_path, data):
    blob = bytearray(good_checkpoint)
    how = data.draw(st.sampled_from(["random", "flip", "truncate", "splice"]))
    if how == "random":
        blob = bytearray(data.draw(st.binary(max_size=400)))
    elif how == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    else:
        i = data.draw(st.integers(0, len(blob)))
        blob = blob[:i] + data.draw(st.binary(max_size=40)) + blob[i:]
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(bytes(blob))
    either_works_or_explains(lambda: gpubp.load(path, device="cpu"))


def forged(tmp_path, config=None, tensors=None) -> Path:
    """A checkpoint whose checksum is right but whose contents lie: the checksum is no signature."""
    import safetensors.numpy

    tensors = tensors or {"layers.0.weight": np.zeros((3, 2), dtype=np.float32)}
    metadata = {
        "format": checkpoint.FORMAT,
        "format_version": "1",
        "gpubp_version": gpubp.__version__,
        "config": json.dumps(config),
        "optimizer": "null",
        "meta": "{}",
    }
    metadata["checksum"] = checkpoint._checksum(tensors, metadata)
    path = tmp_path / "forged.safetensors"
    path.write_bytes(safetensors.numpy.save(tensors, metadata=metadata))
    return path


@pytest.mark.parametrize(
    "config, message",
    [
        ({"sizes": [3, 2], "device": "gpu"}, r"unknown configuration keys \['device'\]"),
        ({"sizes": [3, -2]}, r"describes no network gpubp can build .*positive"),
        ({"sizes": [3, 2], "activation": "os.system"}, r"activation must be one of"),
        ([1, 2], r"must be JSON objects"),
        ({"sizes": [3, 2], "dtype": "float64"}, r"tensor layers.0.weight must be float64"),
        ({"sizes": [3, 5]}, r"tensor layers.0.weight must be float32 \(3, 5\)"),
    ],
)
def test_forged_checkpoints_are_refused(tmp_path, config, message):
    with pytest.raises(gpubp.CheckpointError, match=message):
        gpubp.load(forged(tmp_path, config), device="cpu")


# --- pickles never run -----------------------------------------------------------------------


class Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path(self.marker).touch, ())


@pytest.mark.parametrize("where", ["checkpoint", "npz data", "npy input", "safetensors metadata"])
def test_a_pickle_payload_never_runs(tmp_path, where):
    marker = tmp_path / "marker"
    payload = pickle.dumps(Payload(marker))
    pickle.loads(payload)  # the payload works: it makes the marker when unpickled
    assert marker.exists()
    marker.unlink()

    if where == "checkpoint":  # a pickle (what torch.save writes) named like a checkpoint
        path = tmp_path / "model.safetensors"
        path.write_bytes(payload)
        with pytest.raises(gpubp.CheckpointError):
            gpubp.load(path, device="cpu")
    elif where == "npz data":
        path = tmp_path / "data.npz"
        np.savez(path, X=np.array([Payload(marker)], dtype=object), y=np.zeros(1))
        with pytest.raises(gpubp.DatasetError):
            gpubp.datasets.load_file(path)
    elif where == "npy input":
        model_path = gpubp.save(net(), tmp_path / "m.safetensors")
        np.save(tmp_path / "rows.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
        result = subprocess.run(
            [sys.executable, "-m", "gpubp", "predict", str(model_path), "rows.npy", "--out", "p.csv"],
            capture_output=True, text=True, cwd=tmp_path, timeout=120,
        )  # fmt: skip
        assert result.returncode == 2 and "gpubp: error:" in result.stderr
    else:  # the pickle's bytes as a metadata string of a real checkpoint: read as text, never unpickled
        model = net()
        path = gpubp.save(model, tmp_path / "m.safetensors", note=payload.decode("latin-1"))
        assert gpubp.load_checkpoint(path, device="cpu").meta["note"] == payload.decode("latin-1")
    assert not marker.exists()


# --- numerics at the extremes -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss, output", [("mse", "sigmoid"), ("bce", "sigmoid"), ("cross_entropy", "softmax")])
def test_extreme_weighted_inputs_stay_finite_without_warnings(dtype, loss, output):
    # pyproject turns every warning into an error, so an overflow warning anywhere fails this test.
    model = gpubp.MLP([2, 3, 2], activation="sigmoid", output_activation=output, loss=loss, dtype=dtype, device="cpu")
    model.params[...] = 0
    model.weights[0][...] = 1e4  # z = ±1e4 in the hidden layer
    model.weights[1][...] = [[1e4, -1e4], [1e4, -1e4], [1e4, -1e4]]  # and at the output
    X = np.array([[1.0, 0.0], [-1.0, 0.0]])
    Y = np.array([[1.0, 0.0], [0.0, 1.0]])
    trace = model.forward(X)
    assert np.all(np.isfinite(trace.output)) and np.all((trace.output >= 0) & (trace.output <= 1))
    value = model.loss(trace.output, Y)
    grads = model.backward(trace, Y)
    assert np.isfinite(value) and np.all(np.isfinite(grads.flat))


# --- out of memory ---------------------------------------------------------------------------


def test_running_out_of_memory_names_the_batch_size():
    # A real MemoryError: the process's address space is capped just above what it already uses.
    code = textwrap.dedent(
        """
        import resource
        import numpy as np, gpubp
        rng = np.random.default_rng(0)
        X, y = rng.random((20000, 64), dtype=np.float32), rng.integers(0, 10, 20000)
        net = gpubp.MLP([64, 4096, 10], loss="cross_entropy", device="cpu")
        gpubp.fit(net, X[:256], y[:256], epochs=1, batch_size=64, progress=False)
        before = net.params.copy()
        used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + 200 * 2**20, resource.RLIM_INFINITY))
        try:
            gpubp.fit(net, X, y, epochs=1, batch_size=20000, progress=False)  # about 1 GB of work arrays
        except gpubp.OutOfMemory as e:
            print(e)
        print("unchanged", bool((net.params == before).all()))
        """
    )
    if not Path("/proc/self/statm").exists():
        pytest.skip("needs Linux's /proc to cap the address space")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "cpu ran out of memory" in result.stdout and "at batch_size=20000" in result.stdout
    assert "try a smaller batch_size, such as 10000" in result.stdout
    assert "unchanged True" in result.stdout


def test_running_out_of_memory_copying_the_data_says_so():
    # The data fits as float64 but not once more as the net's float32 copy.
    code = textwrap.dedent(
        """
        import resource
        import numpy as np, gpubp
        X, y = np.ones((100_000, 512)), np.zeros(100_000, dtype=np.int64)  # 400 MB of float64
        net = gpubp.MLP([512, 8, 2], loss="cross_entropy", device="cpu")
        used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + 100 * 2**20, resource.RLIM_INFINITY))
        try:
            gpubp.fit(net, X, y, epochs=1, progress=False)
        except gpubp.OutOfMemory as e:
            print(e)
        """
    )
    if not Path("/proc/self/statm").exists():
        pytest.skip("needs Linux's /proc to cap the address space")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "cpu ran out of memory copying the training data (X and Y) of shape (100000, 512) as float32" in (
        result.stdout
    )
    assert "Pass data_on_device=False to keep the data on the host" in result.stdout


@pytest.mark.gpu
def test_gpu_out_of_memory_names_the_batch_size():
    require_gpu()
    model = gpubp.MLP([784, 4096, 10], loss="cross_entropy", device="gpu")
    pool = model.xp.get_default_memory_pool()
    X, y = np.random.default_rng(0).random((32768, 784), dtype=np.float32), np.zeros(32768, dtype=int)
    pool.set_limit(size=pool.used_bytes() + 256 * 2**20)  # room for the data, not for 32768-row work arrays
    try:
        with pytest.raises(gpubp.OutOfMemory, match=r"cuda:0 ran out of memory .*batch_size=32768.*such as 16384"):
            gpubp.fit(model, X, y, epochs=1, batch_size=32768, progress=False)
    finally:
        pool.set_limit(size=0)  # no limit again


@pytest.mark.gpu
def test_cublas_failing_to_allocate_counts_as_out_of_memory():
    require_gpu()  # CuPy's CUBLASError exists only where cuBLAS loads
    from cupy_backends.cuda.libs import cublas

    assert gpubp.backend.is_out_of_memory(cublas.CUBLASError(3))  # CUBLAS_STATUS_ALLOC_FAILED
    assert not gpubp.backend.is_out_of_memory(cublas.CUBLASError(7))  # CUBLAS_STATUS_INVALID_VALUE


@pytest.mark.gpu
def test_gpu_out_of_memory_copying_the_data_says_so():
    require_gpu()
    model = gpubp.MLP([784, 16, 10], loss="cross_entropy", device="gpu")
    pool = model.xp.get_default_memory_pool()
    X, y = np.ones((65536, 784), dtype=np.float32), np.zeros(65536, dtype=int)  # 200 MB
    pool.set_limit(size=pool.used_bytes() + 64 * 2**20)
    try:  # data_on_device=True: the default, None, would keep the data on the host and train from there
        with pytest.raises(gpubp.OutOfMemory, match=r"cuda:0 ran out of memory copying the training data"):
            gpubp.fit(model, X, y, epochs=1, progress=False, data_on_device=True)
    finally:
        pool.set_limit(size=0)


# --- checkpoints survive SIGKILL -------------------------------------------------------------

TRAINER = """
import sys
import numpy as np, gpubp
rng = np.random.default_rng(0)
X, y = rng.random((512, 64), dtype=np.float32), rng.integers(0, 10, 512)
net = gpubp.MLP([64, 256, 10], loss="cross_entropy", device="cpu")
print("ready", flush=True)
gpubp.fit(net, X, y, epochs=100000, batch_size=64, progress=False,
          callbacks=[gpubp.ModelCheckpoint(sys.argv[1])])
"""


def test_sigkill_at_random_moments_always_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "run.safetensors"
    rng = random.Random(0)
    kills, epochs_seen = 0, set()
    while kills < 20:
        process = subprocess.Popen([sys.executable, "-c", TRAINER, str(path)], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.15))  # somewhere in an epoch, or in the middle of a save
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        process.stdout.close()
        kills += 1
        if path.exists():  # whichever file is there must load and pass its checksum
            saved = gpubp.load_checkpoint(path, device="cpu")
            assert saved.epoch >= 1 and len(saved.meta["history"]["epoch"]) == saved.epoch
            assert np.all(np.isfinite(saved.net.params))
            epochs_seen.add(saved.epoch)
        leftovers = [p.name for p in tmp_path.iterdir() if p.name != path.name]
        assert all(name.endswith(".tmp") for name in leftovers)  # at most a temporary file, never the real name
        for name in leftovers:
            (tmp_path / name).unlink()
    assert path.exists() and epochs_seen  # the kills did land after some saves


def test_header_claims_are_checked_before_reading(tmp_path):
    path = tmp_path / "liar.safetensors"
    path.write_bytes(struct.pack("<Q", 10**6) + b"{}")  # claims a 1 MB header in a 10-byte file
    with pytest.raises(gpubp.CheckpointError, match="truncated: its header needs"):
        gpubp.load(path, device="cpu")
