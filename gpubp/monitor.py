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

from . import kernels
from .backend import to_numpy
from .callbacks import Callback
from .errors import check_whole


def learning_speeds(net, X, Y, batch_size: int = 4096) -> list[float]:
    """‖∂E/∂b_l‖ for every layer l, first layer first, where E is the mean loss over all of (X, Y).

    The gradient of the mean over all rows is the row-weighted mean of the batches'
    gradients, so X may be larger than what fits in one batch. One host sync.
    """
    batch_size = check_whole("batch_size", batch_size, 1)
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
# f'(z) < 1% of its maximum where |z| is past these: sigmoid' = 1/(4 cosh²(z/2)) ≤ ¼, tanh' = 1/cosh²(z) ≤ 1
SATURATED_BEYOND = {
    "sigmoid": 2 * math.acosh(1 / math.sqrt(SATURATION)),
    "tanh": math.acosh(1 / math.sqrt(SATURATION)),
}
FOLD = 256  # steps of squared norms kept before they are rooted and added up


def _launched(ran: bool) -> None:
    """The fused path was chosen once, at the start of training: a kernel that did not run would leave 0s."""
    if not ran:
        raise RuntimeError("a LayerMonitor kernel did not run (GPUBP_FUSED changed during fit, or an array is strided)")


class _GradientNorms:
    """Σ over the measured steps of ‖∂E/∂W_l‖ and ‖∂E/∂b_l‖, in the order W0, b0, W1, b1, ...

    A step keeps its squared norms (a dot product per array with NumPy; on a GPU one
    fused launch into a row of a ring); FOLD steps' worth are rooted and added at once.
    """

    def __init__(self, net, fused: bool):
        xp, self.layers, self.fused = net.xp, net.n_layers, fused
        # Where each layer's weights and biases end in the flat buffer, in order: W0, b0, W1, b1, ...
        self.ends = numpy.cumsum([part.size for pair in zip(net.weights, net.biases) for part in pair])
        self.sums = xp.zeros(2 * self.layers, dtype=numpy.float64)
        self.parts = self.parts_of = None
        if fused:
            self.device_ends = xp.asarray(self.ends, dtype=numpy.int64)
            self.ring = xp.zeros((FOLD, 2 * self.layers), dtype=numpy.float64)  # a step's Σg² per row
            self.ring_rows = list(self.ring)  # a CuPy view costs microseconds to make: made once
        self.squares, self.kept = [], 0

    def reset(self) -> None:
        self.sums[...] = 0
        if self.fused:
            self.ring[: self.kept] = 0
        self.squares, self.kept = [], 0

    def add(self, xp, grads) -> None:
        if self.fused:
            _launched(kernels.monitor_squares(grads.flat, self.device_ends, self.ring_rows[self.kept]))
            self.kept += 1
            if self.kept == FOLD:
                self.fold(xp)
            return
        squares = self.squares
        for part in self.parts if self.parts_of is grads.flat else self._parts(grads):
            squares.append(part.dot(part))  # a number on the host: the roots wait for the fold
        if len(squares) >= FOLD * 2 * self.layers:
            self.fold(xp)

    def fold(self, xp) -> None:
        """Add the kept steps' norms (the roots of their squares) into the sums."""
        if self.fused and self.kept:  # the ring's rows, zeroed again for the next steps' atomic adds
            self.sums += xp.sqrt(self.ring[: self.kept]).sum(axis=0)
            self.ring[: self.kept] = 0
            self.kept = 0
        if self.squares:
            squares = numpy.array(self.squares) if xp is numpy else xp.stack(self.squares)  # on the device
            self.sums += xp.sqrt(squares.reshape(-1, 2 * self.layers)).sum(axis=0, dtype=numpy.float64)
            self.squares = []

    def _parts(self, grads):
        """Every layer's weight and bias gradients as flat views, in the order of the sums."""
        self.parts = [g.reshape(-1) for pair in zip(grads.weights, grads.biases) for g in pair]
        self.parts_of = grads.flat  # made once for the loop's gradient buffer
        return self.parts


class _Saturation:
    """How many of each sigmoid or tanh hidden layer's z lie past the saturation line, over the epoch:
    f'(z) < 1% of its maximum exactly where z > line or −line > z."""

    def __init__(self, net, fused: bool, rows: int):
        xp, hidden = net.xp, net.sizes[1:-1]
        self.fused, self.hidden = fused, hidden
        self.line = numpy.dtype(net.dtype).type(SATURATED_BEYOND[net.activation.name])  # in z's dtype
        if fused:
            self.counts = xp.zeros(len(hidden), dtype=numpy.uint64)
            self.count_views = [self.counts[l : l + 1] for l in range(len(hidden))]
        else:  # two comparisons with one ufunc cost less than |z| first and one comparison after
            self.hits = [xp.empty((2, rows, h), dtype=bool) for h in hidden]
        self.reset()

    def reset(self) -> None:
        if self.fused:
            self.counts[...] = 0
        self.found = [0] * len(self.hidden)  # Python ints with NumPy, 0-d arrays on a GPU: no sync per step

    def add(self, xp, trace, n: int) -> None:
        if self.fused:
            for z, count in zip(trace.z, self.count_views):
                _launched(kernels.monitor_saturated(z, self.line, count))
            return
        found = self.found
        for l, (z, hits) in enumerate(zip(trace.z, self.hits)):  # the hidden layers' z: the output's is left
            both = hits[:, :n]
            xp.greater(z, self.line, out=both[0])
            xp.greater(-self.line, z, out=both[1])
            found[l] = found[l] + xp.count_nonzero(both)

    def counted(self, xp):
        """Each hidden layer's count, as one float64 array on the device."""
        found = xp.stack([xp.asarray(count, dtype=numpy.float64) for count in self.found])
        return found + self.counts if self.fused else found


