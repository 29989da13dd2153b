"""The MLP's structure, its initialisation, its argument checks, and what training achieves."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

import gpubp

from .conftest import require_gpu
from .goldens import relative_error

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
XOR_Y = np.array([0, 1, 1, 0], dtype=float)


def test_shapes_and_flat_buffer(device):
    net = gpubp.MLP([5, 4, 3], device=device)
    assert [w.shape for w in net.weights] == [(5, 4), (4, 3)]
    assert [b.shape for b in net.biases] == [(4,), (3,)]
    assert net.params.shape == (5 * 4 + 4 + 4 * 3 + 3,)
    # weights and biases are views: writing the flat buffer changes them, and the other way round
    net.params[...] = 0
    net.weights[1][2, 1] = 7
    assert float(net.params.sum()) == 7
    assert gpubp.get_array_module(net.params) is device.xp
    assert net.params.dtype == np.float32


def test_trace_holds_every_z_and_a(device):
    net = gpubp.MLP([3, 4, 2], activation="tanh", loss="cross_entropy", dtype="float64", device=device)
    X = np.random.default_rng(0).normal(size=(5, 3))
    trace = net.forward(X)
    xp = device.xp
    assert len(trace.z) == 2 and len(trace.a) == 3
    np.testing.assert_array_equal(gpubp.to_numpy(trace.a[0]), X)
    # Recompute each layer from the formulas, with the net's own weights.
    z0 = trace.a[0] @ net.weights[0] + net.biases[0]
    assert xp.allclose(trace.z[0], z0) and xp.allclose(trace.a[1], xp.tanh(z0))
    z1 = trace.a[1] @ net.weights[1] + net.biases[1]
    e = xp.exp(z1 - z1.max(axis=1, keepdims=True))
    assert xp.allclose(trace.output, e / e.sum(axis=1, keepdims=True))
    assert trace.output is trace.a[-1]
    assert xp.allclose(net.predict(X), trace.output)


def test_backward_reuses_a_given_buffer():
    net = gpubp.MLP([3, 4, 2], dtype="float64", device="cpu")
    X, Y = np.ones((2, 3)), np.zeros((2, 2))
    buffer = net.new_grads()
    grads = net.backward(net.forward(X), Y, out=buffer)
    assert grads is buffer and np.shares_memory(grads.weights[0], buffer.flat)
    np.testing.assert_array_equal(grads.flat, net.backward(net.forward(X), Y).flat)


def test_initial_weights_follow_the_seed():
    cpu = gpubp.MLP([6, 5, 3], dtype="float64", device="cpu", seed=3)
    np.testing.assert_array_equal(gpubp.MLP([6, 5, 3], dtype="float64", device="cpu", seed=3).params, cpu.params)
    assert not np.array_equal(gpubp.MLP([6, 5, 3], dtype="float64", device="cpu", seed=4).params, cpu.params)


@pytest.mark.gpu
def test_initial_weights_on_the_gpu_equal_the_cpus():
    require_gpu()
    cpu = gpubp.MLP([6, 5, 3], dtype="float64", device="cpu", seed=3)
    gpu = gpubp.MLP([6, 5, 3], dtype="float64", device="gpu", seed=3)
    np.testing.assert_array_equal(gpubp.to_numpy(gpu.params), cpu.params)


def test_init_scales():
    wide = gpubp.MLP([400, 300, 10], activation="sigmoid", dtype="float64", device="cpu")
    limit = np.sqrt(6 / (400 + 300))  # Glorot uniform: U(−limit, limit), variance limit²/3
    assert np.abs(wide.weights[0]).max() <= limit
    assert wide.weights[0].var() == pytest.approx(limit**2 / 3, rel=0.02)
    he = gpubp.MLP([400, 300, 10], activation="relu", dtype="float64", device="cpu")
    assert he.init == "he"
    assert he.weights[0].std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)  # He: N(0, 2/n_in)
    assert not he.biases[0].any()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"sizes": [3]}, gpubp.ArgumentError, r"sizes needs at least 2 entries.*\[3\]"),
        ({"sizes": [3, 0, 1]}, gpubp.ArgumentError, r"must be positive; got 0"),
        ({"sizes": [3, 2.5]}, gpubp.ArgumentTypeError, r"whole numbers; got 2.5"),
        ({"sizes": "34"}, gpubp.ArgumentTypeError, r"sizes must be a sequence"),
        ({"dtype": "int32"}, gpubp.ArgumentTypeError, r"dtype must be a float type.*got 'int32'"),
        ({"dtype": "float16"}, gpubp.ArgumentError, r"dtype must be one of float32, float64; got 'float16'"),
        ({"dtype": "banana"}, gpubp.ArgumentTypeError, r"dtype must be one of float32, float64; got 'banana'"),
        ({"init": "zeros"}, gpubp.ArgumentError, r"init must be one of 'glorot', 'he'; got 'zeros'"),
        ({"output_activation": "swish"}, gpubp.ArgumentError, r"output_activation must be one of .*got 'swish'"),
        ({"loss": "bce", "output_activation": "relu"}, gpubp.ArgumentError, r"loss 'bce' needs output_activation"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, message):
    kwargs = {"sizes": [3, 2], "device": "cpu"} | kwargs
    with pytest.raises(error, match=message):
        gpubp.MLP(**kwargs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_xor_is_learned(device, dtype):
    net = gpubp.MLP([2, 4, 1], activation="sigmoid", loss="mse", dtype=dtype, device=device, seed=0)
    opt = gpubp.SGD(net, lr=2.0)
    X, Y = net.inputs(XOR_X), net.targets(XOR_Y, 4)
    for _ in range(3000):
        opt.step(net.backward(net.forward(X), Y))
    predicted = gpubp.to_numpy(net.predict(XOR_X))[:, 0] > 0.5
    np.testing.assert_array_equal(predicted, XOR_Y.astype(bool))
    assert net.loss(net.predict(XOR_X), XOR_Y) < 0.01


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-10), ("float32", 1e-4)])
def test_cpu_gpu_parity_after_20_steps(dtype, tolerance):
    require_gpu()
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(64, 10)), rng.integers(0, 4, size=64)
    final = {}
    for spec in ("cpu", "gpu"):
        net = gpubp.MLP([10, 32, 16, 4], activation="tanh", loss="cross_entropy", dtype=dtype, device=spec, seed=11)
        opt = gpubp.SGD(net, lr=0.2, momentum=0.9)
        for step in range(20):
            rows = slice(16 * (step % 4), 16 * (step % 4) + 16)
            opt.step(net.backward(net.forward(X[rows]), Y[rows]))
        final[spec] = gpubp.to_numpy(net.params)
    assert relative_error(final["gpu"], final["cpu"]) <= tolerance


# --- input validation at every entry point ------------------------------------------------------


def small_net(**kwargs):
    return gpubp.MLP([3, 4, 2], device="cpu", **({"loss": "cross_entropy"} | kwargs))


GOOD_X = np.zeros((4, 3))
GOOD_Y = np.array([0, 1, 1, 0])


@pytest.mark.parametrize(
    "X, error, message",
    [
        (np.zeros((4, 3, 1)), gpubp.ShapeError, r"X must have shape \(N, 3\) for this net; got \(4, 3, 1\)"),
        (np.zeros((4, 5)), gpubp.ShapeError, r"got \(4, 5\)"),
        (np.zeros(3), gpubp.ShapeError, r"X must have shape \(N, 3\) for this net; got \(3,\)"),
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
    model = small_net()
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
    model = small_net()
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
    model = small_net(dtype="float64")
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


@pytest.mark.gpu
def test_a_gpu_array_given_to_a_cpu_net_is_copied_over():
    require_gpu()
    model = small_net(dtype="float64")
    X = gpubp.device("gpu").asarray(np.ones((2, 3)))
    np.testing.assert_array_equal(model.predict(X), model.predict(np.ones((2, 3))))
    gpu_model = gpubp.MLP([3, 4, 2], loss="cross_entropy", dtype="float64", device="gpu")
    assert gpubp.device_of(gpu_model.predict(np.ones((2, 3)))) == gpu_model.device


def test_bad_seed_and_names():
    with pytest.raises(gpubp.ArgumentError, match=r"seed must be a whole number ≥ 0; got -1"):
        gpubp.MLP([2, 2], seed=-1, device="cpu")
    with pytest.raises(gpubp.ArgumentError, match=r"loss must be one of"):
        gpubp.MLP([2, 2], loss="hinge", device="cpu")


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
    model = small_net()
    either_works_or_explains(lambda: model.forward(X))
    either_works_or_explains(lambda: model.predict(X))
    either_works_or_explains(lambda: gpubp.fit(model, X, Y, epochs=1, batch_size=2, progress=False))


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
