"""Checkpoints: round trips, other devices, resuming, atomic writes, and damaged files."""

import json
import os
import pickle
import random
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpubp
from gpubp import checkpoint, datasets

from .conftest import require_gpu
from .test_network import either_works_or_explains, small_net


def trained_net(device="cpu", dtype="float32"):
    X, y = datasets.spirals(n=40, seed=2)
    net = gpubp.MLP([2, 12, 3], activation="tanh", loss="cross_entropy", dtype=dtype, device=device, seed=4)
    opt = gpubp.SGD(net, lr=0.1, momentum=0.9, weight_decay=1e-4)
    history = gpubp.fit(net, X, y, epochs=2, optimizer=opt, progress=False)
    return net, opt, history, X, y


def test_round_trip_keeps_weights_config_optimizer_and_meta(tmp_path):
    net, opt, history, X, _ = trained_net()
    path = checkpoint.save(net, tmp_path / "m.safetensors", opt, epoch=2, history=history.to_dict(), note="hi")
    ckpt = gpubp.load_checkpoint(path, device="cpu")
    np.testing.assert_array_equal(ckpt.net.params, net.params)
    np.testing.assert_array_equal(ckpt.net.predict(X), net.predict(X))
    assert repr(ckpt.net) == repr(net)
    assert ckpt.optimizer.hyperparameters() == opt.hyperparameters()
    np.testing.assert_array_equal(ckpt.optimizer.velocity, opt.velocity)
    assert ckpt.epoch == 2 and ckpt.meta["note"] == "hi" and ckpt.meta["history"] == history.to_dict()
    assert isinstance(gpubp.load(path, device="cpu"), gpubp.MLP)


@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdamW", None])
def test_dumps_makes_what_save_writes_and_loads_reads_either_back(tmp_path, kind):
    net, _, history, X, y = trained_net()
    opt = {"SGD": gpubp.SGD(net, lr=0.1, momentum=0.9, nesterov=True), "Adam": gpubp.Adam(net, betas=(0.8, 0.99)),
           "AdamW": gpubp.AdamW(net, lr=3e-3, eps=1e-6), None: None}[kind]  # fmt: skip
    if opt is not None:
        gpubp.fit(net, X, y, epochs=1, optimizer=opt, progress=False)  # state that is not zero, steps > 0
        opt.lr /= 3  # as a schedule leaves it
    data = checkpoint.dumps(net, opt, epoch=3, history=history.to_dict())
    assert isinstance(data, bytes)
    written = checkpoint.save(net, tmp_path / "m.safetensors", opt, epoch=3, history=history.to_dict())
    for opened in (checkpoint.loads(data, device="cpu"), checkpoint.loads(written.read_bytes(), device="cpu")):
        check_opened(opened, net, opt, history)


def check_opened(opened, net, opt, history):
    np.testing.assert_array_equal(opened.net.params, net.params)
    assert repr(opened.net) == repr(net) and opened.epoch == 3 and opened.meta["history"] == history.to_dict()
    if opt is None:
        assert opened.optimizer is None
        return
    assert type(opened.optimizer) is type(opt) and opened.optimizer.net is opened.net
    assert opened.optimizer.hyperparameters() == opt.hyperparameters()  # lr, initial lr, steps, the settings
    for name, array in opt.state.items():
        np.testing.assert_array_equal(opened.optimizer.state[name], array)


def test_loads_refuses_what_is_not_a_whole_checkpoint():
    net, opt, *_ = trained_net()
    data = checkpoint.dumps(net, opt)
    with pytest.raises(gpubp.ArgumentTypeError, match="data must be the bytes of a checkpoint; got str"):
        checkpoint.loads("m.safetensors")
    with pytest.raises(gpubp.CheckpointError, match=r"^rank 0's copy is truncated: its header needs"):
        checkpoint.loads(data[:100], source="rank 0's copy")
    flipped = bytearray(data)
    flipped[-3] ^= 0x10
    with pytest.raises(gpubp.CheckpointError, match="^the checkpoint failed its checksum"):
        checkpoint.loads(bytes(flipped))


