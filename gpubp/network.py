"""The multilayer perceptron: an explicit forward pass and chain-rule backward pass.

Indexing, for layers l = 0 … L−1 (batch-major: one row per sample):

    a[0] = X                              the input
    z[l] = a[l] @ weights[l] + biases[l]  the weighted input   (z = w·a_in + b)
    a[l+1] = f(z[l])                      the activation       (a = σ(z))
    deltas[l] = ∂E/∂z[l]                  layer l's "blame"

so weights[l], biases[l], z[l] and deltas[l] all belong to layer l, whose
input is a[l] and whose output is a[l+1]. All parameters live in one flat
buffer, `params`, and weights[l] and biases[l] are views into it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy

from . import activations, losses
from .backend import Device, device_of, get_array_module
from .backend import device as get_device
from .errors import ArgumentError, ArgumentTypeError, ShapeError, check_whole, choice_error, not_finite
from .rows import is_memory_map

INITS = ("glorot", "he")
DTYPES = ("float32", "float64")


@dataclass
class Trace:
    """What the forward pass saw: z[l] for each layer, and a[0] = X through a[L] = ŷ."""

    z: list
    a: list

    @property
    def output(self):
        """ŷ, the network's prediction: the last activation."""
        return self.a[-1]


@dataclass
class Grads:
    """∂E/∂W and ∂E/∂b for every layer, views into one flat buffer, plus the deltas."""

    flat: object
    weights: tuple
    biases: tuple
    deltas: list


class Workspace:
    """Arrays for every z, a, delta and one scratch row block, made once for batches of up to `rows`.

    forward and backward write into these instead of allocating, which is how
    fit's training step allocates nothing. A batch of n ≤ rows uses the first n
    rows of each (still contiguous). Each call overwrites the previous step's values.
    """

    def __init__(self, net, rows: int, backward: bool = True):
        xp, widths = net.xp, net.sizes[1:]
        self.net = net
        with net.device.activate():
            self.rows = rows
            self.zs = [xp.empty((rows, w), dtype=net.dtype) for w in widths]
            self.activations = [xp.empty((rows, w), dtype=net.dtype) for w in widths]  # a[1] … a[L]
            self.deltas = [xp.empty((rows, w), dtype=net.dtype) for w in widths] if backward else []
            self.flat_scratch = xp.empty(rows * max(widths), dtype=net.dtype)
            # for each row's loss and accuracy: a second array of the output's shape, and two of indices
            self.flat_scratch2 = xp.empty(rows * widths[-1], dtype=net.dtype)
            self.index_pair = xp.empty((2, rows), dtype=numpy.int64)

    def z(self, l: int, n: int):
        return self.zs[l][:n]

    def a(self, l: int, n: int):
        """The buffer for a[l+1], the output of layer l."""
        return self.activations[l][:n]

    def delta(self, l: int, n: int):
        return self.deltas[l][:n]

    def scratch(self, n: int, width: int):
        return self.flat_scratch[: n * width].reshape(n, width)

    def scratch2(self, n: int, width: int):
        return self.flat_scratch2[: n * width].reshape(n, width)

    def indices(self, n: int):
        return self.index_pair[0, :n], self.index_pair[1, :n]


class _NoWorkspace:
    """Hands out None for every buffer, so NumPy and CuPy allocate fresh arrays: the readable default."""

    def z(self, l, n):
        return None

    a = delta = z

    def scratch(self, n, width):
        return None

    scratch2 = scratch

    def indices(self, n):
        return None, None


NO_WORKSPACE = _NoWorkspace()


