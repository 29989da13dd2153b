"""Activation functions a = f(z) and their derivatives f'(z).

Each derivative is computed from the activation's output `a` where the math
allows it (for the sigmoid, σ'(z) = a(1 − a)), so the backward pass needs no
second evaluation of f. Every function takes its array module from its input,
so the same code runs on NumPy and CuPy arrays.

A new activation is one `Activation(...)` entry in ACTIVATIONS below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .backend import get_array_module
from .errors import choice_error

LEAKY_SLOPE = 0.01  # the slope of leaky_relu for z < 0


def sigmoid(z):
    """σ(z) = 1 / (1 + e^−z), without overflow: e^−|z| is at most 1."""
    xp = get_array_module(z)
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1 / (1 + e), e / (1 + e))


def tanh(z):
    return get_array_module(z).tanh(z)


def relu(z):
    return get_array_module(z).maximum(z, 0)


def leaky_relu(z):
    return get_array_module(z).where(z > 0, z, z * LEAKY_SLOPE)


def identity(z):
    return z


def softmax(z):
    """softmax(z)_k = e^{z_k} / Σ_j e^{z_j} along each row; shifting by the row max keeps e^z finite."""
    xp = get_array_module(z)
    e = xp.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# f'(z), from the output a = f(z) (and z where the output does not tell).
def sigmoid_prime(z, a):
    return a * (1 - a)  # σ' = σ(1 − σ)


def tanh_prime(z, a):
    return 1 - a * a  # tanh' = 1 − tanh²


def relu_prime(z, a):
    return (a > 0).astype(a.dtype)  # 1 where the neuron fired, else 0


def leaky_relu_prime(z, a):
    xp = get_array_module(a)
    return xp.where(a > 0, a.dtype.type(1), a.dtype.type(LEAKY_SLOPE))


def identity_prime(z, a):
    return get_array_module(a).ones_like(a)


@dataclass(frozen=True)
class Activation:
    """One activation function: a = f(z), and how blame passes back through it."""

    name: str
    f: Callable
    derivative: Callable | None  # f'(z) from (z, a); None where f is not elementwise
    hidden: bool = True  # usable in a hidden layer

    def __call__(self, z):
        return self.f(z)

    def backprop(self, upstream, z, a):
        """∂E/∂z from ∂E/∂a: upstream ⊙ f'(z), the neuron's sensitivity scaling its blame."""
        return upstream * self.derivative(z, a)


class Softmax(Activation):
    """Softmax couples a row's outputs, so its backward is a Jacobian-vector product."""

    def backprop(self, upstream, z, a):
        # ∂E/∂z_k = a_k (g_k − Σ_j g_j a_j), with g = ∂E/∂a
        return a * (upstream - (upstream * a).sum(axis=1, keepdims=True))


ACTIVATIONS = {
    act.name: act
    for act in (
        Activation("sigmoid", sigmoid, sigmoid_prime),
        Activation("tanh", tanh, tanh_prime),
        Activation("relu", relu, relu_prime),
        Activation("leaky_relu", leaky_relu, leaky_relu_prime),
        Activation("identity", identity, identity_prime),
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
