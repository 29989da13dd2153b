"""Loss values against hand-worked numbers, and gradients against finite differences."""

import math

import numpy as np
import pytest

import gpubp
from gpubp import losses


def test_mse_value_by_hand():
    out = np.array([[0.5, 0.0], [1.0, 2.0]])
    y = np.array([[1.0, 0.0], [0.0, 2.0]])
    # sample 1: ½(0.5² + 0²) = 0.125; sample 2: ½(1² + 0²) = 0.5; mean = 0.3125
    assert float(losses.mse(out, y)) == pytest.approx(0.3125, abs=1e-15)


def test_bce_value_by_hand():
    out = np.array([[0.8], [0.4]])
    y = np.array([[1.0], [0.0]])
    # −log 0.8 = 0.22314355; −log(1 − 0.4) = 0.51082562; mean = 0.36698459
    assert float(losses.bce(out, y)) == pytest.approx((-math.log(0.8) - math.log(0.6)) / 2, abs=1e-15)


def test_cross_entropy_value_by_hand():
    out = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    y = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    # −log 0.7 = 0.35667494; −log 0.1 = 2.30258509; mean = 1.32963002
    assert float(losses.cross_entropy(out, y)) == pytest.approx((-math.log(0.7) - math.log(0.1)) / 2, abs=1e-15)


@pytest.mark.parametrize("name", losses.LOSSES)
def test_gradient_matches_finite_differences(name):
    rng = np.random.default_rng(0)
    out = rng.uniform(0.1, 0.9, size=(4, 3))
    y = np.eye(3)[rng.integers(0, 3, size=4)] if name == "cross_entropy" else rng.uniform(0, 1, size=(4, 3))
    loss = losses.LOSSES[name]
    h = 1e-6
    numeric = np.zeros_like(out)
    for idx in np.ndindex(out.shape):
        up, down = out.copy(), out.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (float(loss.value(up, y)) - float(loss.value(down, y))) / (2 * h)
    np.testing.assert_allclose(loss.gradient(out, y), numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["bce", "cross_entropy"])
def test_log_losses_stay_finite_when_the_output_saturates(name, dtype):
    out = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=dtype)
    y = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=dtype)  # the first row is confidently wrong
    value = float(losses.LOSSES[name].value(out, y))
    grad = losses.LOSSES[name].gradient(out, y)
    assert math.isfinite(value) and value > 10
    assert np.all(np.isfinite(grad))


def test_labels_and_one_hot_targets_give_the_same_loss():
    net = gpubp.MLP([4, 3], loss="cross_entropy", dtype="float64", device="cpu")
    X = np.random.default_rng(0).normal(size=(5, 4))
    labels = np.array([0, 2, 1, 1, 0])
    out = net.predict(X)
    assert net.loss(out, labels) == pytest.approx(net.loss(out, np.eye(3)[labels]), rel=1e-15)


def test_unknown_loss_names_the_choices():
    with pytest.raises(gpubp.ArgumentError, match="loss must be one of 'mse', 'bce', 'cross_entropy'; got 'l2'"):
        gpubp.MLP([2, 2], loss="l2", device="cpu")


def test_cross_entropy_needs_softmax_output():
    with pytest.raises(gpubp.ArgumentError, match="cross_entropy.*softmax.*got 'sigmoid'"):
        gpubp.MLP([2, 2], loss="cross_entropy", output_activation="sigmoid", device="cpu")
