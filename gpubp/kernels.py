"""Fused CUDA kernels for the GPU: one launch where the NumPy-style path takes several.

CuPy spends 10 to 25 µs of CPU time on each launch, so on small layers the
number of launches, not the arithmetic, sets the step time. These chains are
fused here:

    bias_<f>(b, z, a)          z += b, then a = f(z)                    (forward)
    bias_softmax(b, z, a)      z += b, then a = softmax(z), per row     (forward, softmax output)
    delta_<f>(delta, a)        delta *= f'(z), from a = f(z)            (backward)
    delta_softmax(delta, a)    delta = a ⊙ (delta − Σ delta ⊙ a)        (backward through softmax)
    output_minus_target        delta = (ŷ − y) / N                      (softmax + cross-entropy, sigmoid + bce)
    row_metrics_<loss>         each row's loss, and whether it was right (fit's bookkeeping)
    sgd_step                   weight decay, momentum and W −= lr·g over the flat buffer
    adam_step                  Adam's or AdamW's whole update over the flat buffer
    monitor_squares            LayerMonitor: Σ g² of every W_l and b_l in the flat gradient, into one row
    monitor_saturated          LayerMonitor: how many of a hidden layer's z are past the saturation line
    monitor_fired              LayerMonitor: each ReLU unit's Σ max(a, 0) over the batch, added up

Launches in one training step of an L-layer net on the GPU (fit, fused path):

    gather the batch           2   (X rows, Y rows)
    forward                    2L  (per layer: the matrix product, then bias + activation)
    bookkeeping                1   (row_metrics, into the epoch's buffers; summed once per epoch)
    output delta               1   (softmax + cross-entropy or sigmoid + bce; 2 or 3 with mse)
    hidden deltas              2(L−1)  (per layer: the product with Wᵀ, then ⊙ f')
    gradients                  2L  (per layer: a_lᵀ δ_l, then the bias sum)
    update                     1   (sgd_step or adam_step)
    total                      6L + 3: 15 for one hidden layer (cuBLAS may split a product in two)

Nothing in a step allocates: every array it writes is made before the first epoch.
With a LayerMonitor a step adds 1 + (L − 1) launches (monitor_squares, then
monitor_saturated or monitor_fired per hidden layer); its kernels are compiled in a module of
their own, since they need atomicAdd on doubles (compute capability 6.0 on).

The CUDA C comes from `source(dtype, activations, losses)`, built from the
formulas in the activation and loss tables, so CPU CI can compile it with NVRTC
and run its arithmetic through a C++ compiler. Each function below returns
None (or False) when its arrays are not CuPy arrays (or GPUBP_FUSED=0 is set),
and the caller then takes the NumPy-style path, which is also what the fused
kernels are tested against.
"""

from __future__ import annotations

import os

import numpy

from .backend import get_array_module

ENV_FUSED = "GPUBP_FUSED"
THREADS = 256
OPTIONS = ("--fmad=false",)  # no contraction into FMA: the same roundings as the NumPy path
C_TYPES = {"float32": "float", "float64": "double"}

_PREAMBLE = """\
typedef {ctype} T;
typedef long long index_t;
#define FOR_EACH_ELEMENT(n) \\
    index_t i = (index_t)blockIdx.x * blockDim.x + threadIdx.x; \\
    if (i >= (n)) return;
#define TINY T({tiny})
#define SAFE_LOG(p) log((p) < TINY ? TINY : (p)) /* log(max(p, tiny)), and NaN stays NaN */
"""

_BIAS = """
extern "C" __global__ void bias_{name}(const T* bias, T* zs, T* as, index_t n, index_t cols) {{
    FOR_EACH_ELEMENT(n)
    T z = zs[i] + bias[i % cols];
    zs[i] = z;
    as[i] = {f};
}}
"""

_DELTA = """
extern "C" __global__ void delta_{name}(T* delta, const T* as, index_t n) {{
    FOR_EACH_ELEMENT(n)
    T a = as[i];
    delta[i] = delta[i] * ({prime});
}}
"""

