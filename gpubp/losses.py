"""Loss functions E(y, ŷ) and their gradients ∂E/∂ŷ, averaged over the batch.

Targets `y` arrive as arrays of the output's shape (N, K); the network turns
class labels into one-hot rows before they get here. The seed's error is
"true answer − predicted answer"; ∂E/∂ŷ carries the opposite sign, ŷ − y,
because the step goes against the gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .activations import Activation
from .backend import get_array_module
from .errors import choice_error


def _safe_log(p):
    """log(p) with p clipped to the dtype's smallest normal number: never log(0)."""
    xp = get_array_module(p)
    return xp.log(xp.maximum(p, xp.finfo(p.dtype).tiny))


def mse(output, y):
    """E = mean over samples of ½ Σ_k (y_k − ŷ_k)²."""
    diff = y - output
    return 0.5 * (diff * diff).sum() / len(output)


def mse_gradient(output, y):
    """∂E/∂ŷ = (ŷ − y) / N."""
    return (output - y) / len(output)


def bce(output, y):
    """E = mean over samples of Σ_k −[y log ŷ + (1 − y) log(1 − ŷ)]."""
    return -(y * _safe_log(output) + (1 - y) * _safe_log(1 - output)).sum() / len(output)


def bce_gradient(output, y):
    """∂E/∂ŷ = (ŷ − y) / (ŷ (1 − ŷ)) / N, with ŷ kept off 0 and 1 so it stays finite."""
    xp = get_array_module(output)
    eps = xp.finfo(output.dtype).eps
    p = xp.clip(output, eps, 1 - eps)
    return (p - y) / (p * (1 - p)) / len(output)


def cross_entropy(output, y):
    """E = mean over samples of −Σ_k y_k log ŷ_k, with ŷ = softmax(z)."""
    return -(y * _safe_log(output)).sum() / len(output)


def cross_entropy_gradient(output, y):
    """∂E/∂ŷ = −y / ŷ / N (the backward pass uses the fused form instead)."""
    xp = get_array_module(output)
    return -y / xp.maximum(output, xp.finfo(output.dtype).tiny) / len(output)


def output_minus_target(output, y):
    """δ_L = (ŷ − y) / N: what the chain rule gives when f' cancels against ∂E/∂ŷ."""
    return (output - y) / len(output)


@dataclass(frozen=True)
class Loss:
    """A loss: its value, its gradient, and which output activations it accepts.

    `fused` maps an output activation's name to a shortcut for the output
    delta δ_L = ∂E/∂ŷ ⊙ f'(z_L), where the two factors simplify to ŷ − y.
    """

    name: str
    value: Callable
    gradient: Callable
    default_output: str
    outputs: tuple[str, ...] | None = None  # None: any output activation
    fused: dict | None = None

    def output_delta(self, activation: Activation, z, output, y):
        """δ_L, the blame at the output layer's weighted input z_L."""
        shortcut = (self.fused or {}).get(activation.name)
        if shortcut is not None:
            return shortcut(output, y)
        return activation.backprop(self.gradient(output, y), z, output)


LOSSES = {
    loss.name: loss
    for loss in (
        Loss("mse", mse, mse_gradient, default_output="sigmoid"),
        Loss(
            "bce",
            bce,
            bce_gradient,
            default_output="sigmoid",
            outputs=("sigmoid", "softmax"),
            fused={"sigmoid": output_minus_target},
        ),
        Loss(
            "cross_entropy",
            cross_entropy,
            cross_entropy_gradient,
            default_output="softmax",
            outputs=("softmax",),
            fused={"softmax": output_minus_target},
        ),
    )
}


def get(name) -> Loss:
    if isinstance(name, Loss):
        return name
    if name not in LOSSES:
        raise choice_error("loss", name, tuple(LOSSES))
    return LOSSES[name]
