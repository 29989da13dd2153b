"""Gradient descent: W_new = W_old − learning_rate × (a step built from the gradient), in place.

One update covers every layer, because the parameters and the gradients each
live in one flat buffer. Every optimizer keeps its state in arrays the size of
that buffer, made once (`state`), so a step allocates nothing, and a checkpoint
saves the state and the step count, so a resumed run continues exactly.
"""

from __future__ import annotations

from . import kernels
from .errors import ArgumentError, ArgumentTypeError, check_number, check_whole


class Optimizer:
    """What every optimizer has: the net, lr (which schedules change) and initial_lr, its state and step count."""

    name = "Optimizer"

    def __init__(self, net, lr):
        self.net = net
        self.lr = check_number("lr", lr, 0.0, low_ok=False)
        self.initial_lr = self.lr  # what learning-rate schedules scale from
        self.steps = 0  # updates made so far (Adam's t)

    @property
    def state(self) -> dict:
        """The arrays the optimizer carries from step to step, by name (for checkpoints and restores)."""
        return {}

    def hyperparameters(self) -> dict:
        """Everything but the state arrays, as plain numbers (for checkpoints and logs)."""
        return {"name": self.name, "lr": self.lr, "initial_lr": self.initial_lr, "steps": self.steps}

    @classmethod
    def from_hyperparameters(cls, net, hyper: dict) -> Optimizer:
        """The optimizer that `hyperparameters()` described, for `net`: fresh state, the lr a schedule had
        reached and the step count. Called on Optimizer itself, it builds the kind that `hyper` names."""
        name = hyper.get("name", "SGD")
        if cls is Optimizer:
            kinds = {}
            for kind in _kinds(Optimizer):  # each name's first class: a subclass that keeps its parent's name is not it
                if "name" in vars(kind):
                    kinds.setdefault(kind.name, kind)
            if name not in kinds:
                raise ArgumentError(f"optimizer must be one of {', '.join(kinds)}; got {name!r}")
            return kinds[name].from_hyperparameters(net, hyper)
        if name != cls.name:
            raise ArgumentError(f"these hyperparameters describe a {name} optimizer, not a {cls.name}")
        optimizer = cls._built(net, hyper)
        optimizer.lr = check_number("lr", hyper["lr"], 0.0, low_ok=False)  # where a schedule had taken it
        optimizer.steps = check_whole("steps", hyper.get("steps", 0), 0)
        return optimizer

    @classmethod
    def _built(cls, net, hyper: dict) -> Optimizer:
        """A new optimizer of this kind, made with the settings in `hyper` (its own constructor's)."""
        raise NotImplementedError

    def step(self, grads) -> None:
        raise NotImplementedError