_COMMON = """
extern "C" __global__ void output_minus_target(const T* output, const T* y, T* delta, index_t n, T rows) {
    FOR_EACH_ELEMENT(n)
    delta[i] = (output[i] - y[i]) / rows;
}

extern "C" __global__ void adam_step(T* p, const T* g, T* m, T* v, index_t n, T decay, T wd, int decoupled,
                                      T weight1, T keep1, T beta2, T one_minus_beta2, T neg_step_size,
                                      T correction2, T eps) {
    FOR_EACH_ELEMENT(n)
    T param = p[i], grad = g[i];
    if (wd != 0) {
        if (decoupled) param = param * decay;          /* AdamW: W ×= 1 − lr·λ */
        else grad = param * wd + grad;                 /* Adam: g + λW */
    }
    T mean = m[i];                                     /* m = lerp(m, g, 1 − β₁), as PyTorch computes it */
    mean = weight1 < T(0.5) ? mean + (grad - mean) * weight1 : grad - (grad - mean) * keep1;
    T square = v[i] * beta2 + grad * one_minus_beta2 * grad;   /* v = β₂ v + (1 − β₂) g² */
    m[i] = mean;
    v[i] = square;
    p[i] = param + mean * neg_step_size / (sqrt(square) / correction2 + eps);
}

extern "C" __global__ void bias_softmax(const T* bias, T* zs, T* as, index_t rows, index_t cols) {
    FOR_EACH_ELEMENT(rows)                     /* one thread per row */
    T* z = zs + i * cols;
    T* a = as + i * cols;
    T top = z[0] + bias[0];
    for (index_t k = 0; k < cols; ++k) {       /* z += b, and the row's largest z */
        z[k] = z[k] + bias[k];
        top = z[k] > top ? z[k] : top;
    }
    T total = 0;
    for (index_t k = 0; k < cols; ++k) {       /* e^(z − max): never overflows */
        a[k] = exp(z[k] - top);
        total = total + a[k];
    }
    for (index_t k = 0; k < cols; ++k) a[k] = a[k] / total;
}

extern "C" __global__ void delta_softmax(T* delta, const T* as, index_t rows, index_t cols) {
    FOR_EACH_ELEMENT(rows)                     /* ∂E/∂z_k = a_k (g_k − Σ_j g_j a_j), one thread per row */
    T* g = delta + i * cols;
    const T* a = as + i * cols;
    T dot = 0;
    for (index_t k = 0; k < cols; ++k) dot = dot + g[k] * a[k];
    for (index_t k = 0; k < cols; ++k) g[k] = (g[k] - dot) * a[k];
}

extern "C" __global__ void sgd_step(T* p, const T* g, T* v, index_t n, T lr, T mu, T wd, T lr_mu, int nesterov) {
    FOR_EACH_ELEMENT(n)
    T grad = g[i];
    if (wd != 0) grad = p[i] * wd + grad;      /* g + λW */
    if (v != 0) {
        T velocity = v[i] * mu + grad;         /* v = μv + g */
        v[i] = velocity;
        if (nesterov) {                        /* W −= lr·g, then W −= lr·μ·v */
            p[i] = p[i] - grad * lr;
            p[i] = p[i] - velocity * lr_mu;
        } else {
            p[i] = p[i] - velocity * lr;
        }
    } else {
        p[i] = p[i] - grad * lr;
    }
}
"""


# Each row's loss and whether it was predicted right, written to its place in the epoch's
# buffers: the step's whole bookkeeping in one launch, summed once per epoch.
_ROW_METRICS = """
extern "C" __global__ void row_metrics_{loss}(
    const T* output, const T* y, T* row_loss, T* row_correct, index_t rows, index_t cols, int accuracy) {{
    FOR_EACH_ELEMENT(rows)                     /* one thread per row */
    const T* P = output + i * cols;
    const T* Y = y + i * cols;
    T total = 0;
    for (index_t k = 0; k < cols; ++k) {{
        T p = P[k], t = Y[k];
        total = total + ({term});
    }}
    row_loss[i] = total;
    if (accuracy == 1) {{                       /* argmax of the output against argmax of the target */
        index_t best = 0, wanted = 0;
        for (index_t k = 1; k < cols; ++k) {{
            if (P[k] > P[best]) best = k;
            if (Y[k] > Y[wanted]) wanted = k;
        }}
        row_correct[i] = best == wanted ? T(1) : T(0);
    }} else if (accuracy == 2) {{                /* one sigmoid: the same side of 0.5 */
        row_correct[i] = (P[0] > T(0.5)) == (Y[0] > T(0.5)) ? T(1) : T(0);
    }}
}}
"""
ACCURACY = {None: 0, "argmax": 1, "threshold": 2}  # how row_metrics judges a row right