class _Firing:
    """Each ReLU hidden unit's Σ over the epoch's rows of max(a, 0): 0 only if it never fired."""

    def __init__(self, net, fused: bool, rows: int):
        xp, hidden = net.xp, net.sizes[1:-1]
        self.fused, self.leaky = fused, net.activation.name == "leaky_relu"  # leaky: a < 0 where it did not fire
        self.fired = [xp.empty((1, h), dtype=net.dtype) for h in hidden]
        if not fused:  # a step's rows, added with one matrix product: a (1 × n) row of ones times a
            self.ones = xp.ones((1, rows), dtype=net.dtype)
            self.row = [xp.empty((1, h), dtype=net.dtype) for h in hidden]
            self.work = [xp.empty((rows if self.leaky else 0, h), dtype=net.dtype) for h in hidden]
        self.reset()

    def reset(self) -> None:
        for fired in self.fired:
            fired[...] = 0

    def add(self, xp, trace, n: int) -> None:
        activations = trace.a[1:]  # a[1] … a[L]: the hidden layers' come first, and zip leaves the output's
        if self.fused:
            for a, fired in zip(activations, self.fired):
                _launched(kernels.monitor_fired(a, fired))
            return
        ones = self.ones[:, :n]
        for a, work, row, fired in zip(activations, self.work, self.row, self.fired):
            xp.matmul(ones, xp.maximum(a, 0, out=work[:n]) if self.leaky else a, out=row)
            fired += row

    def dead(self):
        """Each hidden layer's share of units that never fired, as 0-d arrays on the device."""
        return [(fired <= 0).mean() for fired in self.fired]


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
    nothing in a step waits for the device. It only reads what each step made: the
    trace's z and a, and the gradients. On a GPU fused kernels (kernels.py) do a step's
    work in 1 + (L − 1) launches; GPUBP_FUSED=0 turns them off.
    """

    def __init__(self, every: int = 1):
        self.every = check_whole("every", every, 1)  # measure every this many steps (1: all of them)

    def on_train_begin(self, state):
        net = state.net
        self.kind, self.hidden, self.layers = _kind(net.activation.name), net.sizes[1:-1], net.n_layers
        self.fused = fused = kernels.monitor_fusable(net.device)  # decided once: every part takes the same path
        rows = state.batch_size  # the most rows a step can have
        with net.device.activate():
            self.start_params = net.xp.empty_like(net.params)
            self.norms = _GradientNorms(net, fused)
            self.units = None
            if self.hidden and self.kind in SATURATED_BEYOND:
                self.units = _Saturation(net, fused, rows)
            elif self.hidden and self.kind == "relu":
                self.units = _Firing(net, fused, rows)

    def on_epoch_begin(self, state):
        self.steps = self.rows = 0
        self.norms.reset()
        if self.units is not None:
            self.units.reset()
        self.start_params[...] = state.net.params

    def on_step_end(self, state, trace, grads):
        # Kept short: on a CPU every line and every array operation here is paid at each step.
        self.steps += 1
        if self.every > 1 and (self.steps - 1) % self.every:
            return
        xp = state.net.xp
        self.norms.add(xp, grads)
        if trace is not None and self.units is not None:  # a step with rows, and hidden units to look at
            n = len(trace.output)
            self.rows += n
            self.units.add(xp, trace, n)

    def on_epoch_record(self, state, record):
        net, xp = state.net, state.net.xp
        measured = max(1, -(-self.steps // self.every))  # the steps that were measured
        weight_norms = xp.stack([xp.sqrt(xp.vdot(W, W)) for W in net.weights])
        moved = xp.subtract(net.params, self.start_params, out=self.start_params)  # ΔW, where the start was
        moves = [moved[end - W.size : end] for W, end in zip(net.weights, self.norms.ends[::2])]
        update = xp.stack([xp.sqrt(xp.vdot(d, d)) for d in moves])
        self.norms.fold(xp)
        saturated = self.units.counted(xp) if isinstance(self.units, _Saturation) else xp.zeros(1)
        dead = self.units.dead() if isinstance(self.units, _Firing) else []
        numbers = [self.norms.sums / measured, weight_norms, update, saturated, *dead]
        host = [to_numpy(x) for x in numbers]  # the epoch's one read-back for the monitor
        sums, weights, updates, saturated = host[:4]
        dead = host[4:]
        layers = []
        for l in range(self.layers):
            entry = {
                "layer": l,
                "speed": float(sums[2 * l + 1]),
                "grad_norm": float(sums[2 * l]),
                "weight_norm": float(weights[l]),
                "update_ratio": float(updates[l] / weights[l]) if weights[l] else math.inf,
            }
            if l < len(self.hidden) and isinstance(self.units, _Saturation):
                entry["saturated"] = float(saturated[l]) / (max(1, self.rows) * self.hidden[l])
            elif l < len(self.hidden) and isinstance(self.units, _Firing):
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
