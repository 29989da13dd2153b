"""Watching the blame flow: how fast each layer learns, and whether its units saturate or die.

The "speed of learning" of layer l is ‖∂E/∂b_l‖, the length of its bias
gradient: the blame that reaches the layer's neurons (Nielsen, "Neural Networks
and Deep Learning", chapter 5). In a deep sigmoid network each earlier layer
learns several times slower than the next: the vanishing gradient.

    speeds = gpubp.learning_speeds(net, X, Y)        # one number per layer, first layer first
    history = gpubp.fit(net, X, Y, epochs=30, callbacks=[gpubp.LayerMonitor()])
    history.layers[-1][0]["speed"]                   # layer 0's mean speed in the last epoch
"""

from __future__ import annotations

import math

import numpy

from .backend import to_numpy
from .callbacks import Callback
from .errors import ArgumentError


def learning_speeds(net, X, Y, batch_size: int = 4096) -> list[float]:
    """‖∂E/∂b_l‖ for every layer l, first layer first, where E is the mean loss over all of (X, Y).

    The gradient of the mean over all rows is the row-weighted mean of the batches'
    gradients, so X may be larger than what fits in one batch. One host sync.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentError(f"batch_size must be a whole number ≥ 1; got {batch_size!r}")
    with net.device.activate():
        X = net.inputs(X)
        Y = net.targets(Y, len(X))
        total = net.new_grads()
        grads = net.new_grads()
        workspace = net.workspace(min(batch_size, len(X)))
        for start in range(0, len(X), batch_size):
            xb, yb = X[start : start + batch_size], Y[start : start + batch_size]
            net.backward(net.forward(xb, workspace, validate=False), yb, grads, workspace, validate=False)
            total.flat += grads.flat * (len(xb) / len(X))
        xp = net.xp
        norms = xp.stack([xp.sqrt(xp.vdot(b, b)) for b in total.biases])
        return [float(v) for v in to_numpy(norms)]


SATURATION = 0.01  # a unit is saturated when f'(z) is below 1% of f's largest slope


class LayerMonitor(Callback):
    """Per-layer health, recorded each epoch into the History (history.layers) and fit's log.

    For each layer l, one dict per epoch:
        speed         ‖∂E/∂b_l‖, the mean over the epoch's steps
        grad_norm     ‖∂E/∂W_l‖, the mean over the epoch's steps
        weight_norm   ‖W_l‖ at the end of the epoch
        update_ratio  ‖ΔW_l‖ / ‖W_l‖ over the epoch (ΔW from its start to its end)
        saturated     sigmoid and tanh hidden layers: the share of activations with f'(z) < 1% of its maximum
        dead          relu and leaky_relu hidden layers: the share of units that never fired in the epoch
    The numbers accumulate on the device and come back with the epoch's other numbers:
    nothing in a step waits for the device.
    """

    def __init__(self, every: int = 1):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ArgumentError(f"every must be a whole number ≥ 1; got {every!r}")
        self.every = every  # measure every this many steps (1: all of them)

    def on_train_begin(self, state):
        net = state.net
        xp, sizes = net.xp, net.sizes
        self.layers = net.n_layers
        # Where each layer's weights and biases sit in the flat buffer, in order: W0, b0, W1, b1, ...
        starts, offset = [], 0
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            starts += [offset, offset + n_in * n_out]
            offset += n_in * n_out + n_out
        self.starts = numpy.array(starts, dtype=numpy.int64)  # on the host: indices, not data
        with net.device.activate():
            self.norms = xp.empty(2 * self.layers, dtype=net.dtype)
            self.sums = xp.zeros(2 * self.layers, dtype=numpy.float64)  # Σ over steps of ‖∂E/∂W_l‖ and ‖∂E/∂b_l‖
            self.start_params = xp.empty_like(net.params)
            hidden = sizes[1:-1]
            self.saturated = xp.zeros(len(hidden), dtype=numpy.float64)  # counts of saturated activations
            self.fired = [xp.zeros(h, dtype=bool) for h in hidden]
        self.work = [(None, None) for _ in hidden]
        self.kind = _kind(net.activation.name)

    def on_epoch_begin(self, state):
        self.steps = self.rows = 0
        self.sums[...] = 0
        self.saturated[...] = 0
        for fired in self.fired:
            fired[...] = False
        self.start_params[...] = state.net.params

    def on_step_end(self, state, trace, grads):
        self.steps += 1
        if (self.steps - 1) % self.every:
            return
        xp = state.net.xp
        # ‖·‖ of every layer's weight and bias gradients: a dot product of each with itself, then the root.
        for i, part in enumerate(self._parts(grads)):
            self.norms[i] = xp.dot(part, part)
        xp.sqrt(self.norms, out=self.norms)
        self.sums += self.norms
        if trace is None or self.kind is None:
            return
        self.rows += len(trace.output)
        for l, a in enumerate(trace.a[1:-1]):  # the hidden layers' activations
            work, hits = self._buffers(xp, a, l)
            if self.kind == "relu":
                xp.greater(a, 0, out=hits)
                self.fired[l] |= hits.any(axis=0)
            else:
                self._saturated(xp, a, work, hits)
                self.saturated[l] += xp.count_nonzero(hits)

    def _parts(self, grads):
        """Every layer's weight and bias gradients as flat views, in the order of self.norms."""
        return [g.reshape(-1) for pair in zip(grads.weights, grads.biases) for g in pair]

    def _buffers(self, xp, a, l):
        """Work arrays of a's shape, made on the first step (and again only for a larger batch)."""
        work, hits = self.work[l]
        if work is None or work.shape[0] < len(a):
            work, hits = xp.empty(a.shape, dtype=a.dtype), xp.empty(a.shape, dtype=bool)
            self.work[l] = (work, hits)
        return work[: len(a)], hits[: len(a)]

    def _saturated(self, xp, a, work, hits):
        """Where f'(z) < 1% of its maximum, from a = f(z): sigmoid a(1−a) < 0.0025, tanh 1 − a² < 0.01."""
        if self.kind == "sigmoid":  # |a − ½| > ½ √(1 − 4·0.0025)
            xp.subtract(a, 0.5, out=work)
            xp.abs(work, out=work)
            return xp.greater(work, 0.5 * math.sqrt(1 - 4 * 0.25 * SATURATION), out=hits)
        xp.abs(a, out=work)
        return xp.greater(work, math.sqrt(1 - SATURATION), out=hits)  # tanh

    def on_epoch_record(self, state, record):
        net, xp = state.net, state.net.xp
        measured = max(1, -(-self.steps // self.every))  # the steps that were measured
        weight_norms = xp.stack([xp.sqrt(xp.vdot(W, W)) for W in net.weights])
        moved = net.params - self.start_params
        moves = [moved[s : s + W.size] for s, W in zip(self.starts[::2], net.weights)]
        update = xp.stack([xp.sqrt(xp.vdot(d, d)) for d in moves])
        dead = [1 - f.mean() for f in self.fired] if self.fired else []
        numbers = [self.sums / measured, weight_norms, update, self.saturated, *dead]
        host = [to_numpy(x) for x in numbers]  # the epoch's one read-back for the monitor
        sums, weights, updates, saturated = host[:4]
        dead = host[4:]
        hidden_units = net.sizes[1:-1]
        layers = []
        for l in range(self.layers):
            entry = {
                "layer": l,
                "speed": float(sums[2 * l + 1]),
                "grad_norm": float(sums[2 * l]),
                "weight_norm": float(weights[l]),
                "update_ratio": float(updates[l] / weights[l]) if weights[l] else math.inf,
            }
            if l < len(hidden_units) and self.kind in ("sigmoid", "tanh"):
                seen = max(1, self.rows) * hidden_units[l]
                entry["saturated"] = float(saturated[l]) / seen
            elif l < len(hidden_units) and self.kind == "relu":
                entry["dead"] = float(dead[l])
            layers.append(entry)
        record["layers"] = layers

    def line(self, record) -> str:
        """A compact line of an epoch's layers: 'L0 speed 1.2e-02 upd 3.1e-03 sat 4% | L1 ...'."""
        parts = []
        for layer in record.get("layers", []):
            text = f"L{layer['layer']} speed {layer['speed']:.1e} upd {layer['update_ratio']:.1e}"
            if "saturated" in layer:
                text += f" sat {layer['saturated']:.0%}"
            if "dead" in layer:
                text += f" dead {layer['dead']:.0%}"
            parts.append(text)
        return " | ".join(parts)


def _kind(activation: str) -> str | None:
    if activation in ("sigmoid", "tanh"):
        return activation
    if activation in ("relu", "leaky_relu"):
        return "relu"
    return None