# LayerMonitor's per-step numbers (monitor.py). One thread per chunk of elements, so a chunk's sum
# goes out in one atomicAdd; the chunks of a warp are CHUNK apart, read from cache line by line.
_MONITOR = """
extern "C" __global__ void monitor_squares(const T* g, const index_t* ends, index_t parts, index_t chunks,
                                           index_t chunk, double* squares) {
    FOR_EACH_ELEMENT(chunks)                   /* squares[p] += Σ g[k]² over part p: k from ends[p − 1] */
    index_t start = i * chunk, stop = start + chunk, total = ends[parts - 1];
    if (stop > total) stop = total;
    index_t p = 0;
    while (ends[p] <= start) ++p;              /* the part the chunk starts in */
    double sum = 0;
    for (index_t k = start; k < stop; ++k) {
        while (k == ends[p]) {                 /* a part ends inside the chunk: its share goes out */
            atomicAdd(squares + p, sum);
            sum = 0;
            ++p;
        }
        sum += (double)g[k] * (double)g[k];
    }
    atomicAdd(squares + p, sum);
}

extern "C" __global__ void monitor_saturated(const T* z, index_t chunks, index_t chunk, index_t n, T line,
                                             unsigned long long* count) {
    FOR_EACH_ELEMENT(chunks)                   /* count += how many z are past ±line */
    index_t start = i * chunk, stop = start + chunk;
    if (stop > n) stop = n;
    unsigned long long past = 0;
    for (index_t k = start; k < stop; ++k) past += (z[k] > line || -line > z[k]) ? 1 : 0;
    if (past) atomicAdd(count, past);
}

extern "C" __global__ void monitor_fired(const T* as, index_t rows, index_t cols, T* fired) {
    FOR_EACH_ELEMENT(cols)                     /* one thread per unit: fired[j] += Σ over the rows of max(a, 0) */
    T total = 0;
    for (index_t r = 0; r < rows; ++r) {
        T a = as[r * cols + i];
        total = total + (a > 0 || a != a ? a : T(0));   /* NaN stays, as in relu */
    }
    fired[i] = fired[i] + total;
}
"""
MONITOR_CHUNK = 64  # elements per thread in the monitor's kernels


class _Monitor:
    """Names the monitor's module in the kernel cache, as an activation or a loss names its own."""

    name = "monitor"


MONITOR = _Monitor()


def source(dtype, activations=(), losses=(), monitor=False) -> str:
    """CUDA C for one float dtype: the kernels of each activation and loss given, and the common ones
    (or, with monitor=True, the monitor's alone)."""
    dtype = numpy.dtype(dtype)
    parts = [_PREAMBLE.format(ctype=C_TYPES[dtype.name], tiny=repr(float(numpy.finfo(dtype).tiny)))]
    for act in activations:
        f, prime = act.cuda
        parts.append(_BIAS.format(name=act.name, f=f))
        parts.append(_DELTA.format(name=act.name, prime=prime))
    for loss in losses:
        parts.append(_ROW_METRICS.format(loss=loss.name, term=loss.cuda))
    parts.append(_MONITOR if monitor else _COMMON)
    return "".join(parts)


def kernel_names(activations=(), losses=(), monitor=False) -> list[str]:
    if monitor:
        return ["monitor_squares", "monitor_saturated", "monitor_fired"]
    return (
        [f"{kind}_{act.name}" for act in activations for kind in ("bias", "delta")]
        + [f"row_metrics_{loss.name}" for loss in losses]
        + ["output_minus_target", "bias_softmax", "delta_softmax", "sgd_step", "adam_step"]
    )


