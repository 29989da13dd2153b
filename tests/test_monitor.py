"""Watching the blame flow: learning_speeds and LayerMonitor against hand computations and constructed nets."""

import json

import numpy as np
import pytest

import gpubp
from gpubp import kernels, monitor, train

from .conftest import require_gpu


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)), rng.integers(0, 3, n)


def sigmoid_net(device="cpu", seed=1):
    return gpubp.MLP(
        [5, 7, 6, 3], activation="sigmoid", loss="cross_entropy", dtype="float64", device=device, seed=seed
    )


@pytest.mark.parametrize("batch_size", [4096, 10])
def test_learning_speeds_are_the_bias_gradient_norms_of_the_mean_loss(batch_size):
    X, y = data()
    net = sigmoid_net()
    grads = net.backward(net.forward(X), y)  # the whole set in one batch: the mean loss's gradient
    expected = [np.linalg.norm(b) for b in grads.biases]
    np.testing.assert_allclose(gpubp.learning_speeds(net, X, y, batch_size=batch_size), expected, rtol=1e-12)


@pytest.mark.parametrize("fold", [monitor.FOLD, 2])  # 2: the kept norms are added up mid-epoch, then the rest
def test_the_monitor_matches_a_replay_by_hand(fold, monkeypatch):
    monkeypatch.setattr(monitor, "FOLD", fold)
    X, y = data()
    net = sigmoid_net()
    start = net.params.copy()
    history = gpubp.fit(net, X, y, epochs=1, batch_size=16, shuffle=False, optimizer=gpubp.SGD(net, lr=0.5),
                        callbacks=[gpubp.LayerMonitor()], progress=False)  # fmt: skip
    [layers] = history.layers
    replay = sigmoid_net()
    speeds, grad_norms = [], []
    for step in range(3):  # 48 rows, batches of 16, in order
        rows = slice(16 * step, 16 * step + 16)
        grads = replay.backward(replay.forward(X[rows]), y[rows])
        speeds.append([np.linalg.norm(b) for b in grads.biases])
        grad_norms.append([np.linalg.norm(w) for w in grads.weights])
        gpubp.SGD(replay, lr=0.5).step(grads)
    np.testing.assert_array_equal(replay.params, net.params)
    for l, layer in enumerate(layers):
        assert layer["layer"] == l
        assert layer["speed"] == pytest.approx(np.mean([s[l] for s in speeds]), rel=1e-12)
        assert layer["grad_norm"] == pytest.approx(np.mean([g[l] for g in grad_norms]), rel=1e-12)
        W_start = gpubp.MLP([5, 7, 6, 3], activation="sigmoid", loss="cross_entropy", dtype="float64",
                            device="cpu", seed=1).weights[l]  # fmt: skip
        assert layer["weight_norm"] == pytest.approx(np.linalg.norm(net.weights[l]), rel=1e-12)
        ratio = np.linalg.norm(net.weights[l] - W_start) / np.linalg.norm(net.weights[l])
        assert layer["update_ratio"] == pytest.approx(ratio, rel=1e-12)
    assert not np.array_equal(start, net.params)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_saturation_on_nets_pushed_into_it_and_kept_out(activation):
    X, y = data()
    net = gpubp.MLP([5, 7, 6, 3], activation=activation, loss="cross_entropy", dtype="float64", device="cpu")
    net.weights[0][...] = 0
    net.biases[0][...] = 50  # every unit of layer 0 far out on the flat part
    net.weights[1][...] *= 1e-3
    net.biases[1][...] = 0  # layer 1 near z = 0, where f' is largest
    history = gpubp.fit(net, X, y, epochs=2, batch_size=16, optimizer=gpubp.SGD(net, lr=1e-9),
                        callbacks=[gpubp.LayerMonitor()], progress=False)  # fmt: skip
    for first, second, output in history.layers:  # each epoch counts its own steps
        assert first["saturated"] == 1.0 and second["saturated"] == 0.0 and "saturated" not in output


@pytest.mark.parametrize("batch_size", [16, 20])  # 20: the last batch has 8 rows, fewer than the arrays made
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_saturation_is_where_the_slope_falls_below_one_percent_of_its_largest(activation, batch_size):
    # Layer 0's units see z = their bias alone, some just inside the 1% line and some just past it.
    z = np.array([0.0, 1.0, -2.5, 2.9, -3.1, 5.9, -6.1, 40.0])
    slope = {"sigmoid": lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2, "tanh": lambda z: 1 / np.cosh(z) ** 2}
    expected = np.mean(slope[activation](z) < 0.01 * slope[activation](0.0))
    assert 0 < expected < 1  # both kinds of unit are there
    X, y = data()
    net = gpubp.MLP([5, 8, 3], activation=activation, loss="cross_entropy", dtype="float64", device="cpu")
    net.weights[0][...] = 0
    net.biases[0][...] = z
    history = gpubp.fit(net, X, y, epochs=1, batch_size=batch_size, optimizer=gpubp.SGD(net, lr=1e-12),
                        callbacks=[gpubp.LayerMonitor()], progress=False)  # fmt: skip
    assert history.layers[0][0]["saturated"] == expected


