"""SGD, Adam and AdamW: PyTorch's update rules exactly, over the flat buffer, resumable, and fused on the GPU."""

import numpy as np
import pytest

import gpubp

from .conftest import require_module
from .goldens import relative_error


def torch_or_skip():
    return require_module("torch", "PyTorch is not installed (pip install torch): the reference for Adam and AdamW")


CASES = {
    "adam": (gpubp.Adam, "Adam", {}),
    "adam-l2": (gpubp.Adam, "Adam", {"weight_decay": 0.05}),
    "adam-betas": (gpubp.Adam, "Adam", {"betas": (0.3, 0.9), "eps": 1e-6, "lr": 0.01}),  # lerp's other branch
    "adamw": (gpubp.AdamW, "AdamW", {}),
    "adamw-no-decay": (gpubp.AdamW, "AdamW", {"weight_decay": 0.0}),
    "adamw-betas": (gpubp.AdamW, "AdamW", {"betas": (0.2, 0.95), "weight_decay": 0.1, "lr": 0.02}),
}


def beside_torch(torch, ours, theirs: str, options: dict, seed: int):
    """25 steps of `ours` and of torch.optim's `theirs`, each given the same gradients of a small float64 net:
    (our optimizer, torch's parameter, torch's optimizer)."""
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(32, 5)), rng.integers(0, 3, size=32)
    net = gpubp.MLP([5, 7, 3], activation="tanh", loss="cross_entropy", dtype="float64", device="cpu", seed=2)
    optimizer = ours(net, **options)
    param = torch.tensor(net.params.copy(), requires_grad=True)
    reference = getattr(torch.optim, theirs)([param], **options)
    for step in range(25):
        rows = slice(8 * (step % 4), 8 * (step % 4) + 8)
        grads = net.backward(net.forward(X[rows]), y[rows])  # the same gradient, given to both
        optimizer.step(grads)
        param.grad = torch.tensor(grads.flat.copy())
        reference.step()
    return optimizer, param, reference


@pytest.mark.parametrize("case", list(CASES))
def test_matches_torch_optim_over_25_steps(case):
    ours, theirs, options = CASES[case]
    optimizer, param, reference = beside_torch(torch_or_skip(), ours, theirs, options, seed=3)
    assert relative_error(optimizer.net.params, param.detach().numpy()) <= 1e-10
    state = reference.state[param]
    assert relative_error(optimizer.m, state["exp_avg"].numpy()) <= 1e-10
    assert relative_error(optimizer.v, state["exp_avg_sq"].numpy()) <= 1e-10
    assert optimizer.steps == int(state["step"]) == 25


def test_adamw_decays_the_weights_and_adam_adds_to_the_gradient():
    # With a zero gradient, Adam's L2 term still moves W (through m), and AdamW shrinks W by 1 − lr·λ.
    net = gpubp.MLP([2, 2], dtype="float64", device="cpu")
    net.params[...] = [1.0, -2.0, 0.5, 0.25, 0.0, 0.0]
    grads = net.new_grads()
    start = net.params.copy()
    gpubp.AdamW(net, lr=0.1, weight_decay=0.5).step(grads)
    np.testing.assert_allclose(net.params, start * (1 - 0.1 * 0.5), rtol=1e-15)  # m = v = 0: nothing else moves
    net.params[...] = start
    gpubp.Adam(net, lr=0.1, weight_decay=0.5).step(grads)
    # g = λW; first step: m̂ = g, v̂ = g², so W −= lr · g / (|g| + ε) = lr · sign(W) (nearly)
    np.testing.assert_allclose(net.params[:4], start[:4] - 0.1 * np.sign(start[:4]), rtol=1e-7)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"betas": 0.9}, r"betas must be a pair \(beta1, beta2\); got 0.9"),
        ({"betas": (0.9, 1.0)}, r"betas\[1\] must be a finite number ≥ 0 and < 1; got 1.0"),
        ({"eps": -1}, r"eps must be a finite number ≥ 0; got -1.0"),
        ({"lr": 0}, r"lr must be a finite number > 0; got 0.0"),
        ({"weight_decay": float("nan")}, r"weight_decay must be a finite number ≥ 0; got nan"),
    ],
)
def test_bad_adam_arguments(kwargs, message):
    with pytest.raises((gpubp.ArgumentError, gpubp.ArgumentTypeError), match=message):
        gpubp.Adam(gpubp.MLP([2, 1], device="cpu"), **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": 0}, r"lr must be a finite number > 0; got 0.0"),
        ({"lr": float("nan")}, r"lr must be a finite number > 0; got nan"),
        ({"lr": -0.1}, r"lr must be a finite number > 0; got -0.1"),
        ({"lr": float("inf")}, r"lr must be a finite number > 0; got inf"),
        ({"lr": "fast"}, r"lr must be a number; got 'fast'"),
        ({"lr": 0.1, "momentum": 1.0}, r"momentum must be a finite number ≥ 0 and < 1; got 1.0"),
        ({"lr": 0.1, "weight_decay": -1}, r"weight_decay must be a finite number ≥ 0; got -1.0"),
        ({"lr": 0.1, "nesterov": True}, r"nesterov=True needs momentum > 0"),
    ],
)
def test_bad_sgd_arguments(kwargs, message):
    with pytest.raises((gpubp.ArgumentError, gpubp.ArgumentTypeError), match=message):
        gpubp.SGD(gpubp.MLP([2, 1], device="cpu"), **kwargs)


