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
# f'(z) < 1% of its maximum where |z| is past these: sigmoid' = 1/(4 cosh²(z/2)) ≤ ¼, tanh' = 1/cosh²(z) ≤ 1
SATURATED_BEYOND = {
    "sigmoid": 2 * math.acosh(1 / math.sqrt(SATURATION)),
    "tanh": math.acosh(1 / math.sqrt(SATURATION)),
}
FOLD = 256  # steps of squared norms kept before they are rooted and added up
# On a CPU every NumPy call costs microseconds whatever its size, so the hidden layers' z and a of
# up to KEEP steps lie one after another in fit's workspace and one look counts them all; at most
# KEEP_VALUES numbers a layer, for the room is only worth it where the batches are small.
KEEP = 8
KEEP_VALUES = 2**18


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
    nothing in a step waits for the device. On a GPU fused kernels (kernels.py) do a
    step's work in 1 + (L − 1) launches; GPUBP_FUSED=0 turns them off. Elsewhere the
    units are counted every few steps, over rows of z and a that fit's workspace keeps.
    """

    def __init__(self, every: int = 1):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ArgumentError(f"every must be a whole number ≥ 1; got {every!r}")
        self.every = every  # measure every this many steps (1: all of them)

    def on_train_begin(self, state):
        net = state.net
        xp, sizes = net.xp, net.sizes
        self.layers = net.n_layers
        # Where each layer's weights and biases end in the flat buffer, in order: W0, b0, W1, b1, ...
        self.ends = numpy.cumsum([part.size for pair in zip(net.weights, net.biases) for part in pair])
        self.kind = _kind(net.activation.name)
        self.device = net.device
        hidden = sizes[1:-1]
        self.leaky = net.activation.name == "leaky_relu"  # a < 0 where it did not fire: clip it first
        with net.device.activate():
            # Σ over the steps of ‖∂E/∂W_l‖ and ‖∂E/∂b_l‖, in the order W0, b0, W1, b1, ...
            self.sums = xp.zeros(2 * self.layers, dtype=numpy.float64)
            self.start_params = xp.empty_like(net.params)
            # ReLU layers: each unit's Σ over the epoch's rows of max(a, 0), which is 0 only if it never
            # fired; a look adds its rows with one matrix product, a (1 × m) row of ones times a
            self.fired = [xp.empty((1, h), dtype=net.dtype) for h in hidden]
            self.fired_look = [xp.empty((1, h), dtype=net.dtype) for h in hidden]  # one look's sums
        self.hidden = hidden
        if self.kind in SATURATED_BEYOND:  # in z's dtype: a Python float costs a conversion every step
            self.threshold = numpy.dtype(net.dtype).type(SATURATED_BEYOND[self.kind])
        self.fold_at = FOLD * 2 * self.layers  # squares kept before a fold: FOLD steps' worth
        self.parts = self.parts_of = None
        # On a GPU, fused kernels do a step's work in 1 + (L − 1) launches instead of about 8 (kernels.py)
        self.fused = kernels.monitor_fusable(net.device)
        if self.fused:
            with net.device.activate():
                self.device_ends = xp.asarray(self.ends, dtype=numpy.int64)
                self.ring = xp.zeros((FOLD, 2 * self.layers), dtype=numpy.float64)  # a step's Σg² per row
                self.counts = xp.zeros(len(hidden), dtype=numpy.uint64)  # saturated, per hidden layer
            self.count_views = [self.counts[l : l + 1] for l in range(len(hidden))]
            self.ring_views = list(self.ring)  # a CuPy view costs microseconds to make: made once
        self.ring_rows = 0
        self.room = 0  # rows in the looks' arrays (self.hits, self.work, self.ones): made before fit's first step
        self.workspace = None  # fit's workspace, when it keeps several steps' rows for one look
        ws = state.workspace
        if not self.fused and self.kind is not None and hidden and ws is not None:
            kept = min(KEEP * ws.rows, KEEP_VALUES // max(net.sizes[1:]))
            if kept > ws.rows and ws.keep(kept):
                self.workspace, self.kept = ws, kept
            self._make_room(xp, kept if self.workspace is not None else ws.rows)  # before the first step

    def on_epoch_begin(self, state):
        self.steps = self.rows = 0
        self.squares = []  # the squared norms of the steps since the last fold, flat: 2L a step
        self.sums[...] = 0
        # Saturated activations per hidden layer: Python ints with NumPy, 0-d arrays on the GPU (no sync)
        self.saturated = [0] * (self.layers - 1)
        for fired in self.fired:
            fired[...] = 0
        self.start_params[...] = state.net.params
        if self.fused:
            self.ring[: self.ring_rows] = 0
            self.counts[...] = 0
        self.ring_rows = 0
        if self.workspace is not None:
            self.workspace.start = 0

    def on_step_end(self, state, trace, grads):
        # Kept short: on a CPU every line and every array operation here is paid at each step.
        self.steps += 1
        if self.every > 1 and (self.steps - 1) % self.every:
            return
        # ‖·‖² of every layer's weight and bias gradients: each one's dot product with itself,
        # a number on the host with NumPy, a 0-d array on the GPU. The roots wait for the fold,
        # so a step costs one dot per array and nothing more.
        if self.fused and kernels.monitor_squares(grads.flat, self.device_ends, self.ring_views[self.ring_rows]):
            self.ring_rows += 1
            if self.ring_rows == FOLD:
                self._fold(state.net.xp)
        else:
            squares = self.squares
            for part in self.parts if self.parts_of is grads.flat else self._parts(grads):
                squares.append(part.dot(part))
            if len(squares) >= self.fold_at:
                self._fold(state.net.xp)
        if trace is None or self.kind is None or not self.hidden:
            return  # no rows in this step, or no hidden layer to look at
        n = len(trace.output)
        self.rows += n
        if self.kind == "relu":
            if self.fused and kernels.monitor_fired(trace.a[1], self.fired[0]):
                for a, fired in zip(trace.a[2:-1], self.fired[1:]):  # fusion is on for all layers or none
                    kernels.monitor_fired(a, fired)
                return
        elif self.fused and kernels.monitor_saturated(trace.z[0], self.threshold, self.count_views[0]):
            for z, count in zip(trace.z[1:], self.count_views[1:]):  # fusion is on for all layers or none
                kernels.monitor_saturated(z, self.threshold, count)
            return
        ws = self.workspace
        if ws is None:  # no rows kept: look at this step's now
            self._look(state.net.xp, trace.z, trace.a[1:], n)
            return
        ws.start += n  # keep this step's rows: the next step's z and a go after them
        if ws.start + ws.rows > self.kept:  # no room for another batch: look at all the kept rows
            self._look(state.net.xp, ws.zs, ws.activations, ws.start)
            ws.start = 0

    def _look(self, xp, zs, activations, m):
        """Count the saturated z (sigmoid, tanh), or add up each unit's firing (ReLU), in the
        first m rows of each hidden layer's z or a: one step's rows or several steps'."""
        if m > self.room:
            self._make_room(xp, m)
        if self.kind == "relu":
            # Each unit's Σ of max(a, 0) over the rows, which stays 0 only if it never fired:
            # a (1 × m) row of ones times a, in one matrix product
            ones = self.ones[:, :m]
            for a, work, row, fired in zip(activations, self.work, self.fired_look, self.fired):
                xp.matmul(ones, xp.maximum(a[:m], 0, out=work[:m]) if self.leaky else a[:m], out=row)
                fired += row
            return
        # f'(z) < 1% of its maximum exactly where |z| is past the line: z > line or −line > z.
        # Two comparisons with one ufunc cost less than |z| first and one comparison after.
        line, counts = self.threshold, self.saturated
        for l, (z, hits) in enumerate(zip(zs, self.hits)):
            z, both = z[:m], hits[:, :m]
            xp.greater(z, line, out=both[0])
            xp.greater(-line, z, out=both[1])
            counts[l] = counts[l] + xp.count_nonzero(both)

    def _fold(self, xp):
        """Add the kept steps' norms (the roots of their squares) into the epoch's sums."""
        if self.ring_rows:  # the fused path's rows, zeroed again for the next steps' atomic adds
            self.sums += xp.sqrt(self.ring[: self.ring_rows]).sum(axis=0)
            self.ring[: self.ring_rows] = 0
            self.ring_rows = 0
        if self.squares:
            squares = numpy.array(self.squares) if xp is numpy else xp.stack(self.squares)  # on the device
            self.sums += xp.sqrt(squares.reshape(-1, 2 * self.layers)).sum(axis=0, dtype=numpy.float64)
        self.squares = []

    def _parts(self, grads):
        """Every layer's weight and bias gradients as flat views, in the order of self.sums."""
        self.parts = [g.reshape(-1) for pair in zip(grads.weights, grads.biases) for g in pair]
        self.parts_of = grads.flat  # made once for the loop's gradient buffer
        return self.parts

    def _make_room(self, xp, m):
        """The looks' arrays for m rows: (z > line, −line > z) as booleans for saturation;
        a row of ones, and room for max(a, 0) with leaky ReLU, for firing."""
        with self.device.activate():
            if self.kind in SATURATED_BEYOND:
                self.hits = [xp.empty((2, m, h), dtype=bool) for h in self.hidden]
            else:
                dtype = self.fired[0].dtype
                self.ones = xp.ones((1, m), dtype=dtype)
                self.work = [xp.empty((m if self.leaky else 0, h), dtype=dtype) for h in self.hidden]
        self.room = m

    def on_epoch_record(self, state, record):
        net, xp = state.net, state.net.xp
        measured = max(1, -(-self.steps // self.every))  # the steps that were measured
        weight_norms = xp.stack([xp.sqrt(xp.vdot(W, W)) for W in net.weights])
        moved = xp.subtract(net.params, self.start_params, out=self.start_params)  # ΔW, where the start was
        moves = [moved[end - W.size : end] for W, end in zip(net.weights, self.ends[::2])]
        update = xp.stack([xp.sqrt(xp.vdot(d, d)) for d in moves])
        self._fold(xp)
        if self.workspace is not None and self.workspace.start:  # the epoch's last kept rows
            self._look(xp, self.workspace.zs, self.workspace.activations, self.workspace.start)
            self.workspace.start = 0
        dead = [(fired <= 0).mean() for fired in self.fired] if self.kind == "relu" else []
        saturated = xp.stack([xp.asarray(count, dtype=numpy.float64) for count in self.saturated or [0]])
        if self.fused and self.saturated:
            saturated += self.counts  # what the fused kernel counted
        numbers = [self.sums / measured, weight_norms, update, saturated, *dead]
        host = [to_numpy(x) for x in numbers]  # the epoch's one read-back for the monitor
        sums, weights, updates, saturated = host[:4]
        dead = host[4:]
        hidden_units = self.hidden
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