def test_each_optimizer_rebuilds_itself_from_its_hyperparameters():
    net, *_ = trained_net()
    for made in (gpubp.SGD(net, lr=0.2, momentum=0.5, weight_decay=1e-3), gpubp.Adam(net, eps=1e-7),
                 gpubp.AdamW(net, weight_decay=0.3)):  # fmt: skip
        made.lr, made.steps = made.lr / 2, 17
        hyper = made.hyperparameters()
        for rebuilt in (gpubp.Optimizer.from_hyperparameters(net, hyper), type(made).from_hyperparameters(net, hyper)):
            assert type(rebuilt) is type(made) and rebuilt.hyperparameters() == hyper

    class Tuned(gpubp.SGD):  # a subclass that keeps SGD's name is not what a saved SGD is rebuilt as
        pass

    assert type(gpubp.Optimizer.from_hyperparameters(net, Tuned(net, lr=0.1).hyperparameters())) is gpubp.SGD
    with pytest.raises(gpubp.ArgumentError, match="describe a SGD optimizer, not a Adam"):
        gpubp.Adam.from_hyperparameters(net, gpubp.SGD(net, lr=0.1).hyperparameters())
    with pytest.raises(gpubp.ArgumentError, match=r"optimizer must be one of SGD, .*AdamW.*; got 'Lion'"):
        gpubp.Optimizer.from_hyperparameters(net, {"name": "Lion", "lr": 0.1})


def test_other_safetensors_readers_see_plain_layer_tensors(tmp_path):
    from safetensors import safe_open

    net, *_ = trained_net()
    path = gpubp.save(net, tmp_path / "m.safetensors")
    with safe_open(str(path), framework="numpy") as f:
        assert set(f.keys()) == {"layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"}
        np.testing.assert_array_equal(f.get_tensor("layers.1.weight"), net.weights[1])
        meta = f.metadata()
    assert meta["format"] == "gpubp-mlp" and meta["format_version"] == "1"
    assert meta["gpubp_version"] == gpubp.__version__
    assert json.loads(meta["config"])["sizes"] == [2, 12, 3]
    assert json.loads(meta["optimizer"]) is None


@pytest.mark.gpu
@pytest.mark.parametrize("direction", ["gpu to cpu", "cpu to gpu"])
def test_a_model_moves_between_devices(tmp_path, direction):
    require_gpu()
    source, target = ("gpu", "cpu") if direction == "gpu to cpu" else ("cpu", "gpu")
    net, opt, _, X, _ = trained_net(device=source)
    loaded = gpubp.load_checkpoint(gpubp.save(net, tmp_path / "m.safetensors", opt), device=target)
    assert str(loaded.net.device).startswith("cuda" if target == "gpu" else "cpu")
    np.testing.assert_array_equal(gpubp.to_numpy(loaded.net.params), gpubp.to_numpy(net.params))
    np.testing.assert_allclose(gpubp.to_numpy(loaded.net.predict(X)), gpubp.to_numpy(net.predict(X)), rtol=1e-5)


def test_resume_is_bit_identical_to_an_unbroken_run(tmp_path):
    X, y = datasets.spirals(n=50, seed=3)

    def start():
        net = gpubp.MLP([2, 16, 3], activation="relu", loss="cross_entropy", device="cpu", seed=9)
        return net, gpubp.SGD(net, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)

    schedule = [gpubp.CosineLR()]
    net, opt = start()
    straight = gpubp.fit(net, X, y, epochs=6, batch_size=16, optimizer=opt, seed=1, callbacks=schedule, progress=False)

    # Three epochs of the six, saved; then loaded and finished.
    first, opt1 = start()
    part = gpubp.fit(
        first,
        X,
        y,
        epochs=6,
        batch_size=16,
        optimizer=opt1,
        seed=1,
        callbacks=[*schedule, _StopAfter(3)],
        progress=False,
    )
    assert len(part) == 3
    path = gpubp.save(first, tmp_path / "r.safetensors", opt1, epoch=3, history=part.to_dict())
    ckpt = gpubp.load_checkpoint(path, device="cpu")
    rest = gpubp.fit(
        ckpt.net,
        X,
        y,
        epochs=6,
        batch_size=16,
        optimizer=ckpt.optimizer,
        seed=1,
        callbacks=schedule,
        progress=False,
        initial_epoch=ckpt.epoch,
        history=gpubp.History.from_dict(ckpt.meta["history"]),
    )
    np.testing.assert_array_equal(ckpt.net.params, net.params)
    np.testing.assert_array_equal(ckpt.optimizer.velocity, opt.velocity)
    assert rest.loss == straight.loss and rest.epoch == list(range(1, 7))


class _StopAfter(gpubp.Callback):
    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, state, record):
        state.stop = record["epoch"] >= self.epochs