@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdamW"])
def test_resume_with_every_optimizer_is_bit_identical(tmp_path, kind):
    X, y = gpubp.datasets.spirals(n=40, seed=3)

    def start():
        net = gpubp.MLP([2, 16, 3], activation="relu", loss="cross_entropy", device="cpu", seed=9)
        options = {"lr": 0.05, "momentum": 0.9} if kind == "SGD" else {"lr": 0.01, "weight_decay": 1e-3}
        return net, getattr(gpubp, kind)(net, **options)

    def train(net, opt, epochs, **kwargs):
        return gpubp.fit(net, X, y, epochs=epochs, batch_size=16, optimizer=opt, seed=1, progress=False, **kwargs)

    net, opt = start()
    straight = train(net, opt, 4, callbacks=[gpubp.CosineLR()])
    half, half_opt = start()
    path = tmp_path / "r.safetensors"
    train(half, half_opt, 4, callbacks=[gpubp.CosineLR(), gpubp.ModelCheckpoint(path), _StopAfter(2)])
    ckpt = gpubp.load_checkpoint(path, device="cpu")
    assert type(ckpt.optimizer) is type(opt) and ckpt.optimizer.steps == half_opt.steps
    history = gpubp.History.from_dict(ckpt.meta["history"])
    rest = train(ckpt.net, ckpt.optimizer, 4, callbacks=[gpubp.CosineLR()], initial_epoch=2, history=history)
    np.testing.assert_array_equal(ckpt.net.params, net.params)
    for name, array in opt.state.items():
        np.testing.assert_array_equal(ckpt.optimizer.state[name], array)
    assert rest.loss == straight.loss and ckpt.optimizer.steps == opt.steps


class _StopAfter(gpubp.Callback):
    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, state, record):
        state.stop = record["epoch"] >= self.epochs


def test_divergence_restores_adams_moments_and_step_count():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(64, 4)) * 1e3, rng.normal(size=(64, 1)) * 1e30
    net = gpubp.MLP([4, 16, 1], activation="relu", output_activation="identity", dtype="float32", device="cpu")
    opt = gpubp.Adam(net, lr=1.0)
    before = {name: array.copy() for name, array in opt.state.items()}
    with np.errstate(all="ignore"), pytest.raises(gpubp.TrainingDiverged, match="epoch 1"):
        gpubp.fit(net, X, Y, epochs=3, batch_size=16, optimizer=opt, progress=False)
    assert opt.steps == 0
    for name, array in opt.state.items():
        np.testing.assert_array_equal(array, before[name])


# --- SGD -------------------------------------------------------------------------------------------------------------


