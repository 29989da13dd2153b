"""Fused CUDA kernels for the GPU: one launch where the NumPy-style path takes several.

CuPy spends 10 to 25 µs of CPU time on each launch, so on small layers the
number of launches, not the arithmetic, sets the step time. Four chains are
fused here:

    bias_<f>(b, z, a)        z += b, then a = f(z)              (forward)
    delta_<f>(delta, a)      delta *= f'(z), from a = f(z)      (backward)
    output_minus_target      delta = (ŷ − y) / N                (softmax + cross-entropy, sigmoid + bce)
    sgd_step                 weight decay, momentum and W −= lr·g over the flat buffer

The CUDA C comes from `source(dtype, activations)`, built from the formulas
in the activation table, so CPU CI can compile it with NVRTC and run its
arithmetic through a C++ compiler. Each function below returns None when its arrays are
not CuPy arrays (or GPUBP_FUSED=0 is set), and the caller then takes the
NumPy-style path, which is also what the fused kernels are tested against.
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


def source(dtype, activations=()) -> str:
    """CUDA C for one float dtype: the bias and delta kernels of each activation given, and the common ones."""
    parts = [_PREAMBLE.format(ctype=C_TYPES[numpy.dtype(dtype).name])]
    for act in activations:
        f, prime = act.cuda
        parts.append(_BIAS.format(name=act.name, f=f))
        parts.append(_DELTA.format(name=act.name, prime=prime))
    parts.append(_COMMON)
    return "".join(parts)


def kernel_names(activations=()) -> list[str]:
    return [f"{kind}_{act.name}" for act in activations for kind in ("bias", "delta")] + [
        "output_minus_target",
        "sgd_step",
    ]


class KernelCache:
    """Compiled kernel functions, kept per (device, dtype, name): after the first, a launch is a dict lookup.

    `build(code)` compiles CUDA C into a module with get_function(name): CuPy's RawModule
    on the GPU. It runs once per (device, dtype, activation), and get_function once per
    kernel, because each call of it makes a new function object and a driver call.
    """

    def __init__(self, build):
        self.build, self.modules, self.functions = build, {}, {}

    def function(self, device: int, dtype, name: str, activation=None):
        dtype = numpy.dtype(dtype).name
        function = self.functions.get((device, dtype, name))
        if function is None:
            key = (device, dtype, activation.name if activation else None)
            module = self.modules.get(key)
            if module is None:
                module = self.modules[key] = self.build(source(dtype, [activation] if activation else []))
            function = self.functions[(device, dtype, name)] = module.get_function(name)
        return function


_cache: KernelCache | None = None


def _function(xp, device: int, dtype, name, activation=None):
    global _cache
    if _cache is None:
        _cache = KernelCache(lambda code: xp.RawModule(code=code, options=OPTIONS))
    return _cache.function(device, dtype, name, activation)


def _cuda(*arrays):
    """cupy when every array is a C-contiguous CuPy array and fusion is on, else None."""
    xp = get_array_module(*arrays)
    if xp is numpy or os.environ.get(ENV_FUSED, "1") == "0":
        return None  # NumPy first: the CPU's training step asks here several times
    if not all(a.flags.c_contiguous for a in arrays):
        return None
    return xp


def _launch(xp, dtype, name, n, args, activation=None):
    if n:
        blocks = (n + THREADS - 1) // THREADS
        device = args[0].data.device_id  # the first argument is always an array on the launch's device
        _function(xp, device, dtype, name, activation)((blocks,), (THREADS,), args)


def bias_activation(activation, z, bias, out):
    """z += bias and out = f(z) in one launch; returns out, or None to take the unfused path."""
    if activation.cuda is None:
        return None
    xp = _cuda(z, bias) if out is None else _cuda(z, bias, out)
    if xp is None:
        return None
    if out is None:
        out = xp.empty_like(z)
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
    xp = _cuda(output, y) if out is None else _cuda(output, y, out)
    if xp is None:
        return None
    if out is None:
        out = xp.empty_like(output)
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
