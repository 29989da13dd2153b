"""The steady state of training allocates nothing: every array a step writes is made before the first epoch."""

import tracemalloc

import numpy as np
import pytest

import gpubp

MB = 1 << 20


class PeakAfterFirstEpoch(gpubp.Callback):
    """Starts tracemalloc after epoch 1 and records how far its peak rises over the later epochs."""

    def __init__(self):
        self.growth = None

    def on_epoch_end(self, state, record):
        if record["epoch"] == 1:
            tracemalloc.start()
            self.baseline = tracemalloc.get_traced_memory()[0]
        elif record["epoch"] == state.epochs:
            self.growth = tracemalloc.get_traced_memory()[1] - self.baseline
            tracemalloc.stop()


@pytest.mark.parametrize(
    "loss, output, momentum",
    [("mse", "sigmoid", 0.0), ("cross_entropy", "softmax", 0.9)],
    ids=["sigmoid-mse-sgd", "softmax-ce-momentum"],
)
def test_epochs_after_the_first_allocate_under_1_mb(loss, output, momentum):
    rng = np.random.default_rng(0)
    X = rng.random((4 * 1024 + 100, 784), dtype=np.float32)  # four full batches and a short one
    y = rng.integers(0, 10, size=len(X))
    net = gpubp.MLP([784, 1024, 10], activation="sigmoid", output_activation=output, loss=loss, device="cpu")
    Y = np.eye(10, dtype=np.float32)[y] if loss == "mse" else y
    probe = PeakAfterFirstEpoch()
    opt = gpubp.SGD(net, lr=0.01, momentum=momentum, weight_decay=1e-4)
    gpubp.fit(net, X, Y, epochs=3, batch_size=1024, optimizer=opt, callbacks=[probe], progress=False)
    # One 1024×1024 float32 temporary would be 4 MB: the limit catches any large array made per step.
    assert probe.growth is not None and probe.growth < 1 * MB, f"peak grew by {probe.growth / MB:.2f} MB"


def test_the_probe_sees_a_per_step_allocation():
    # The measurement can fail: a callback that allocates 4 MB each epoch is caught.
    class Wasteful(gpubp.Callback):
        def on_epoch_begin(self, state):
            self.buffer = np.ones((1024, 1024), dtype=np.float32)

    rng = np.random.default_rng(0)
    X, y = rng.random((256, 20), dtype=np.float32), rng.integers(0, 3, size=256)
    net = gpubp.MLP([20, 8, 3], loss="cross_entropy", device="cpu")
    probe = PeakAfterFirstEpoch()
    gpubp.fit(net, X, y, epochs=3, callbacks=[probe, Wasteful()], progress=False)
    assert probe.growth > 3 * MB
