"""Activation values, their derivatives, and their behaviour at extreme inputs."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import gpubp
from gpubp import activations

Z = np.linspace(-6, 6, 25)

# Reference values straight from each formula, element by element with the math module.
REFERENCE = {
    "sigmoid": lambda z: 1 / (1 + math.exp(-z)),
    "tanh": math.tanh,
    "relu": lambda z: max(z, 0.0),
    "leaky_relu": lambda z: z if z > 0 else 0.01 * z,
    "identity": lambda z: z,
}


@pytest.mark.parametrize("name", REFERENCE)
def test_values_match_the_formula(name):
    expected = [REFERENCE[name](z) for z in Z]
    np.testing.assert_allclose(activations.ACTIVATIONS[name](Z), expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("name", REFERENCE)
def test_derivative_from_output_matches_finite_differences(name):
    act = activations.ACTIVATIONS[name]
    z = Z + 0.01  # keep off relu's kink at 0
    h = 1e-6
    numeric = (act(z + h) - act(z - h)) / (2 * h)
    np.testing.assert_allclose(act.derivative(z, act(z)), numeric, rtol=1e-7, atol=1e-9)


def test_softmax_rows_sum_to_one_and_match_the_formula():
    z = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 1000.0]])
    a = activations.softmax(z)
    e = [math.exp(1), math.exp(2), math.exp(3)]
    np.testing.assert_allclose(a[0], [v / sum(e) for v in e], rtol=1e-14)
    np.testing.assert_allclose(a[1], [0.0, 0.0, 1.0], atol=1e-300)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-15)


def test_softmax_backprop_is_the_jacobian_vector_product():
    rng = np.random.default_rng(0)
    z, g = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    a = activations.softmax(z)
    upstream = g.copy()
    result = activations.ACTIVATIONS["softmax"].backprop(upstream, z, a)
    assert result is upstream  # in place: the caller's upstream becomes ∂E/∂z
    for n in range(4):
        jacobian = np.diag(a[n]) - np.outer(a[n], a[n])  # ∂a_k/∂z_j = a_k (δ_kj − a_j)
        np.testing.assert_allclose(result[n], jacobian @ g[n], rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_is_exact_at_extreme_inputs(dtype):
    # filterwarnings=error in pyproject turns any overflow warning into a failure here.
    z = np.array([-1e4, -1000.0, -50.0, 0.0, 50.0, 1000.0, 1e4], dtype=dtype)
    a = activations.sigmoid(z)
    assert a.dtype == np.dtype(dtype)
    assert a[0] == 0.0 and a[-1] == 1.0 and a[3] == 0.5
    np.testing.assert_allclose(a[2], math.exp(-50) / (1 + math.exp(-50)), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_is_finite_at_extreme_inputs(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=dtype)
    a = activations.softmax(z)
    np.testing.assert_array_equal(a[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(a[1], [1 / 3] * 3, rtol=1e-6)


finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@given(arrays(np.float32, st.integers(1, 20), elements=finite))
def test_sigmoid_stays_in_range_and_keeps_its_dtype(z):
    a = activations.sigmoid(z)
    assert a.dtype == np.float32
    assert np.all((a >= 0) & (a <= 1))
    d = activations.sigmoid_prime(z, a)
    assert np.all((d >= 0) & (d <= 0.25))


@pytest.mark.parametrize("name", activations.ACTIVATIONS)
def test_every_activation_keeps_float32(name):
    z = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    act = activations.ACTIVATIONS[name]
    a = act(z)
    assert a.dtype == np.float32
    assert act.backprop(np.ones_like(z), z, a).dtype == np.float32


def test_unknown_activation_names_the_choices():
    with pytest.raises(gpubp.ArgumentError, match="activation must be one of 'sigmoid'.*got 'sigmod'"):
        gpubp.MLP([2, 2], activation="sigmod", device="cpu")


def test_softmax_is_refused_in_hidden_layers():
    with pytest.raises(ValueError, match="activation must be one of .*got 'softmax'"):
        gpubp.MLP([2, 3, 2], activation="softmax", device="cpu")