def _kinds(base):
    """Every subclass of `base`, however deep."""
    for kind in base.__subclasses__():
        yield kind
        yield from _kinds(kind)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay.

    With momentum μ, the velocity v = μ v + g and the step is W −= lr · v
    (Nesterov: W −= lr · (g + μ v)). Weight decay adds λ W to the gradient.
    These are the same update rules as PyTorch's torch.optim.SGD.
    """

    name = "SGD"

    def __init__(self, net, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(net, lr)
        self.momentum = check_number("momentum", momentum, 0.0, 1.0)
        self.weight_decay = check_number("weight_decay", weight_decay, 0.0)
        if nesterov and self.momentum == 0.0:
            raise ArgumentError("nesterov=True needs momentum > 0; got momentum=0.0")
        self.nesterov = bool(nesterov)
        with net.device.activate():
            self.velocity = net.xp.zeros_like(net.params) if self.momentum else None
            self._work = net.xp.empty_like(net.params)  # made once: a step allocates nothing

    @property
    def state(self) -> dict:
        return {} if self.velocity is None else {"velocity": self.velocity}

    def hyperparameters(self) -> dict:
        return super().hyperparameters() | {
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }

    @classmethod
    def _built(cls, net, hyper):
        return cls(net, hyper["initial_lr"], hyper["momentum"], hyper["nesterov"], hyper["weight_decay"])

    def step(self, grads) -> None:
        """Move every weight and bias a small step against its gradient: W −= lr · g."""
        xp, params, work = self.net.xp, self.net.params, self._work
        self.steps += 1
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


class Adam(Optimizer):
    """Adam: a step along the gradient's running mean m, scaled by its running root mean square √v.

        g = ∇ + λW                        (weight decay as an L2 term; AdamW decays W instead)
        m = β₁ m + (1 − β₁) g             the first moment
        v = β₂ v + (1 − β₂) g²            the second moment
        W −= lr / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)

    The same update rule, in the same order of operations, as PyTorch's torch.optim.Adam.
    """

    name = "Adam"
    decoupled = False  # AdamW: decay W itself, W ×= 1 − lr·λ, instead of adding λW to the gradient

    def __init__(self, net, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(net, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ArgumentTypeError(f"betas must be a pair (beta1, beta2); got {betas!r}")
        self.betas = (check_number("betas[0]", betas[0], 0.0, 1.0), check_number("betas[1]", betas[1], 0.0, 1.0))
        self.eps = check_number("eps", eps, 0.0)
        self.weight_decay = check_number("weight_decay", weight_decay, 0.0)
        with net.device.activate():
            self.m = net.xp.zeros_like(net.params)
            self.v = net.xp.zeros_like(net.params)
            self._work = net.xp.empty_like(net.params)
            self._work2 = net.xp.empty_like(net.params)

    @property
    def state(self) -> dict:
        return {"m": self.m, "v": self.v}

    def hyperparameters(self) -> dict:
        return super().hyperparameters() | {
            "betas": list(self.betas),
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }

    @classmethod
    def _built(cls, net, hyper):
        return cls(net, hyper["initial_lr"], tuple(hyper["betas"]), hyper["eps"], hyper["weight_decay"])

    def step(self, grads) -> None:
        """One Adam update of every weight and bias."""
        xp, params, work, work2 = self.net.xp, self.net.params, self._work, self._work2
        (beta1, beta2), wd = self.betas, self.weight_decay
        self.steps += 1
        step_size = self.lr / (1 - beta1**self.steps)
        correction2 = (1 - beta2**self.steps) ** 0.5
        with self.net.device.activate():
            if kernels.adam_step(
                params, grads.flat, self.m, self.v, self.lr, beta1, beta2, self.eps, wd, self.decoupled,
                step_size, correction2,
            ):  # fmt: skip
                return  # the whole update below, as one kernel on the GPU
            g = grads.flat
            if wd and self.decoupled:  # W ×= 1 − lr·λ
                params *= 1 - self.lr * wd
            elif wd:  # g + λW
                g = xp.multiply(params, wd, out=work)
                g += grads.flat
            # m = β₁ m + (1 − β₁) g, computed as PyTorch's lerp from m towards g computes it
            weight = 1 - beta1
            if weight < 0.5:  # m + w (g − m)
                delta = xp.subtract(g, self.m, out=work2)
                delta *= weight
                self.m += delta
            else:  # g − (g − m)(1 − w)
                delta = xp.subtract(g, self.m, out=work2)
                delta *= 1 - weight
                xp.subtract(g, delta, out=self.m)
            # v = β₂ v + (1 − β₂) g g
            self.v *= beta2
            square = xp.multiply(g, 1 - beta2, out=work2)
            square *= g
            self.v += square
            # W += (−step_size · m) / (√v / √(1 − β₂ᵗ) + ε)
            denominator = xp.sqrt(self.v, out=work2)
            denominator /= correction2
            denominator += self.eps
            update = xp.multiply(self.m, -step_size, out=work)
            update /= denominator
            params += update


class AdamW(Adam):
    """Adam with decoupled weight decay: W ×= 1 − lr·λ each step, as PyTorch's torch.optim.AdamW."""

    name = "AdamW"
    decoupled = True

    def __init__(self, net, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(net, lr, betas, eps, weight_decay)