class KernelCache:
    """Compiled kernel functions, kept per (device, dtype, name): after the first, a launch is a dict lookup.

    `build(code)` compiles CUDA C into a module with get_function(name): CuPy's RawModule
    on the GPU. It runs once per (device, dtype, activation), and get_function once per
    kernel, because each call of it makes a new function object and a driver call.
    A module holds the common kernels and those of one activation or one loss.
    """

    def __init__(self, build):
        self.build, self.modules, self.functions = build, {}, {}

    def function(self, device: int, dtype, name: str, part=None):
        """Kernel `name` for `dtype` on `device`; `part` is the activation or loss whose kernels it is among."""
        dtype = numpy.dtype(dtype).name
        function = self.functions.get((device, dtype, name))
        if function is None:
            key = (device, dtype, part.name if part else None)
            module = self.modules.get(key)
            if module is None:
                module = self.modules[key] = self.build(_source_for(dtype, part))
            function = self.functions[(device, dtype, name)] = module.get_function(name)
        return function


def _source_for(dtype, part) -> str:
    if part is None:
        return source(dtype)
    if part is MONITOR:
        return source(dtype, monitor=True)
    return source(dtype, losses=[part]) if hasattr(part, "gradient") else source(dtype, activations=[part])


_cache: KernelCache | None = None


def _function(xp, device: int, dtype, name, part=None):
    global _cache
    if _cache is None:
        _cache = KernelCache(lambda code: xp.RawModule(code=code, options=OPTIONS))
    return _cache.function(device, dtype, name, part)


def _cuda(*arrays):
    """cupy when every array is a C-contiguous CuPy array and fusion is on, else None."""
    xp = get_array_module(*arrays)
    if xp is numpy or os.environ.get(ENV_FUSED, "1") == "0":
        return None  # NumPy first: the CPU's training step asks here several times
    if not all(a.flags.c_contiguous for a in arrays):
        return None
    return xp


def _with_out(out, like, *inputs):
    """(cupy, out) for a fused launch, with `out` made like `like` when it is None; (None, None) otherwise."""
    xp = _cuda(*inputs) if out is None else _cuda(*inputs, out)
    if xp is None:
        return None, None
    return xp, xp.empty_like(like) if out is None else out


def _launch(xp, dtype, name, n, args, part=None):
    """One launch of `n` threads (one per element, or per row)."""
    if n:
        blocks = (n + THREADS - 1) // THREADS
        device = args[0].data.device_id  # the first argument is always an array on the launch's device
        _function(xp, device, dtype, name, part)((blocks,), (THREADS,), args)


def bias_activation(activation, z, bias, out):
    """z += bias and out = f(z) in one launch; returns out, or None to take the unfused path."""
    if activation.cuda is None:
        return None
    xp, out = _with_out(out, z, z, bias)
    if xp is None:
        return None
    n, cols = z.size, z.shape[-1]
    args = (bias, z, out, numpy.int64(n), numpy.int64(cols))
    _launch(xp, z.dtype, f"bias_{activation.name}", n, args, activation)
    return out


def delta(activation, upstream, a):
    """upstream *= f'(z) (from a) in one launch; returns upstream, or None to take the unfused path."""
    xp = _cuda(upstream, a) if activation.cuda is not None else None
    if xp is None:
        return None
    args = (upstream, a, numpy.int64(upstream.size))
    _launch(xp, upstream.dtype, f"delta_{activation.name}", upstream.size, args, activation)
    return upstream


def output_minus_target(output, y, out):
    """out = (ŷ − y) / N in one launch; returns out, or None to take the unfused path."""
    xp, out = _with_out(out, output, output, y)
    if xp is None:
        return None
    args = (output, y, out, numpy.int64(output.size), output.dtype.type(len(output)))
    _launch(xp, output.dtype, "output_minus_target", output.size, args)
    return out


def sgd_step(params, grad, velocity, lr, momentum, weight_decay, nesterov) -> bool:
    """The whole SGD update in one launch; False when the caller must take the unfused path."""
    arrays = (params, grad) if velocity is None else (params, grad, velocity)
    xp = _cuda(*arrays)
    if xp is None:
        return False
    t = params.dtype.type
    v = velocity if velocity is not None else numpy.uint64(0)  # a null pointer: no momentum
    args = (params, grad, v, numpy.int64(params.size), t(lr), t(momentum), t(weight_decay), t(lr * momentum))
    _launch(xp, params.dtype, "sgd_step", params.size, (*args, numpy.int32(bool(nesterov))))
    return True