def _layer_views(flat, sizes):
    """Views weights[l] of shape (n_in, n_out) and biases[l] of shape (n_out,) into `flat`."""
    weights, biases, offset = [], [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        weights.append(flat[offset : offset + n_in * n_out].reshape(n_in, n_out))
        offset += n_in * n_out
        biases.append(flat[offset : offset + n_out])
        offset += n_out
    return tuple(weights), tuple(biases)


def _check_sizes(sizes) -> tuple[int, ...]:
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
        raise ArgumentTypeError(f"sizes must be a sequence of layer widths such as [784, 64, 10]; got {sizes!r}")
    if len(sizes) < 2:
        raise ArgumentError(f"sizes needs at least 2 entries (inputs and outputs); got {list(sizes)!r}")
    for n in sizes:
        if isinstance(n, bool) or not isinstance(n, (int, numpy.integer)):
            raise ArgumentTypeError(f"sizes must hold whole numbers; got {n!r} in {list(sizes)!r}")
        if n <= 0:
            raise ArgumentError(f"every layer width in sizes must be positive; got {n!r} in {list(sizes)!r}")
    return tuple(int(n) for n in sizes)


def _check_dtype(dtype) -> numpy.dtype:
    try:
        dt = numpy.dtype(dtype)
    except TypeError:
        raise ArgumentTypeError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}") from None
    if dt.kind != "f":
        raise ArgumentTypeError(f"dtype must be a float type, one of {', '.join(DTYPES)}; got {dtype!r}")
    if dt.name not in DTYPES:
        raise ArgumentError(f"dtype must be one of {', '.join(DTYPES)}; got {dt.name!r}")
    return dt


