"""fit: what it learns, what it reports, and how it behaves across devices and restarts."""

import json
import math

import numpy as np
import pytest

import gpubp
from gpubp import datasets, train

from .conftest import require_gpu, run_with_memory_capped
from .goldens import relative_error


def spiral_data():
    X, y = datasets.spirals(n=60, classes=3, seed=1)
    return X, y


def test_fit_learns_spirals_and_reports_every_epoch():
    X, y = spiral_data()
    net = gpubp.MLP([2, 32, 3], activation="tanh", loss="cross_entropy", device="cpu", seed=0)
    history = gpubp.fit(
        net, X, y, epochs=60, batch_size=16, optimizer=gpubp.SGD(net, lr=0.2, momentum=0.9), progress=False
    )
    assert history.epoch == list(range(1, 61)) and len(history) == 60
    assert history.accuracy[-1] > 0.9 and history.loss[-1] < 0.5 * history.loss[0]
    assert all(0 <= a <= 1 for a in history.accuracy)
    assert all(s > 0 for s in history.seconds) and history.val_loss == [None] * 60
    assert gpubp.evaluate(net, X, y)["accuracy"] > 0.9


def test_each_rows_loss_and_hit_argmax_for_classes_and_a_threshold_for_one_sigmoid():
    multi = gpubp.MLP([2, 3], loss="cross_entropy", dtype="float64", device="cpu")
    out = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    y = np.eye(3)[[0, 1, 0]]
    rows = np.full((2, 3), np.nan)
    train.measure(multi, out, y, multi.workspace(3), rows[0], rows[1])
    np.testing.assert_allclose(rows[0], [-np.log(0.7), -np.log(0.3), -np.log(0.5)], rtol=1e-15)
    assert rows[1].tolist() == [1, 0, 1]  # row 1 predicts class 2
    single = gpubp.MLP([2, 1], dtype="float64", device="cpu")  # sigmoid output, mse
    rows = np.full((2, 3), np.nan)
    train.measure(
        single, np.array([[0.49], [0.51], [0.9]]), np.array([[0.0], [0.0], [1.0]]), single.workspace(3), *rows
    )
    np.testing.assert_allclose(rows[0], [0.5 * 0.49**2, 0.5 * 0.51**2, 0.5 * 0.1**2], rtol=1e-14)
    assert rows[1].tolist() == [1, 0, 1]
    regression = gpubp.MLP([2, 1], output_activation="identity", device="cpu")
    assert train.accuracy_kind(regression) is None


def test_same_seed_same_run_and_batch_order_follows_the_seed():
    X, y = spiral_data()

    def run(seed):
        net = gpubp.MLP([2, 8, 3], loss="cross_entropy", device="cpu", seed=0)
        gpubp.fit(net, X, y, epochs=3, batch_size=10, seed=seed, progress=False)
        return net.params.copy()

    np.testing.assert_array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))


class _Frozen(gpubp.Callback):
    """lr = 0 in every epoch: fit takes all its steps, but no weight moves."""

    def on_epoch_begin(self, state):
        state.optimizer.lr = 0.0


def test_each_epoch_reports_the_loss_and_accuracy_of_that_epoch_alone():
    X, y = spiral_data()
    net = gpubp.MLP([2, 16, 3], activation="tanh", loss="cross_entropy", dtype="float64", device="cpu", seed=0)
    gpubp.fit(net, X, y, epochs=5, optimizer=gpubp.SGD(net, lr=0.2, momentum=0.9), progress=False)
    before = net.params.copy()
    frozen = gpubp.fit(net, X, y, epochs=3, batch_size=16, callbacks=[_Frozen()], progress=False)
    np.testing.assert_array_equal(net.params, before)
    # With the weights still, each epoch's metrics are those of the net on the whole data.
    expected = gpubp.evaluate(net, X, y)
    assert 0.4 < expected["accuracy"] < 1
    assert frozen.accuracy == [expected["accuracy"]] * 3
    assert frozen.loss == pytest.approx([expected["loss"]] * 3, rel=1e-12)


def test_each_epoch_draws_a_new_batch_order():
    X, y = spiral_data()

    def start():
        net = gpubp.MLP([2, 8, 3], loss="cross_entropy", dtype="float64", device="cpu", seed=0)
        return net, gpubp.SGD(net, lr=0.1)

    two_epochs, opt = start()
    gpubp.fit(two_epochs, X, y, epochs=2, batch_size=10, optimizer=opt, seed=5, progress=False)
    first_twice, opt = start()
    for _ in range(2):  # epoch 1, and then epoch 1 again: the same order twice
        gpubp.fit(first_twice, X, y, epochs=1, batch_size=10, optimizer=opt, seed=5, progress=False)
    assert not np.array_equal(two_epochs.params, first_twice.params)