def bias_softmax(z, bias, out):
    """z += bias and out = softmax(z) along each row, in one launch; None to take the unfused path."""
    xp, out = _with_out(out, z, z, bias)
    if xp is None:
        return None
    rows, cols = z.shape
    _launch(xp, z.dtype, "bias_softmax", rows, (bias, z, out, numpy.int64(rows), numpy.int64(cols)))
    return out


def delta_softmax(upstream, a):
    """upstream = a ⊙ (upstream − Σ upstream ⊙ a) per row, in place, in one launch; None to take the unfused path."""
    xp = _cuda(upstream, a)
    if xp is None:
        return None
    rows, cols = upstream.shape
    _launch(xp, upstream.dtype, "delta_softmax", rows, (upstream, a, numpy.int64(rows), numpy.int64(cols)))
    return upstream


def row_metrics(loss, accuracy, output, y, row_loss, row_correct) -> bool:
    """Each row's loss into row_loss, and (for accuracy "argmax" or "threshold") 1 or 0 into row_correct.

    One launch; False when the caller must take the unfused path.
    """
    if loss.cuda is None:
        return False
    xp = _cuda(output, y, row_loss, row_correct)
    if xp is None:
        return False
    rows, cols = output.shape
    args = (output, y, row_loss, row_correct, numpy.int64(rows), numpy.int64(cols), numpy.int32(ACCURACY[accuracy]))
    _launch(xp, output.dtype, f"row_metrics_{loss.name}", rows, args, loss)
    return True


def adam_step(params, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step_size, correction2) -> bool:
    """Adam's (or AdamW's, decoupled=True) whole update in one launch; False to take the unfused path."""
    xp = _cuda(params, grad, m, v)
    if xp is None:
        return False
    t = params.dtype.type
    weight = 1 - beta1  # the host computes every factor, as the NumPy path's scalars are computed
    args = (params, grad, m, v, numpy.int64(params.size), t(1 - lr * weight_decay), t(weight_decay),
            numpy.int32(bool(decoupled)), t(weight), t(1 - weight), t(beta2), t(1 - beta2), t(-step_size),
            t(correction2), t(eps))  # fmt: skip
    _launch(xp, params.dtype, "adam_step", params.size, args)
    return True


def monitor_squares(grad, ends, squares) -> bool:
    """squares[p] += Σ g² over each part p of the flat gradient (parts end at `ends`), in one launch.

    `squares` is float64 and must start at 0. False when the caller must take the unfused path.
    """
    xp = _cuda(grad, ends, squares)
    if xp is None:
        return False
    chunks = -(-grad.size // MONITOR_CHUNK)
    args = (grad, ends, numpy.int64(len(ends)), numpy.int64(chunks), numpy.int64(MONITOR_CHUNK), squares)
    _launch(xp, grad.dtype, "monitor_squares", chunks, args, MONITOR)
    return True


def monitor_saturated(z, line, count) -> bool:
    """count (one uint64) += how many z lie past ±line, in one launch; False to take the unfused path."""
    xp = _cuda(z, count)
    if xp is None:
        return False
    chunks = -(-z.size // MONITOR_CHUNK)
    args = (z, numpy.int64(chunks), numpy.int64(MONITOR_CHUNK), numpy.int64(z.size), z.dtype.type(line), count)
    _launch(xp, z.dtype, "monitor_saturated", chunks, args, MONITOR)
    return True


def monitor_fusable(device) -> bool:
    """Whether LayerMonitor's kernels run on `device` (a backend.Device): CUDA, fusion on, atomicAdd on doubles."""
    if device.kind == "cpu" or os.environ.get(ENV_FUSED, "1") == "0":
        return False
    return int(device.xp.cuda.Device(device.index).compute_capability) >= 60  # "90" for 9.0


def monitor_fired(a, fired) -> bool:
    """fired (one number per unit) += Σ over a's rows of max(a, 0), in one launch; False to take the unfused path."""
    xp = _cuda(a, fired)
    if xp is None:
        return False
    rows, cols = a.shape
    _launch(xp, a.dtype, "monitor_fired", cols, (a, numpy.int64(rows), numpy.int64(cols), fired), MONITOR)
    return True