class MLP:
    """A multilayer perceptron trained by explicit backpropagation.

    net = MLP([2, 4, 1], activation="sigmoid", loss="mse", device="cpu")
    trace = net.forward(X)          # every z and a
    grads = net.backward(trace, Y)  # every ∂E/∂W, ∂E/∂b and delta
    SGD(net, lr=0.5).step(grads)
    """

    def __init__(
        self,
        sizes,
        activation="sigmoid",
        output_activation=None,
        loss="mse",
        dtype="float32",
        device="auto",
        seed=0,
        init=None,
    ):
        self.sizes = _check_sizes(sizes)
        self.activation = activations.get(activation, hidden=True)
        self.loss_fn = losses.get(loss)
        if output_activation is None:
            output_activation = self.loss_fn.default_output
        self.output_activation = activations.get(output_activation, "output_activation")
        allowed = self.loss_fn.outputs
        if allowed is not None and self.output_activation.name not in allowed:
            raise ArgumentError(
                f"loss {self.loss_fn.name!r} needs output_activation in {allowed!r}; "
                f"got {self.output_activation.name!r}"
            )
        self.dtype = _check_dtype(dtype)
        if init is None:
            init = "he" if self.activation.name in ("relu", "leaky_relu") else "glorot"
        if init not in INITS:
            raise choice_error("init", init, INITS)
        self.init = init
        self.seed = check_whole("seed", seed, 0)
        self.device: Device = get_device(device)
        self.xp = self.device.xp
        # Drawn on the host, then copied: the CPU and the GPU start from identical weights.
        self.params = self.device.asarray(self._initial_params(numpy.random.default_rng(seed)))
        self.weights, self.biases = _layer_views(self.params, self.sizes)

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def _initial_params(self, rng) -> numpy.ndarray:
        """Glorot (uniform, ±√(6/(n_in+n_out))) or He (normal, σ = √(2/n_in)) weights; zero biases."""
        layers = zip(self.sizes[:-1], self.sizes[1:])
        flat = numpy.zeros(sum(n_in * n_out + n_out for n_in, n_out in layers), dtype=self.dtype)
        for W in _layer_views(flat, self.sizes)[0]:
            n_in, n_out = W.shape
            if self.init == "glorot":
                limit = math.sqrt(6.0 / (n_in + n_out))
                W[...] = rng.uniform(-limit, limit, size=W.shape)
            else:
                W[...] = rng.normal(0.0, math.sqrt(2.0 / n_in), size=W.shape)
        return flat

    def __repr__(self) -> str:
        return (
            f"MLP(sizes={list(self.sizes)}, activation={self.activation.name!r}, "
            f"output_activation={self.output_activation.name!r}, loss={self.loss_fn.name!r}, "
            f"dtype={self.dtype.name!r}, device={str(self.device)!r})"
        )

    # --- arrays in -------------------------------------------------------

    def _numbers(self, x, name: str):
        """`x` on this net's device, checked to hold numbers before it is copied anywhere."""
        if isinstance(x, self.xp.ndarray) and x.dtype == self.dtype and device_of(x) == self.device:
            return x  # already in place
        if get_array_module(x) is numpy:
            try:
                x = numpy.asarray(x)
            except (ValueError, TypeError) as e:  # ragged lists, objects that are not numbers
                raise ArgumentTypeError(f"{name} must be an array of numbers; NumPy could not make one ({e})") from None
        if x.dtype.kind not in "fiub":
            raise ArgumentTypeError(f"{name} must hold numbers (float, int or bool); got dtype {x.dtype}")
        return self.device.asarray(x)

    def _finite(self, x, name: str) -> None:
        if not bool(self.xp.isfinite(x).all()):  # one pass over x, and on a GPU one sync
            raise not_finite(name)

    def check_input_shape(self, shape) -> None:
        """X's shape must be (N, n_inputs) with N ≥ 1: for arrays here, and for data read in pieces."""
        if len(shape) != 2 or shape[1] != self.sizes[0]:
            raise ShapeError(f"X must have shape (N, {self.sizes[0]}) for this net; got {tuple(shape)}")
        if shape[0] == 0:
            raise ShapeError(f"X must have at least one row; got shape {tuple(shape)}")

    def check_labels(self, labels, n: int, bounds) -> None:
        """Class labels must be n integers in [0, n_outputs); bounds() gives their (lowest, highest),
        asked only once the shape and dtype are right (a memory map's are found chunk by chunk)."""
        k = self.sizes[-1]
        if labels.shape != (n,):
            raise ShapeError(f"class labels Y must have shape ({n},) to match the rows of X; got {tuple(labels.shape)}")
        if labels.dtype.kind not in "iu":
            raise ArgumentTypeError(f"class labels Y must be integers in [0, {k}); got dtype {labels.dtype}")
        low, high = bounds()
        if low < 0 or high >= k:
            raise ArgumentError(f"class labels Y must lie in [0, {k}) for {k} outputs; got values from {low} to {high}")

    def inputs(self, X):
        """X on this net's device and in its dtype, checked to be (N, n_inputs) and finite.

        Integer and bool X are converted to the net's float dtype; arrays on the
        other device are copied over.
        """
        with self.device.activate():  # what it makes belongs on the net's GPU, whichever is current
            return self._inputs(X)

    def _inputs(self, X):
        X = self._numbers(X, "X")
        self.check_input_shape(X.shape)
        X = X.astype(self.dtype, copy=False)
        self._finite(X, "X")
        return X

    def targets(self, Y, n: int):
        """Y as (n, n_outputs) finite rows in this net's dtype; class labels become one-hot rows."""
        with self.device.activate():
            return self._targets(Y, n)

    def _targets(self, Y, n: int):
        k = self.sizes[-1]
        Y = self._numbers(Y, "Y")
        if Y.ndim == 1 and self.loss_fn.name == "cross_entropy":
            return self._one_hot(Y, n, k)
        Y = self.target_rows(Y, n).astype(self.dtype, copy=False)
        self._finite(Y, "Y")
        return Y

    def target_rows(self, Y, n: int):
        """Targets (not class labels) as n rows of one value per output, (N,) read as (N, 1), or a ShapeError."""
        k = self.sizes[-1]
        if Y.ndim == 1 and k == 1:
            Y = Y.reshape(-1, 1)
        if Y.shape != (n, k):
            raise ShapeError(
                f"Y must have shape ({n}, {k}) to match {n} rows of X and {k} outputs"
                + (", or class labels of shape (N,)" if self.loss_fn.name == "cross_entropy" else "")
                + f"; got {tuple(Y.shape)}"
            )
        return Y

    def _one_hot(self, labels, n: int, k: int):
        self.check_labels(labels, n, lambda: (int(labels.min()), int(labels.max())))  # one host sync, at the edge
        xp = self.xp
        return (labels[:, None] == xp.arange(k)[None, :]).astype(self.dtype)

    # --- the math --------------------------------------------------------

    def forward(self, X, workspace: Workspace | None = None, validate: bool = True) -> Trace:
        """The forward pass, keeping every weighted input z and activation a.

        With a `workspace` (see `workspace()`), the results go into its arrays.
        validate=False skips the checks of X, for callers that made it with `inputs()`.
        """
        ws = workspace or NO_WORKSPACE
        with self.device.activate():
            a = self.inputs(X) if validate else X
            n = len(a)
            trace = Trace(z=[], a=[a])
            for l, (W, b) in enumerate(zip(self.weights, self.biases)):
                f = self.output_activation if l == self.n_layers - 1 else self.activation
                z = self.xp.matmul(a, W, out=ws.z(l, n))  # weighted sum of the inputs,
                a = f.activate(z, b, out=ws.a(l, n))  # plus the bias (z += b), then the firing signal f(z)
                trace.z.append(z)
                trace.a.append(a)
            return trace

    def backward(
        self,
        trace: Trace,
        Y,
        out: Grads | None = None,
        workspace: Workspace | None = None,
        validate: bool = True,
        row_weights=None,
    ) -> Grads:
        """The backward pass: the chain rule, layer by layer, from the output back.

        δ_L = ∂E/∂ŷ ⊙ f'(z_L)                  blame at the output
        δ_l = (δ_{l+1} @ W_{l+1}ᵀ) ⊙ f'(z_l)   blame flows back through the weights
        ∂E/∂W_l = a_lᵀ δ_l,  ∂E/∂b_l = Σ_batch δ_l

        Writes the gradients into `out` when given, and the deltas into `workspace`'s arrays.
        validate=False skips the checks of Y, for callers that made it with `targets()`.
        row_weights (N,), on the net's device: each row's share of the blame, in place of 1
        (the output delta of row i is multiplied by row_weights[i]; N × w / Σw gives a weighted mean).
        """
        ws = workspace or NO_WORKSPACE
        xp = self.xp
        with self.device.activate():
            n = len(trace.output)
            Y = self.targets(Y, n) if validate else Y
            grads = out if out is not None else self.new_grads()
            deltas = [None] * self.n_layers
            last = self.n_layers - 1
            deltas[last] = self.loss_fn.output_delta(
                self.output_activation,
                trace.z[last],
                trace.output,
                Y,
                out=ws.delta(last, n),
                scratch=ws.scratch(n, self.sizes[-1]),
            )
            if row_weights is not None:
                deltas[last] *= row_weights.reshape(-1, 1)
            for l in range(last - 1, -1, -1):
                upstream = xp.matmul(deltas[l + 1], self.weights[l + 1].T, out=ws.delta(l, n))  # ∂E/∂a[l+1]
                deltas[l] = self.activation.backprop(
                    upstream, trace.z[l], trace.a[l + 1], ws.scratch(n, self.sizes[l + 1])
                )
            for l, delta in enumerate(deltas):
                xp.matmul(trace.a[l].T, delta, out=grads.weights[l])
                delta.sum(axis=0, out=grads.biases[l])
            grads.deltas = deltas
            return grads

    def workspace(self, rows: int, backward: bool = True) -> Workspace:
        """Arrays for batches of up to `rows` rows, for forward and backward to write into."""
        return Workspace(self, rows, backward)  # backward=False: forward and bookkeeping only

    def new_grads(self) -> Grads:
        """A zeroed gradient buffer, the twin of `params`."""
        with self.device.activate():
            flat = self.xp.zeros_like(self.params)
        weights, biases = _layer_views(flat, self.sizes)
        return Grads(flat=flat, weights=weights, biases=biases, deltas=[])

    def loss(self, output, Y) -> float:
        """E(Y, ŷ) as a Python float (this waits for the device). Never NaN: a NaN raises."""
        with self.device.activate():
            output = self._numbers(output, "output")
            if output.ndim != 2 or output.shape[1] != self.sizes[-1] or not len(output):
                raise ShapeError(f"output must have shape (N, {self.sizes[-1]}); got {tuple(output.shape)}")
            value = float(self.loss_fn.value(output, self.targets(Y, len(output))))
        if not math.isfinite(value):
            raise ArgumentError(f"the loss is {value}: the output holds NaN or infinite values (are the weights?)")
        return value

    def predict(self, X, batch_size: int = 4096):
        """ŷ for the rows of X, as an array on this net's device.

        A memory map (numpy.load(path, mmap_mode="r")), or a RowView of one, is read batch_size
        rows at a time, each batch checked and copied on its own, so it never needs to fit in
        memory whole.
        """
        batch_size = check_whole("batch_size", batch_size, 1)
        if not is_memory_map(X):
            return self.forward(X).output
        if X.ndim != 2 or X.shape[1] != self.sizes[0] or len(X) == 0:
            raise ShapeError(f"X must have shape (N, {self.sizes[0]}) with N ≥ 1 for this net; got {tuple(X.shape)}")
        with self.device.activate():
            out = self.xp.empty((len(X), self.sizes[-1]), dtype=self.dtype)
            for start in range(0, len(X), batch_size):
                out[start : start + batch_size] = self.forward(X[start : start + batch_size]).output
            return out
