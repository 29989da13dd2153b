"""Gradient descent: W_new = W_old − learning_rate × gradient, in place.

One update covers every layer, because the parameters and the gradients each
live in one flat buffer.
"""

from __future__ import annotations

from . import kernels
from .errors import ArgumentError, check_number


class SGD:
    """Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay.

    With momentum μ, the velocity v = μ v + g and the step is W −= lr · v
    (Nesterov: W −= lr · (g + μ v)). Weight decay adds λ W to the gradient.
    These are the same update rules as PyTorch's torch.optim.SGD.
    """

    def __init__(self, net, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.net = net
        self.lr = check_number("lr", lr, 0.0, low_ok=False)
        self.initial_lr = self.lr  # what learning-rate schedules scale from
        self.momentum = check_number("momentum", momentum, 0.0, 1.0)
        self.weight_decay = check_number("weight_decay", weight_decay, 0.0)
        if nesterov and self.momentum == 0.0:
            raise ArgumentError("nesterov=True needs momentum > 0; got momentum=0.0")
        self.nesterov = bool(nesterov)
        with net.device.activate():
            self.velocity = net.xp.zeros_like(net.params) if self.momentum else None
            self._work = net.xp.empty_like(net.params)  # made once: a step allocates nothing

    def hyperparameters(self) -> dict:
        """Everything but the velocity, as plain numbers (for checkpoints and logs)."""
        return {
            "name": "SGD",
            "lr": self.lr,
            "initial_lr": self.initial_lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }

    def step(self, grads) -> None:
        """Move every weight and bias a small step against its gradient: W −= lr · g."""
        xp, params, work = self.net.xp, self.net.params, self._work
        with self.net.device.activate():
            if kernels.sgd_step(
                params, grads.flat, self.velocity, self.lr, self.momentum, self.weight_decay, self.nesterov
            ):
                return  # the whole update below, as one kernel on the GPU
            g = grads.flat
            if self.weight_decay:  # g + λW
                g = xp.multiply(params, self.weight_decay, out=work)
                g += grads.flat
            direction = g
            if self.velocity is not None:  # v = μv + g
                self.velocity *= self.momentum
                self.velocity += g
                direction = g if self.nesterov else self.velocity
            params -= xp.multiply(direction, self.lr, out=work)
            if self.nesterov:  # Nesterov steps along g + μv: the μv part
                params -= xp.multiply(self.velocity, self.lr * self.momentum, out=work)