SLOPES = {
    "sigmoid": lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2,
    "tanh": lambda z: 1 / np.cosh(z) ** 2,
}


@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "leaky_relu"])
def test_the_unit_counts_over_many_steps_match_a_replay_by_hand(activation, every):
    # 50 rows in batches of 4: 13 steps, the last of 2 rows, with the weights moving at every step, so
    # each step's z differs. On a CPU the monitor keeps several steps' z and a and counts them at once,
    # both in the middle of the epoch and at its end; the counts must be those of every measured step.
    X, y = data(50)
    X *= 3  # some units past the saturation line, some ReLU units silent for some rows
    sizes = [5, 7, 6, 3]

    def new_net():
        return gpubp.MLP(sizes, activation=activation, loss="cross_entropy", dtype="float64", device="cpu", seed=2)

    net = new_net()
    net.biases[0][:2] = -40  # two units of layer 0 never fire (ReLU) or always saturate (sigmoid, tanh)
    replay, plain = new_net(), new_net()
    for other in (replay, plain):
        other.params[...] = net.params
    history = gpubp.fit(net, X, y, epochs=1, batch_size=4, shuffle=False, optimizer=gpubp.SGD(net, lr=0.5),
                        callbacks=[gpubp.LayerMonitor(every=every)], progress=False)  # fmt: skip
    gpubp.fit(plain, X, y, epochs=1, batch_size=4, shuffle=False, optimizer=gpubp.SGD(plain, lr=0.5), progress=False)
    np.testing.assert_array_equal(net.params, plain.params)  # the monitor does not change the training
    saturated, fired, rows, speeds = np.zeros(2), [np.zeros(7, bool), np.zeros(6, bool)], 0, []
    for step, start in enumerate(range(0, 50, 4)):
        trace = replay.forward(X[start : start + 4])
        grads = replay.backward(trace, y[start : start + 4])
        if step % every == 0:
            speeds.append([np.linalg.norm(b) for b in grads.biases])
            rows += len(trace.output)
            for l in range(2):
                z = trace.z[l]
                if activation in SLOPES:
                    saturated[l] += np.count_nonzero(SLOPES[activation](z) < 0.01 * SLOPES[activation](0.0))
                else:
                    fired[l] |= (z > 0).any(axis=0)
        gpubp.SGD(replay, lr=0.5).step(grads)
    np.testing.assert_array_equal(replay.params, net.params)
    first, second, _ = history.layers[0]
    assert len(speeds) == -(-13 // every)  # steps 0, every, 2·every, ... of the 13: the speeds average over them
    for l, layer in enumerate(history.layers[0]):
        assert layer["speed"] == pytest.approx(np.mean([s[l] for s in speeds]), rel=1e-12)
    if activation in SLOPES:
        expected = saturated / (rows * np.array([7, 6]))
        assert 0 < expected[0] < 1 and [first["saturated"], second["saturated"]] == list(expected)
    else:
        expected = [1 - f.mean() for f in fired]
        assert 0 < expected[0] < 1 and [first["dead"], second["dead"]] == expected


def test_two_monitors_in_one_fit_count_what_one_counts():
    # Monitors only read what a step made: a second one changes nothing the first one sees.
    X, y = data(50)
    X *= 3
    histories = []
    for monitors in (1, 2):
        net = sigmoid_net()
        callbacks = [gpubp.LayerMonitor() for _ in range(monitors)]
        histories.append(gpubp.fit(net, X, y, epochs=2, batch_size=4, callbacks=callbacks, progress=False).layers)
    assert histories[0] == histories[1]
    assert 0 < histories[0][-1][0]["saturated"] < 1


def test_a_net_without_hidden_layers_has_speeds_and_no_unit_counts():
    X, y = data()
    net = gpubp.MLP([5, 3], activation="sigmoid", loss="cross_entropy", dtype="float64", device="cpu", seed=1)
    grads = net.backward(net.forward(X), y)  # one batch of all rows, no shuffle needed
    history = gpubp.fit(net, X, y, epochs=1, batch_size=len(X), optimizer=gpubp.SGD(net, lr=0.1),
                        callbacks=[gpubp.LayerMonitor()], progress=False)  # fmt: skip
    [[layer]] = history.layers
    assert layer["speed"] == pytest.approx(np.linalg.norm(grads.biases[0]), rel=1e-12)
    assert "saturated" not in layer and "dead" not in layer


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_a_unit_that_never_fires_is_dead(activation):
    X, y = data()
    net = gpubp.MLP([5, 8, 4, 3], activation=activation, loss="cross_entropy", dtype="float64", device="cpu")
    net.biases[0][:3] = -1e3  # three of eight units never fire
    net.biases[1][...] = 1e3  # every unit of layer 1 always fires
    history = gpubp.fit(net, X, y, epochs=1, batch_size=16, optimizer=gpubp.SGD(net, lr=1e-9),
                        callbacks=[gpubp.LayerMonitor()], progress=False)  # fmt: skip
    first, second, _ = history.layers[0]
    assert first["dead"] == 3 / 8 and second["dead"] == 0.0


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_a_unit_that_fires_for_one_row_of_the_epoch_is_alive(activation):
    # Unit 0's z is the first input: above 0 in one row of 48, far below it in the rest. Leaky ReLU's
    # a is then negative in sum over the rows, and the unit still fired.
    X, y = data()
    X[:, 0] = -1e3
    X[17, 0] = 1.0
    net = gpubp.MLP([5, 2, 3], activation=activation, loss="cross_entropy", dtype="float64", device="cpu")
    net.weights[0][...] = 0
    net.weights[0][0, 0] = 1.0
    net.biases[0][...] = [0.0, -1.0]  # unit 1's z is −1 in every row: it never fires
    history = gpubp.fit(net, X, y, epochs=1, batch_size=16, optimizer=gpubp.SGD(net, lr=1e-12),
                        callbacks=[gpubp.LayerMonitor()], progress=False)  # fmt: skip
    assert history.layers[0][0]["dead"] == 0.5


def test_the_numbers_reach_the_log_and_the_history_and_survive_a_checkpoint(tmp_path):
    X, y = data()
    net = sigmoid_net()
    log, path = tmp_path / "run.jsonl", tmp_path / "m.safetensors"
    history = gpubp.fit(net, X, y, epochs=2, log=log, progress=False,
                        callbacks=[gpubp.LayerMonitor(), gpubp.ModelCheckpoint(path)])  # fmt: skip
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [len(r["layers"]) for r in records] == [3, 3] and [r["layers"] for r in records] == history.layers
    assert [r["layers"] for r in history.records()] == history.layers
    saved = gpubp.History.from_dict(gpubp.load_checkpoint(path, device="cpu").meta["history"])
    assert saved.layers == history.layers
    plain = gpubp.fit(sigmoid_net(), X, y, epochs=1, progress=False)
    assert plain.layers == [None] and "layers" not in plain.records()[0]


def test_no_read_back_per_step(monkeypatch):
    # Read-backs from the device go through to_numpy: their number must not grow with the steps.
    calls = []
    for module in (monitor, train):
        real = module.to_numpy
        monkeypatch.setattr(module, "to_numpy", lambda x, real=real: calls.append(1) or real(x))

    def read_backs(rows):
        X, y = data(rows)
        calls.clear()
        gpubp.fit(sigmoid_net(), X, y, epochs=2, batch_size=8, callbacks=[gpubp.LayerMonitor()], progress=False)
        return len(calls)

    assert read_backs(16) == read_backs(96) > 0  # 2 steps an epoch, or 12: the same read-backs


def test_bad_arguments():
    with pytest.raises(gpubp.ArgumentError, match="every must be a whole number ≥ 1; got 0"):
        gpubp.LayerMonitor(every=0)
    X, y = data()
    with pytest.raises(gpubp.ArgumentError, match="batch_size must be a whole number ≥ 1; got 0"):
        gpubp.learning_speeds(sigmoid_net(), X, y, batch_size=0)


@pytest.mark.gpu
@pytest.mark.parametrize("fused", ["1", "0"])  # the monitor's two kernels, and the array operations they replace
@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_the_monitor_on_the_gpu_matches_the_cpu(fused, activation, monkeypatch):
    require_gpu()
    monkeypatch.setenv(kernels.ENV_FUSED, fused)
    X, y = data()
    X[:, 0] *= 40  # some of layer 0's sigmoid units pushed past the saturation line
    results = []
    for device in ("cpu", "gpu"):
        net = gpubp.MLP([5, 7, 6, 3], activation=activation, loss="cross_entropy", dtype="float64", device=device,
                        seed=1)  # fmt: skip
        monitor = gpubp.LayerMonitor()
        history = gpubp.fit(net, X, y, epochs=2, batch_size=20, callbacks=[monitor], progress=False)
        results.append((history.layers, gpubp.learning_speeds(net, X, y)))
        if device == "gpu":
            assert monitor.fused == (fused == "1")  # an H100 or any GPU from 6.0 on
    for cpu_layer, gpu_layer in zip(results[0][0][-1], results[1][0][-1]):
        for key, value in cpu_layer.items():
            assert gpu_layer[key] == pytest.approx(value, rel=1e-10), key
    if activation == "sigmoid":
        assert 0 < results[0][0][-1][0]["saturated"] < 1  # the counts are really compared
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-10)