def test_validation_metrics_and_log_file(tmp_path):
    X, y = spiral_data()
    log = tmp_path / "run.jsonl"
    net = gpubp.MLP([2, 8, 3], loss="cross_entropy", device="cpu")
    history = gpubp.fit(net, X[:150], y[:150], epochs=3, validation_data=(X[150:], y[150:]), log=log, progress=False)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert set(records[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds", "lr"}
    assert records == history.records()
    expected = gpubp.evaluate(net, X[150:], y[150:])
    assert records[-1]["val_loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert records[-1]["val_accuracy"] == expected["accuracy"]


def test_progress_lines_and_bar(capsys):
    X, y = spiral_data()
    net = gpubp.MLP([2, 4, 3], loss="cross_entropy", device="cpu")
    gpubp.fit(net, X, y, epochs=2, progress="lines")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2  loss ") and "accuracy" in lines[0]
    gpubp.fit(net, X, y, epochs=2, progress="bar")
    err = capsys.readouterr().err
    assert "batch" in err and "epoch 2/2  loss" in err  # tqdm's bar, then the epoch's line
    gpubp.fit(net, X, y, epochs=1, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("rows, batch_size, steps", [(48, 16, 3), (50, 16, 4), (15, 16, 1)])
def test_the_progress_bar_counts_every_step_of_an_epoch(capsys, rows, batch_size, steps):
    X, y = spiral_data()
    net = gpubp.MLP([2, 4, 3], loss="cross_entropy", device="cpu")
    gpubp.fit(net, X[:rows], y[:rows], epochs=1, batch_size=batch_size, progress="bar")
    assert f"| 0/{steps} [" in capsys.readouterr().err  # tqdm's first line: no step done of the epoch's all


def test_step_and_cosine_schedules():
    X, y = spiral_data()
    net = gpubp.MLP([2, 4, 3], loss="cross_entropy", device="cpu")
    history = gpubp.fit(
        net, X, y, epochs=5, optimizer=gpubp.SGD(net, lr=0.1), callbacks=[gpubp.StepLR(2, 0.5)], progress=False
    )
    assert history.lr == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    history = gpubp.fit(
        net, X, y, epochs=4, optimizer=gpubp.SGD(net, lr=0.1), callbacks=[gpubp.CosineLR()], progress=False
    )
    # 0.05 (1 + cos(π (e − 1) / 4)) for e = 1..4
    assert history.lr == pytest.approx([0.1, 0.05 * (1 + math.sqrt(0.5)), 0.05, 0.05 * (1 - math.sqrt(0.5))])


def test_early_stopping_stops_and_restores_the_best_weights():
    X, y = spiral_data()
    rng = np.random.default_rng(0)
    net = gpubp.MLP([2, 16, 3], loss="cross_entropy", device="cpu")
    # Validation labels that cannot be learned: the validation loss soon stops improving.
    X_val, y_val = X[:40], rng.integers(0, 3, 40)
    stopper = gpubp.EarlyStopping(patience=2)
    history = gpubp.fit(
        net,
        X,
        y,
        epochs=100,
        validation_data=(X_val, y_val),
        callbacks=[stopper],
        optimizer=gpubp.SGD(net, lr=0.5, momentum=0.9),
        progress=False,
    )
    assert len(history) < 100
    assert len(history) == stopper.best_epoch + 2
    assert gpubp.evaluate(net, X_val, y_val)["loss"] == pytest.approx(min(history.val_loss), rel=1e-5)


def test_early_stopping_that_never_stops_leaves_the_last_weights():
    # Validation labels that cannot be learned: the best epoch comes early, but patience outlasts the run.
    X, y = spiral_data()
    X_val, y_val = X[:40], np.random.default_rng(0).integers(0, 3, 40)

    def run(callbacks):
        net = gpubp.MLP([2, 16, 3], loss="cross_entropy", device="cpu", seed=0)
        history = gpubp.fit(net, X, y, epochs=12, validation_data=(X_val, y_val), callbacks=callbacks,
                            optimizer=gpubp.SGD(net, lr=0.5, momentum=0.9), progress=False)  # fmt: skip
        return net, history

    stopper = gpubp.EarlyStopping(patience=100)
    net, history = run([stopper])
    plain, _ = run([])
    assert len(history) == 12 and stopper.best_epoch < 12  # a better epoch came before the last
    np.testing.assert_array_equal(net.params, plain.params)


def test_early_stopping_counts_only_improvements_of_min_delta():
    X, y = spiral_data()

    def run(min_delta):
        net = gpubp.MLP([2, 16, 3], activation="tanh", loss="cross_entropy", device="cpu", seed=0)
        stopper = gpubp.EarlyStopping(patience=2, min_delta=min_delta)
        history = gpubp.fit(
            net,
            X,
            y,
            epochs=8,
            validation_data=(X[::3], y[::3]),
            callbacks=[stopper],
            optimizer=gpubp.SGD(net, lr=0.2, momentum=0.9),
            progress=False,
        )
        return history, stopper

    history, _ = run(0.0)
    assert len(history) == 8  # the validation loss keeps going down
    gains = -np.diff([np.inf, *history.val_loss])  # how much each epoch improved on the one before
    history, stopper = run(2 * max(gains[1:]))  # more than any epoch after the first gains
    assert len(history) == 3 and stopper.best_epoch == 1


def test_early_stopping_needs_validation_data():
    X, y = spiral_data()
    net = gpubp.MLP([2, 4, 3], loss="cross_entropy", device="cpu")
    with pytest.raises(gpubp.ArgumentError, match="pass validation_data"):
        gpubp.fit(net, X, y, epochs=2, callbacks=[gpubp.EarlyStopping()], progress=False)


def test_divergence_names_the_epoch_and_step_and_keeps_the_last_good_weights():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(64, 4)) * 100, rng.normal(size=(64, 1)) * 100

    def make():
        net = gpubp.MLP([4, 16, 1], activation="relu", output_activation="identity", device="cpu")
        return net, gpubp.SGD(net, lr=10.0, momentum=0.5)

    def train_for(net, opt, epochs):
        with np.errstate(all="ignore"):
            gpubp.fit(net, X, Y, epochs=epochs, batch_size=16, optimizer=opt, seed=3, progress=False)

    net, opt = make()
    with pytest.raises(gpubp.TrainingDiverged, match=r"at step \d+ of epoch \d+.*Try a lower learning rate") as info:
        train_for(net, opt, epochs=10)
    message = str(info.value)
    step, epoch = (int(w) for w in message.split("at step ")[1].split(":")[0].split(" of epoch "))
    assert np.all(np.isfinite(net.params)) and np.all(np.isfinite(opt.velocity))

    # The net and optimizer hold the state from the start of that epoch: that of a run stopped just before it.
    reference, reference_opt = make()
    if epoch > 1:
        train_for(reference, reference_opt, epochs=epoch - 1)
    np.testing.assert_array_equal(net.params, reference.params)
    np.testing.assert_array_equal(opt.velocity, reference_opt.velocity)

    # Replaying that epoch by hand, in fit's batch order, the loss first stops being a number at the named step.
    order = np.random.default_rng([3, epoch]).permutation(len(X))
    finite = []
    with np.errstate(all="ignore"):
        for start in range(0, len(X), 16):
            rows = order[start : start + 16]
            trace = reference.forward(X[rows])
            finite.append(bool(np.isfinite(reference.loss_fn.value(trace.output, reference.targets(Y[rows], 16)))))
            reference_opt.step(reference.backward(trace, Y[rows]))
    assert finite.index(False) + 1 == step


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": 0}, r"epochs must be a whole number ≥ 1; got 0"),
        ({"epochs": 2, "batch_size": 0}, r"batch_size must be a whole number ≥ 1; got 0"),
        ({"epochs": 2.5}, r"epochs must be a whole number ≥ 1; got 2.5"),
        ({"epochs": True}, r"epochs must be a whole number ≥ 1; got True"),
        ({"epochs": 2, "initial_epoch": 3}, r"initial_epoch must be a whole number from 0 to epochs=2"),
        ({"epochs": 2, "progress": "loud"}, r"progress must be True, False, 'bar' or 'lines'"),
        ({"epochs": 2, "validation_data": np.zeros(3)}, r"validation_data must be a pair"),
        ({"epochs": 1, "optimizer": "sgd"}, r"optimizer must be a gpubp.SGD, Adam or AdamW; got 'sgd'"),
        ({"epochs": 1, "callbacks": [print]}, r"callbacks must be gpubp.Callback objects"),
        (
            {"epochs": 1, "log": "/no/such/folder/run.jsonl"},
            r"log: the folder for '/no/such/folder/run.jsonl' does not",
        ),
    ],
)
def test_bad_fit_arguments(kwargs, message):
    X, y = spiral_data()
    net = gpubp.MLP([2, 4, 3], loss="cross_entropy", device="cpu")
    with pytest.raises((gpubp.ArgumentError, gpubp.ArgumentTypeError), match=message):
        gpubp.fit(net, X, y, **kwargs)


def test_optimizer_of_another_net_is_refused():
    X, y = spiral_data()
    net, other = (gpubp.MLP([2, 4, 3], loss="cross_entropy", device="cpu") for _ in range(2))
    with pytest.raises(gpubp.ArgumentError, match="optimizer was made for another network"):
        gpubp.fit(net, X, y, epochs=1, optimizer=gpubp.SGD(other, lr=0.1), progress=False)


@pytest.mark.gpu
def test_fit_on_the_gpu_follows_the_cpu_run():
    require_gpu()
    # The batch order comes from the host RNG, so a GPU run follows the CPU run.
    X, y = spiral_data()
    final = []
    for dev in ("cpu", "gpu"):
        net = gpubp.MLP([2, 16, 3], activation="tanh", loss="cross_entropy", dtype="float64", device=dev)
        history = gpubp.fit(
            net, X, y, epochs=3, batch_size=16, optimizer=gpubp.SGD(net, lr=0.1, momentum=0.9), seed=3, progress=False
        )
        final.append((gpubp.to_numpy(net.params), history.loss))
    assert relative_error(final[1][0], final[0][0]) <= 1e-10
    assert relative_error(final[1][1], final[0][1]) <= 1e-10


def test_threads_pins_the_blas_for_the_run():
    from threadpoolctl import threadpool_info

    seen = []

    class Spy(gpubp.Callback):
        def on_epoch_end(self, state, record):
            seen.append({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})

    before = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    X, y = spiral_data()
    net = gpubp.MLP([2, 4, 3], loss="cross_entropy", device="cpu")
    gpubp.fit(net, X, y, epochs=2, threads=1, callbacks=[Spy()], progress=False)
    assert seen == [{1}, {1}]
    assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == before  # restored after
    with pytest.raises(gpubp.ArgumentError, match="threads must be a whole number ≥ 1; got 0"):
        gpubp.fit(net, X, y, epochs=1, threads=0, progress=False)


# --- out of memory ---------------------------------------------------------------------------


def test_running_out_of_memory_names_the_batch_size():
    stdout = run_with_memory_capped(
        """
        import numpy as np, gpubp
        rng = np.random.default_rng(0)
        X, y = rng.random((20000, 64), dtype=np.float32), rng.integers(0, 10, 20000)
        net = gpubp.MLP([64, 4096, 10], loss="cross_entropy", device="cpu")
        gpubp.fit(net, X[:256], y[:256], epochs=1, batch_size=64, progress=False)
        before = net.params.copy()
        cap_memory(200 * 2**20)
        try:
            gpubp.fit(net, X, y, epochs=1, batch_size=20000, progress=False)  # about 1 GB of work arrays
        except gpubp.OutOfMemory as e:
            print(e)
        print("unchanged", bool((net.params == before).all()))
        """
    )
    assert "cpu ran out of memory" in stdout and "at batch_size=20000" in stdout
    assert "try a smaller batch_size, such as 10000" in stdout
    assert "unchanged True" in stdout


@pytest.mark.gpu
def test_gpu_out_of_memory_names_the_batch_size():
    require_gpu()
    model = gpubp.MLP([784, 4096, 10], loss="cross_entropy", device="gpu")
    pool = model.xp.get_default_memory_pool()
    X, y = np.random.default_rng(0).random((32768, 784), dtype=np.float32), np.zeros(32768, dtype=int)
    pool.set_limit(size=pool.used_bytes() + 256 * 2**20)  # room for the data, not for 32768-row work arrays
    try:
        with pytest.raises(gpubp.OutOfMemory, match=r"cuda:0 ran out of memory .*batch_size=32768.*such as 16384"):
            gpubp.fit(model, X, y, epochs=1, batch_size=32768, progress=False)
    finally:
        pool.set_limit(size=0)  # no limit again
