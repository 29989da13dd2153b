"""The backward pass against central finite differences, in float64."""

import numpy as np
import pytest

import gpubp
from gpubp import activations, losses

from .conftest import require_gpu

DEPTHS = {"no hidden layer": [3, 2], "one hidden": [3, 5, 2], "two hidden": [3, 5, 4, 2]}


def data(loss, n_out, n=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    if loss == "cross_entropy":
        return X, rng.integers(0, n_out, size=n)
    if loss == "bce":
        return X, rng.integers(0, 2, size=(n, n_out)).astype(float)
    return X, rng.normal(size=(n, n_out))


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("loss", losses.LOSSES)
@pytest.mark.parametrize("activation", activations.HIDDEN)
def test_backprop_matches_finite_differences(activation, loss, depth):
    net = gpubp.MLP(DEPTHS[depth], activation=activation, loss=loss, dtype="float64", device="cpu", seed=1)
    X, Y = data(loss, net.sizes[-1])
    errors = gpubp.gradcheck(net, X, Y)
    assert set(errors) == {f"{kind}[{l}]" for kind in ("weights", "biases") for l in range(net.n_layers)}
    assert max(errors.values()) <= 1e-6, errors


@pytest.mark.parametrize("output", activations.ACTIVATIONS)
def test_every_output_activation_under_mse(output):
    net = gpubp.MLP([3, 4, 2], activation="tanh", output_activation=output, loss="mse", dtype="float64", device="cpu")
    X, Y = data("mse", 2)
    assert max(gpubp.gradcheck(net, X, Y).values()) <= 1e-6


def test_bce_through_softmax_uses_the_general_chain_rule():
    net = gpubp.MLP([3, 4, 2], output_activation="softmax", loss="bce", dtype="float64", device="cpu")
    X, Y = data("bce", 2)
    assert max(gpubp.gradcheck(net, X, Y).values()) <= 1e-6


@pytest.mark.parametrize("loss, output", [("cross_entropy", "softmax"), ("bce", "sigmoid")])
def test_fused_output_delta_equals_the_unfused_chain_rule(loss, output):
    rng = np.random.default_rng(2)
    z = rng.normal(size=(5, 3))
    act = activations.get(output, "output_activation")
    a = act(z)
    y = np.eye(3)[rng.integers(0, 3, size=5)]
    loss_fn = losses.get(loss)
    fused = loss_fn.output_delta(act, z, a, y)
    unfused = act.backprop(loss_fn.gradient(a, y), z, a)
    np.testing.assert_allclose(fused, unfused, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(fused, (a - y) / 5, rtol=1e-12)


def test_gradcheck_catches_a_wrong_gradient():
    # gradcheck must be able to fail: a net whose backward halves the first layer's weight gradient.
    class Broken(gpubp.MLP):
        def backward(self, trace, Y, out=None):
            grads = super().backward(trace, Y, out)
            grads.weights[0][...] *= 0.5
            return grads

    net = Broken([3, 4, 2], dtype="float64", device="cpu")
    X, Y = data("mse", 2)
    errors = gpubp.gradcheck(net, X, Y)
    assert errors["weights[0]"] > 0.1
    assert errors["weights[1]"] <= 1e-6


def test_gradcheck_on_device(device):
    net = gpubp.MLP([3, 5, 2], activation="tanh", loss="cross_entropy", dtype="float64", device=device)
    X, Y = data("cross_entropy", 2)
    assert max(gpubp.gradcheck(net, X, Y).values()) <= 1e-6
    # gradcheck puts every parameter back as it found it
    before = gpubp.to_numpy(net.params).copy()
    gpubp.gradcheck(net, X, Y)
    np.testing.assert_array_equal(gpubp.to_numpy(net.params), before)


@pytest.mark.gpu
def test_gradcheck_and_conversions_on_a_second_gpu_while_the_first_is_current():
    require_gpu(1)  # two GPUs: cuda:1's parameters must be written on cuda:1, whichever device is current
    net = gpubp.MLP([3, 5, 2], activation="tanh", loss="cross_entropy", dtype="float64", device="cuda:1")
    X, Y = data("cross_entropy", 2)
    with net.xp.cuda.Device(0):
        errors = gpubp.gradcheck(net, X, Y)
        made = (net.inputs(X.astype(np.int64)), net.targets(np.array([0, 1, 1, 0, 1, 0]), 6))  # converted, one-hot
    assert max(errors.values()) <= 1e-6 and net.params.device.id == 1
    assert [a.device.id for a in made] == [1, 1]
