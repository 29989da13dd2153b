"""Adam and AdamW: PyTorch's update rules exactly, over the flat buffer, resumable, and fused on the GPU."""

import numpy as np
import pytest

import gpubp
from gpubp import optim

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


@pytest.mark.parametrize("case", list(CASES))
def test_matches_torch_optim_over_25_steps(case):
    torch = torch_or_skip()
    ours, theirs, options = CASES[case]
    rng = np.random.default_rng(3)
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
    assert relative_error(net.params, param.detach().numpy()) <= 1e-10
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


@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdamW"])
def test_resume_with_every_optimizer_is_bit_identical(tmp_path, kind):
    X, y = gpubp.datasets.spirals(n=40, seed=3)

    def start():
        net = gpubp.MLP([2, 16, 3], activation="relu", loss="cross_entropy", device="cpu", seed=9)
        options = {"lr": 0.05, "momentum": 0.9} if kind == "SGD" else {"lr": 0.01, "weight_decay": 1e-3}
        return net, optim.OPTIMIZERS[kind](net, **options)

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