def test_model_checkpoint_saves_every_epoch(tmp_path):
    X, y = datasets.spirals(n=30, seed=3)
    net = gpubp.MLP([2, 8, 3], loss="cross_entropy", device="cpu")
    path = tmp_path / "every.safetensors"
    seen = []

    class Spy(gpubp.Callback):
        def on_epoch_end(self, state, record):
            seen.append(gpubp.load_checkpoint(path, device="cpu").epoch)

    gpubp.fit(net, X, y, epochs=3, seed=7, callbacks=[gpubp.ModelCheckpoint(path, note="x"), Spy()], progress=False)
    assert seen == [1, 2, 3]
    meta = gpubp.load_checkpoint(path, device="cpu").meta
    assert meta["shuffle_seed"] == 7 and meta["note"] == "x" and meta["history"]["epoch"] == [1, 2, 3]


def test_a_refused_save_leaves_the_old_file_and_nothing_else(tmp_path):
    net, opt, *_ = trained_net()
    path = gpubp.save(net, tmp_path / "m.safetensors", opt)
    before = path.read_bytes()
    with pytest.raises(gpubp.CheckpointError, match="JSON-serialisable"):
        gpubp.save(net, path, opt, bad=object())
    assert path.read_bytes() == before
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gpubp.save(net, tmp_path / "missing" / "m.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_a_save_that_fails_mid_write_leaves_the_old_file_whole(tmp_path):
    # A file-size limit (ulimit -f) makes the write itself fail after its first 4 kB are on disk.
    net, opt, *_ = trained_net()
    path = gpubp.save(net, tmp_path / "m.safetensors", opt)
    before = path.read_bytes()
    code = textwrap.dedent(
        """
        import errno, resource, signal, sys
        import gpubp
        net = gpubp.MLP([64, 256, 10], device="cpu")  # about 70 kB of weights
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            gpubp.save(net, sys.argv[1])
        except OSError as e:
            print("EFBIG" if e.errno == errno.EFBIG else e)
        """
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "EFBIG", result.stdout + result.stderr
    assert path.read_bytes() == before  # the reader still sees the old checkpoint, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # and no temporary file is left


def test_a_save_is_made_durable_before_and_after_the_rename(tmp_path, monkeypatch):
    # A spy on os.fsync and os.replace: the new file's bytes reach the disk before it is renamed
    # over the old one, and the folder after, so that a power cut keeps one whole file.
    net, opt, *_ = trained_net()
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync folder" if stat.S_ISDIR(st.st_mode) else "fsync file", st.st_ino))
        real_fsync(fd)

    def replace(source, target):
        events.append(("replace", os.stat(source).st_ino))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = gpubp.save(net, tmp_path / "m.safetensors", opt)
    monkeypatch.undo()
    written = os.stat(path).st_ino
    assert events == [("fsync file", written), ("replace", written), ("fsync folder", os.stat(tmp_path).st_ino)]


def test_damaged_files_are_refused_with_a_clear_error(tmp_path):
    net, opt, *_ = trained_net()
    good = gpubp.save(net, tmp_path / "good.safetensors", opt).read_bytes()
    header_len = struct.unpack("<Q", good[:8])[0]

    def refused(data: bytes, message: str):
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(data)
        with pytest.raises(gpubp.CheckpointError, match=message):
            gpubp.load(bad, device="cpu")

    refused(good[: len(good) // 2], "not a valid safetensors file|truncated")
    refused(good[:5], "truncated")
    flipped = bytearray(good)
    flipped[-3] ^= 0x10  # one bit inside the last tensor's data
    refused(bytes(flipped), "failed its checksum")
    # The metadata is covered too: one changed byte that leaves the JSON valid.
    assert good.count(b"tanh") == 1
    refused(good.replace(b"tanh", b"relu"), "failed its checksum")  # would silently build another network
    noted = gpubp.save(net, tmp_path / "noted.safetensors", opt, note="abcdef").read_bytes()
    refused(noted.replace(b"abcdef", b"abcdeg"), "failed its checksum")
    refused(struct.pack("<Q", 1 << 40) + good[8:], "header, over the")
    refused(struct.pack("<Q", 10**6) + b"{}", "truncated: its header needs")  # checked before it is read
    newer = good.replace(b'"format_version":"1"', b'"format_version":"9"')
    assert newer != good
    refused(newer, "format 9, newer than this gpubp")
    with pytest.raises(gpubp.CheckpointError, match="does not exist"):
        gpubp.load(tmp_path / "nope.safetensors", device="cpu")
    assert header_len < len(good)


def test_a_plain_safetensors_file_is_not_taken_for_a_checkpoint(tmp_path):
    import safetensors.numpy

    path = tmp_path / "other.safetensors"
    path.write_bytes(safetensors.numpy.save({"w": np.zeros(3, dtype=np.float32)}))
    with pytest.raises(gpubp.CheckpointError, match="not a gpubp checkpoint"):
        gpubp.load(path, device="cpu")


def test_model_checkpoint_saves_the_weights_early_stopping_restores(tmp_path):
    X, y = datasets.spirals(n=30, seed=3)
    X_val, y_val = X[:30], np.random.default_rng(0).integers(0, 3, 30)  # unlearnable: stops early
    net = gpubp.MLP([2, 16, 3], loss="cross_entropy", device="cpu")
    path = tmp_path / "best.safetensors"
    saver = gpubp.ModelCheckpoint(path)
    history = gpubp.fit(
        net,
        X,
        y,
        epochs=100,
        validation_data=(X_val, y_val),
        progress=False,
        optimizer=gpubp.SGD(net, lr=0.5, momentum=0.9),
        callbacks=[gpubp.EarlyStopping(patience=2), saver],
    )
    assert len(history) < 100 and saver.saved_epoch == len(history)
    np.testing.assert_array_equal(gpubp.load(path, device="cpu").params, net.params)


def test_resume_keeps_the_learning_rate_a_schedule_had_reached(tmp_path):
    X, y = datasets.spirals(n=30, seed=3)
    net = gpubp.MLP([2, 8, 3], loss="cross_entropy", device="cpu")
    opt = gpubp.SGD(net, lr=0.4, momentum=0.9)
    history = gpubp.fit(net, X, y, epochs=3, optimizer=opt, callbacks=[gpubp.StepLR(1, 0.5)], progress=False)
    assert history.lr == pytest.approx([0.4, 0.2, 0.1])
    ckpt = gpubp.load_checkpoint(gpubp.save(net, tmp_path / "m.safetensors", opt, epoch=3), device="cpu")
    assert ckpt.optimizer.lr == pytest.approx(0.1) and ckpt.optimizer.initial_lr == pytest.approx(0.4)
    # Resumed with no schedule, training goes on at the rate the schedule had reached.
    rest = gpubp.fit(ckpt.net, X, y, epochs=5, optimizer=ckpt.optimizer, initial_epoch=3, progress=False)
    assert rest.lr == pytest.approx([0.1, 0.1])


def test_a_save_sweeps_away_what_a_killed_writer_left(tmp_path):
    folder = tmp_path
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid, live_pid = int(gone.stdout), os.getppid()  # a process that has exited, and one that runs
    (folder / f".m.safetensors.{dead_pid}.tmp").write_bytes(b"half a checkpoint")
    (folder / f".m.safetensors.{live_pid}.tmp").write_bytes(b"another writer, still at work")
    (folder / ".other.safetensors.1.tmp").write_bytes(b"not this file's")
    net, opt, *_ = trained_net()
    gpubp.save(net, folder / "m.safetensors", opt)
    assert sorted(p.name for p in folder.iterdir()) == [
        f".m.safetensors.{live_pid}.tmp",
        ".other.safetensors.1.tmp",
        "m.safetensors",
    ]


# --- hostile or broken input: refused, never run -------------------------------------------


def test_save_and_load_arguments(tmp_path):
    with pytest.raises(gpubp.ArgumentTypeError, match=r"net must be a gpubp.MLP; got dict"):
        gpubp.save({}, tmp_path / "m.safetensors")
    with pytest.raises(gpubp.ArgumentTypeError, match=r"path must be a file path; got 42"):
        gpubp.load(42)


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    model = small_net()
    path = tmp_path_factory.mktemp("good") / "good.safetensors"
    gpubp.save(model, path, gpubp.SGD(model, lr=0.1, momentum=0.9), epoch=1)
    return path.read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_load(good_checkpoint, tmp_path, data):
    blob = bytearray(good_checkpoint)
    how = data.draw(st.sampled_from(["random", "flip", "truncate", "splice"]))
    if how == "random":
        blob = bytearray(data.draw(st.binary(max_size=400)))
    elif how == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    else:
        i = data.draw(st.integers(0, len(blob)))
        blob = blob[:i] + data.draw(st.binary(max_size=40)) + blob[i:]
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(bytes(blob))
    either_works_or_explains(lambda: gpubp.load(path, device="cpu"))


def forged(tmp_path, config=None, tensors=None) -> Path:
    """A checkpoint whose checksum is right but whose contents lie: the checksum is no signature."""
    import safetensors.numpy

    tensors = tensors or {"layers.0.weight": np.zeros((3, 2), dtype=np.float32)}
    metadata = {
        "format": checkpoint.FORMAT,
        "format_version": "1",
        "gpubp_version": gpubp.__version__,
        "config": json.dumps(config),
        "optimizer": "null",
        "meta": "{}",
    }
    metadata["checksum"] = checkpoint._checksum(tensors, metadata)
    path = tmp_path / "forged.safetensors"
    path.write_bytes(safetensors.numpy.save(tensors, metadata=metadata))
    return path


@pytest.mark.parametrize(
    "config, message",
    [
        ({"sizes": [3, 2], "device": "gpu"}, r"unknown configuration keys \['device'\]"),
        ({"sizes": [3, -2]}, r"describes no network gpubp can build .*positive"),
        ({"sizes": [3, 2], "activation": "os.system"}, r"activation must be one of"),
        ([1, 2], r"must be JSON objects"),
        ({"sizes": [3, 2], "dtype": "float64"}, r"tensor layers.0.weight must be float64"),
        ({"sizes": [3, 5]}, r"tensor layers.0.weight must be float32 \(3, 5\)"),
    ],
)
def test_forged_checkpoints_are_refused(tmp_path, config, message):
    with pytest.raises(gpubp.CheckpointError, match=message):
        gpubp.load(forged(tmp_path, config), device="cpu")


class Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path(self.marker).touch, ())


@pytest.mark.parametrize("where", ["checkpoint", "npz data", "npy input", "safetensors metadata"])
def test_a_pickle_payload_never_runs(tmp_path, where):
    marker = tmp_path / "marker"
    payload = pickle.dumps(Payload(marker))
    pickle.loads(payload)  # the payload works: it makes the marker when unpickled
    assert marker.exists()
    marker.unlink()

    if where == "checkpoint":  # a pickle (what torch.save writes) named like a checkpoint
        path = tmp_path / "model.safetensors"
        path.write_bytes(payload)
        with pytest.raises(gpubp.CheckpointError):
            gpubp.load(path, device="cpu")
    elif where == "npz data":
        path = tmp_path / "data.npz"
        np.savez(path, X=np.array([Payload(marker)], dtype=object), y=np.zeros(1))
        with pytest.raises(gpubp.DatasetError):
            gpubp.datasets.load_file(path)
    elif where == "npy input":
        model_path = gpubp.save(small_net(), tmp_path / "m.safetensors")
        np.save(tmp_path / "rows.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
        result = subprocess.run(
            [sys.executable, "-m", "gpubp", "predict", str(model_path), "rows.npy", "--out", "p.csv"],
            capture_output=True, text=True, cwd=tmp_path, timeout=120,
        )  # fmt: skip
        assert result.returncode == 2 and "gpubp: error:" in result.stderr
    else:  # the pickle's bytes as a metadata string of a real checkpoint: read as text, never unpickled
        model = small_net()
        path = gpubp.save(model, tmp_path / "m.safetensors", note=payload.decode("latin-1"))
        assert gpubp.load_checkpoint(path, device="cpu").meta["note"] == payload.decode("latin-1")
    assert not marker.exists()


# --- checkpoints survive SIGKILL -------------------------------------------------------------


TRAINER = """
import sys
import numpy as np, gpubp
rng = np.random.default_rng(0)
X, y = rng.random((512, 64), dtype=np.float32), rng.integers(0, 10, 512)
net = gpubp.MLP([64, 256, 10], loss="cross_entropy", device="cpu")
print("ready", flush=True)
gpubp.fit(net, X, y, epochs=100000, batch_size=64, progress=False,
          callbacks=[gpubp.ModelCheckpoint(sys.argv[1])])
"""


def test_sigkill_at_random_moments_always_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "run.safetensors"
    rng = random.Random(0)
    kills, epochs_seen = 0, set()
    while kills < 20:
        process = subprocess.Popen([sys.executable, "-c", TRAINER, str(path)], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"
        if kills % 2:  # every other kill after the first save, however slow a busy machine makes the start
            deadline = time.monotonic() + 30
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.15))  # somewhere in an epoch, or in the middle of a save
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        process.stdout.close()
        kills += 1
        if path.exists():  # whichever file is there must load and pass its checksum
            saved = gpubp.load_checkpoint(path, device="cpu")
            assert saved.epoch >= 1 and len(saved.meta["history"]["epoch"]) == saved.epoch
            assert np.all(np.isfinite(saved.net.params))
            epochs_seen.add(saved.epoch)
        leftovers = [p.name for p in tmp_path.iterdir() if p.name != path.name]
        assert all(name.endswith(".tmp") for name in leftovers)  # at most a temporary file, never the real name
        for name in leftovers:
            (tmp_path / name).unlink()
    assert path.exists() and epochs_seen  # the kills did land after some saves
