"""Check the backward pass against central finite differences of the loss."""

from __future__ import annotations

from .backend import to_numpy


def gradcheck(net, X, Y, eps: float = 1e-6) -> dict[str, float]:
    """The largest relative error between backprop and finite differences, per parameter array.

    For every weight and bias w, the numerical gradient is
    (E(w + eps) − E(w − eps)) / (2 eps). Each array's error is
    max |numerical − backprop| / max(max |numerical|, max |backprop|),
    so it is relative to that array's scale. Returns a dict such as
    {"weights[0]": 3e-10, "biases[0]": 1e-10, ...}. Use a float64 net:
    in float32 the differences drown in rounding.
    """
    with net.device.activate():  # the writes below go to the net's own GPU, whichever is current
        return _gradcheck(net, X, Y, eps)


def _gradcheck(net, X, Y, eps: float) -> dict[str, float]:
    grads = net.backward(net.forward(X), Y)

    def loss() -> float:
        return net.loss(net.forward(X).output, Y)

    errors = {}
    for kind, params, analytic in (("weights", net.weights, grads.weights), ("biases", net.biases, grads.biases)):
        for l, (p, g) in enumerate(zip(params, analytic)):
            flat = p.reshape(-1)  # a view: writing it moves the net's parameter
            numeric = []
            for i in range(flat.size):
                original = flat[i].copy()
                flat[i] = original + eps
                plus = loss()
                flat[i] = original - eps
                minus = loss()
                flat[i] = original
                numeric.append((plus - minus) / (2 * eps))
            analytic_host = to_numpy(g).reshape(-1).astype(float)
            diff = max((abs(n - a) for n, a in zip(numeric, analytic_host)), default=0.0)
            scale = max(max(map(abs, numeric), default=0.0), float(abs(analytic_host).max(initial=0.0)))
            errors[f"{kind}[{l}]"] = float(diff / scale if scale > 0 else diff)
    return errors