def _two_weights_and_a_bias(start=(1.0, -2.0, 0.5)):
    """A net whose flat buffer is [w0, w1, b], and a Grads to fill in by hand."""
    net = gpubp.MLP([2, 1], dtype="float64", device="cpu")
    net.params[...] = start
    return net, net.new_grads()


def test_sgd_with_momentum_and_weight_decay_by_hand():
    # lr = 0.1, μ = 0.5, λ = 0.1, from W = [1, −2, 0.5] and v = 0 (weight decay covers the bias too):
    #   d = g + λW,  v = μv + d,  W −= lr·v
    # step 1, g = [0.4, 0.2, −1]:  d = [0.4 + 0.1, 0.2 − 0.2, −1 + 0.05] = [0.5, 0, −0.95]
    #                              v = [0.5, 0, −0.95];  W = [1 − 0.05, −2 − 0, 0.5 + 0.095] = [0.95, −2, 0.595]
    # step 2, g = [0, 1, 0.5]:     d = [0 + 0.095, 1 − 0.2, 0.5 + 0.0595] = [0.095, 0.8, 0.5595]
    #                              v = [0.25 + 0.095, 0 + 0.8, −0.475 + 0.5595] = [0.345, 0.8, 0.0845]
    #                              W = [0.95 − 0.0345, −2 − 0.08, 0.595 − 0.00845] = [0.9155, −2.08, 0.58655]
    # step 3, g = [0.2, −0.4, 0]:  d = [0.2 + 0.09155, −0.4 − 0.208, 0 + 0.058655] = [0.29155, −0.608, 0.058655]
    #                              v = [0.1725 + 0.29155, 0.4 − 0.608, 0.04225 + 0.058655] = [0.46405, −0.208, 0.100905]
    #                              W = [0.9155 − 0.046405, −2.08 + 0.0208, 0.58655 − 0.0100905]
    #                                = [0.869095, −2.0592, 0.5764595]
    net, grads = _two_weights_and_a_bias()
    opt = gpubp.SGD(net, lr=0.1, momentum=0.5, weight_decay=0.1)
    worked = [
        ([0.4, 0.2, -1.0], [0.5, 0.0, -0.95], [0.95, -2.0, 0.595]),
        ([0.0, 1.0, 0.5], [0.345, 0.8, 0.0845], [0.9155, -2.08, 0.58655]),
        ([0.2, -0.4, 0.0], [0.46405, -0.208, 0.100905], [0.869095, -2.0592, 0.5764595]),
    ]
    for step, (g, v, W) in enumerate(worked, start=1):
        grads.flat[...] = g
        opt.step(grads)
        np.testing.assert_allclose(opt.velocity, v, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(net.params, W, rtol=1e-13)
        assert opt.steps == step


def test_sgd_without_momentum_steps_along_the_decayed_gradient():
    # lr = 0.1, λ = 0.1, no velocity: W −= lr·(g + λW).  g = [0.4, 0.2, −1] from W = [1, −2, 0.5]:
    #   W = [1 − 0.1·0.5, −2 − 0.1·0, 0.5 − 0.1·(−0.95)] = [0.95, −2, 0.595]
    net, grads = _two_weights_and_a_bias()
    opt = gpubp.SGD(net, lr=0.1, weight_decay=0.1)
    grads.flat[...] = [0.4, 0.2, -1.0]
    opt.step(grads)
    assert opt.velocity is None and opt.state == {} and opt.steps == 1
    np.testing.assert_allclose(net.params, [0.95, -2.0, 0.595], rtol=1e-13)


def test_nesterov_looks_ahead_by_the_momentum():
    # Nesterov: v = μv + d, then W −= lr·(d + μv): the step adds μ times the new velocity, not the velocity.
    # lr = 0.1, μ = 0.5, λ = 0, from W = [1, −2, 0.5]:
    # step 1, g = [0.4, 0.2, −1]:  v = g;  d + μv = 1.5 g = [0.6, 0.3, −1.5];  W = [0.94, −2.03, 0.65]
    #                              (without μ the step would be 2g, W = [0.92, −2.04, 0.7])
    # step 2, g = [0, 1, 0.5]:     v = [0.2, 0.1, −0.5] + g = [0.2, 1.1, 0];  d + μv = [0.1, 1.55, 0.5]
    #                              W = [0.94 − 0.01, −2.03 − 0.155, 0.65 − 0.05] = [0.93, −2.185, 0.6]
    net, grads = _two_weights_and_a_bias()
    opt = gpubp.SGD(net, lr=0.1, momentum=0.5, nesterov=True)
    for g, v, W in [
        ([0.4, 0.2, -1.0], [0.4, 0.2, -1.0], [0.94, -2.03, 0.65]),
        ([0.0, 1.0, 0.5], [0.2, 1.1, 0.0], [0.93, -2.185, 0.6]),
    ]:
        grads.flat[...] = g
        opt.step(grads)
        np.testing.assert_allclose(opt.velocity, v, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(net.params, W, rtol=1e-13)


def test_nesterov_with_weight_decay_follows_its_formula_over_many_steps():
    rng = np.random.default_rng(4)
    net = gpubp.MLP([3, 4, 2], dtype="float64", device="cpu", seed=1)
    lr, mu, decay = 0.05, 0.8, 0.03
    opt = gpubp.SGD(net, lr=lr, momentum=mu, nesterov=True, weight_decay=decay)
    W, v = net.params.copy(), np.zeros_like(net.params)
    grads = net.new_grads()
    for _ in range(12):
        g = rng.normal(size=W.shape)
        grads.flat[...] = g
        opt.step(grads)
        d = g + decay * W
        v = mu * v + d
        W = W - lr * (d + mu * v)
    np.testing.assert_allclose(net.params, W, rtol=1e-12)
    np.testing.assert_allclose(opt.velocity, v, rtol=1e-12)
    assert opt.steps == 12


SGD_CASES = {
    "plain": {"lr": 0.1},
    "momentum": {"lr": 0.05, "momentum": 0.9},
    "decay": {"lr": 0.1, "momentum": 0.8, "weight_decay": 0.01},
    "nesterov": {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    "nesterov-decay": {"lr": 0.02, "momentum": 0.6, "nesterov": True, "weight_decay": 0.05},
}


@pytest.mark.parametrize("case", list(SGD_CASES))
def test_sgd_matches_torch_optim_over_25_steps(case):
    torch = require_module("torch", "PyTorch is not installed (pip install torch): the reference for SGD")
    options = SGD_CASES[case]
    optimizer, param, reference = beside_torch(torch, gpubp.SGD, "SGD", options, seed=5)
    assert relative_error(optimizer.net.params, param.detach().numpy()) <= 1e-12
    if options.get("momentum"):
        assert relative_error(optimizer.velocity, reference.state[param]["momentum_buffer"].numpy()) <= 1e-12
    assert optimizer.steps == 25


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_counts_its_steps_and_a_checkpoint_keeps_the_count(tmp_path, momentum):
    rng = np.random.default_rng(6)
    X, y = rng.normal(size=(16, 3)), rng.integers(0, 2, size=16)
    net = gpubp.MLP([3, 5, 2], activation="tanh", loss="cross_entropy", dtype="float64", device="cpu", seed=3)
    opt = gpubp.SGD(net, lr=0.1, momentum=momentum, weight_decay=1e-3)
    assert opt.steps == 0 and opt.hyperparameters()["steps"] == 0
    for step in range(1, 6):
        opt.step(net.backward(net.forward(X), y))
        assert opt.steps == step and opt.hyperparameters()["steps"] == step  # one a step
    path = tmp_path / "sgd.safetensors"
    gpubp.save(net, path, opt)
    loaded = gpubp.load_checkpoint(path, device="cpu")
    again = loaded.optimizer
    assert type(again) is gpubp.SGD and again.steps == 5
    assert (again.momentum, again.weight_decay, again.nesterov) == (momentum, 1e-3, False)
    for one in (opt, again):  # one more step each: the counts and the weights go on together
        one.step(one.net.backward(one.net.forward(X), y))
    assert again.steps == opt.steps == 6
    np.testing.assert_array_equal(loaded.net.params, net.params)
