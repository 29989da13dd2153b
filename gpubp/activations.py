"""Activation functions a = f(z) and their derivatives f'(z).

Each derivative is computed from the activation's output `a` where the math
allows it (for the sigmoid, σ'(z) = a(1 − a)), so the backward pass needs no
second evaluation of f. Every function takes its array module from its input,
so the same code runs on NumPy and CuPy arrays, and writes into `out` when it
is given, so that a training step can run without allocating.

A new activation is one `Activation(...)` entry in ACTIVATIONS below. Its
`cuda` pair, the same two formulas as CUDA C expressions, lets the GPU run the
bias + activation and the delta ⊙ f' steps as single fused kernels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy

from . import kernels
from .backend import get_array_module
from .errors import choice_error

LEAKY_SLOPE = 0.01  # the slope of leaky_relu for z < 0


def _overflow_is_expected(xp):
    """NumPy warns when e^x overflows to inf; where inf gives the right answer, it is not news."""
    return numpy.errstate(over="ignore") if xp is numpy else contextlib.nullcontext()


def sigmoid(z, out=None):
    """σ(z) = 1 / (1 + e^−z).

    For z below about −88 (float32) e^−z overflows to inf, and 1 / (1 + inf) = 0 is
    the right value, so this form is exact at every z and needs no temporary array.
    """
    xp = get_array_module(z)
    out = xp.negative(z, out=out)
    with _overflow_is_expected(xp):
        xp.exp(out, out=out)
    out += 1
    return xp.reciprocal(out, out=out)


def tanh(z, out=None):
    return get_array_module(z).tanh(z, out=out)


def relu(z, out=None):
    return get_array_module(z).maximum(z, 0, out=out)


def leaky_relu(z, out=None):
    xp = get_array_module(z)
    out = xp.multiply(z, LEAKY_SLOPE, out=out)
    return xp.maximum(z, out, out=out)  # max(z, 0.01 z) is z for z > 0, else 0.01 z


def identity(z, out=None):
    return z


def softmax(z, out=None):
    """softmax(z)_k = e^{z_k} / Σ_j e^{z_j} along each row; shifting by the row max keeps e^z finite."""
    xp = get_array_module(z)
    out = xp.subtract(z, z.max(axis=1, keepdims=True), out=out)
    xp.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out


# f'(z), from the output a = f(z).
def sigmoid_prime(z, a, out=None):
    out = get_array_module(a).subtract(1, a, out=out)
    out *= a
    return out  # σ' = σ(1 − σ)


def tanh_prime(z, a, out=None):
    xp = get_array_module(a)
    out = xp.multiply(a, a, out=out)
    return xp.subtract(1, out, out=out)  # tanh' = 1 − tanh²


def _fired(a, out):
    """1 where the neuron's output is positive, else 0, in a's float dtype."""
    xp = get_array_module(a)
    return xp.greater(a, 0, out=xp.empty_like(a) if out is None else out)


def relu_prime(z, a, out=None):
    return _fired(a, out)


def leaky_relu_prime(z, a, out=None):
    out = _fired(a, out)
    out *= 1 - LEAKY_SLOPE
    out += LEAKY_SLOPE
    return out  # 1 where z > 0, else 0.01


def identity_prime(z, a, out=None):
    xp = get_array_module(a)
    if out is None:
        return xp.ones_like(a)
    out.fill(1)
    return out


@dataclass(frozen=True)
class Activation:
    """One activation function: a = f(z), and how blame passes back through it.

    `cuda` holds (f, f') as CUDA C expressions in z and a, of the float type T, for the fused GPU kernels.
    """

    name: str
    f: Callable
    derivative: Callable | None  # f'(z) from (z, a); None where f is not elementwise
    hidden: bool = True  # usable in a hidden layer
    cuda: tuple[str, str] | None = None

    def __call__(self, z, out=None):
        return self.f(z, out=out)

    def activate(self, z, bias, out=None):
        """z += bias, then a = f(z): a layer's forward step after its matrix product.

        One fused kernel on the GPU; `z` is updated in place either way.
        """
        fused = kernels.bias_activation(self, z, bias, out)
        if fused is not None:
            return fused
        z += bias
        return self.f(z, out=out)

    def backprop(self, upstream, z, a, scratch=None):
        """∂E/∂z from ∂E/∂a: upstream ⊙ f'(z), the neuron's sensitivity scaling its blame.

        Works in place: `upstream` becomes the result. `scratch`, an array of z's
        shape, holds f'(z) on the way, so nothing new is allocated. One fused
        kernel on the GPU.
        """
        if kernels.delta(self, upstream, a) is not None:
            return upstream
        upstream *= self.derivative(z, a, out=scratch)
        return upstream


class Identity(Activation):
    """f(z) = z passes blame back unchanged: f' = 1 needs no multiplication."""

    def backprop(self, upstream, z, a, scratch=None):
        return upstream


class Softmax(Activation):
    """Softmax couples a row's outputs, so its backward is a Jacobian-vector product."""

    def activate(self, z, bias, out=None):
        fused = kernels.bias_softmax(z, bias, out)  # one launch per batch on the GPU, one thread per row
        return fused if fused is not None else super().activate(z, bias, out)

    def backprop(self, upstream, z, a, scratch=None):
        # ∂E/∂z_k = a_k (g_k − Σ_j g_j a_j), with g = ∂E/∂a
        if kernels.delta_softmax(upstream, a) is not None:
            return upstream
        xp = get_array_module(a)
        upstream -= xp.multiply(upstream, a, out=scratch).sum(axis=1, keepdims=True)
        upstream *= a
        return upstream


ACTIVATIONS = {
    act.name: act
    for act in (
        Activation("sigmoid", sigmoid, sigmoid_prime, cuda=("1 / (1 + exp(-z))", "a * (1 - a)")),
        Activation("tanh", tanh, tanh_prime, cuda=("tanh(z)", "1 - a * a")),
        Activation("relu", relu, relu_prime, cuda=("z > 0 || z != z ? z : T(0)", "a > 0 ? T(1) : T(0)")),  # NaN stays
        Activation(
            "leaky_relu",
            leaky_relu,
            leaky_relu_prime,
            cuda=(f"z > 0 ? z : T({LEAKY_SLOPE}) * z", f"a > 0 ? T(1) : T({LEAKY_SLOPE})"),
        ),
        Identity("identity", identity, identity_prime, cuda=("z", "1")),
        Softmax("softmax", softmax, None, hidden=False),
    )
}

HIDDEN = tuple(name for name, act in ACTIVATIONS.items() if act.hidden)


def get(name, argument: str = "activation", hidden: bool = False) -> Activation:
    """The Activation called `name`; `hidden` restricts it to those usable in hidden layers."""
    choices = HIDDEN if hidden else tuple(ACTIVATIONS)
    if isinstance(name, Activation) and name.name in choices:
        return name
    if name not in choices:
        raise choice_error(argument, name, choices)
    return ACTIVATIONS[name]
