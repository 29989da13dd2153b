"""Loss functions E(y, ŷ) and their gradients ∂E/∂ŷ, averaged over the batch.

Targets `y` arrive as arrays of the output's shape (N, K); the network turns
class labels into one-hot rows before they get here. The seed's error is
"true answer − predicted answer"; ∂E/∂ŷ carries the opposite sign, ŷ − y,
because the step goes against the gradient.

`out` and `scratch`, when given, are arrays of the output's shape that the
functions write into instead of allocating.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import kernels
from .activations import Activation
from .backend import get_array_module
from .errors import choice_error


def _safe_log(p, out=None):
    """log(p) with p clipped to the dtype's smallest normal number: never log(0)."""
    xp = get_array_module(p)
    out = xp.maximum(p, xp.finfo(p.dtype).tiny, out=out)
    return xp.log(out, out=out)


def mse(output, y, scratch=None):
    """E = mean over samples of ½ Σ_k (y_k − ŷ_k)²."""
    xp = get_array_module(output)
    diff = xp.subtract(y, output, out=scratch)
    return 0.5 * xp.square(diff, out=diff).sum() / len(output)


def mse_gradient(output, y, out=None, scratch=None):
    """∂E/∂ŷ = (ŷ − y) / N."""
    out = get_array_module(output).subtract(output, y, out=out)
    out /= len(output)
    return out


def bce(output, y, scratch=None):
    """E = mean over samples of Σ_k −[y log ŷ + (1 − y) log(1 − ŷ)]."""
    return -(y * _safe_log(output) + (1 - y) * _safe_log(1 - output)).sum() / len(output)


def bce_gradient(output, y, out=None, scratch=None):
    """∂E/∂ŷ = (ŷ − y) / N / ŷ / (1 − ŷ), with ŷ kept off 0 and 1 so it stays finite."""
    xp = get_array_module(output)
    eps = xp.finfo(output.dtype).eps
    p = xp.clip(output, eps, 1 - eps, out=scratch)
    out = xp.subtract(p, y, out=out)
    out /= len(output)
    out /= p
    out /= xp.subtract(1, p, out=p)
    return out


def cross_entropy(output, y, scratch=None):
    """E = mean over samples of −Σ_k y_k log ŷ_k, with ŷ = softmax(z)."""
    log_p = _safe_log(output, out=scratch)
    log_p *= y
    return -log_p.sum() / len(output)


def cross_entropy_gradient(output, y, out=None, scratch=None):
    """∂E/∂ŷ = −y / ŷ / N (the backward pass uses the fused form instead)."""
    xp = get_array_module(output)
    out = xp.maximum(output, xp.finfo(output.dtype).tiny, out=out)
    xp.divide(y, out, out=out)
    out /= -len(output)
    return out


# Each row's loss, for the training loop's bookkeeping: written into `out` (one value per row),
# with `scratch` and `scratch2` arrays of the output's shape to work in.


def mse_rows(output, y, out, scratch, scratch2):
    """½ Σ_k (y_k − ŷ_k)² for each row."""
    xp = get_array_module(output)
    diff = xp.subtract(y, output, out=scratch)
    xp.square(diff, out=diff)
    diff *= 0.5
    return diff.sum(axis=1, out=out)


def bce_rows(output, y, out, scratch, scratch2):
    """−Σ_k [y log ŷ + (1 − y) log(1 − ŷ)] for each row, as (y log ŷ + log(1 − ŷ)) − y log(1 − ŷ)."""
    xp = get_array_module(output)
    terms = _safe_log(output, out=scratch)
    terms *= y
    log_miss = _safe_log(xp.subtract(1, output, out=scratch2), out=scratch2)
    terms += log_miss
    log_miss *= y
    terms -= log_miss
    xp.negative(terms, out=terms)
    return terms.sum(axis=1, out=out)


def cross_entropy_rows(output, y, out, scratch, scratch2):
    """−Σ_k y_k log ŷ_k for each row."""
    xp = get_array_module(output)
    terms = _safe_log(output, out=scratch)
    terms *= y
    xp.negative(terms, out=terms)
    return terms.sum(axis=1, out=out)


def output_minus_target(output, y, out=None, scratch=None):
    """δ_L = (ŷ − y) / N: what the chain rule gives when f' cancels against ∂E/∂ŷ."""
    fused = kernels.output_minus_target(output, y, out)  # one launch on the GPU
    return fused if fused is not None else mse_gradient(output, y, out=out)  # the same arithmetic


@dataclass(frozen=True)
class Loss:
    """A loss: its value, its gradient, and which output activations it accepts.

    `fused` maps an output activation's name to a shortcut for the output
    delta δ_L = ∂E/∂ŷ ⊙ f'(z_L), where the two factors simplify to ŷ − y.
    """

    name: str
    value: Callable
    gradient: Callable
    rows: Callable  # each row's loss, into a given array: what fit sums over an epoch
    default_output: str
    outputs: tuple[str, ...] | None = None  # None: any output activation
    fused: dict | None = None
    cuda: str | None = None  # rows as CUDA C: the term summed over a row, in p = ŷ_k and t = y_k

    def output_delta(self, activation: Activation, z, output, y, out=None, scratch=None):
        """δ_L, the blame at the output layer's weighted input z_L."""
        shortcut = (self.fused or {}).get(activation.name)
        if shortcut is not None:
            return shortcut(output, y, out=out)
        return activation.backprop(self.gradient(output, y, out=out, scratch=scratch), z, output, scratch)


LOSSES = {
    loss.name: loss
    for loss in (
        Loss("mse", mse, mse_gradient, mse_rows, default_output="sigmoid", cuda="(t - p) * (t - p) * T(0.5)"),
        Loss(
            "bce",
            bce,
            bce_gradient,
            bce_rows,
            default_output="sigmoid",
            outputs=("sigmoid", "softmax"),
            fused={"sigmoid": output_minus_target},
            cuda="-((t * SAFE_LOG(p) + SAFE_LOG(1 - p)) - t * SAFE_LOG(1 - p))",
        ),
        Loss(
            "cross_entropy",
            cross_entropy,
            cross_entropy_gradient,
            cross_entropy_rows,
            default_output="softmax",
            outputs=("softmax",),
            fused={"softmax": output_minus_target},
            cuda="-(t * SAFE_LOG(p))",
        ),
    )
}


def get(name) -> Loss:
    if isinstance(name, Loss):
        return name
    if name not in LOSSES:
        raise choice_error("loss", name, tuple(LOSSES))
    return LOSSES[name]
