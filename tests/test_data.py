"""Data that stays on the host: memory maps read batch by batch, in bounded memory, to the same weights."""

import gc
import tracemalloc

import numpy as np
import pytest

import gpubp
from gpubp import data
from gpubp import rows as row_views
from gpubp.datasets import load_file

from .conftest import require_gpu, run_with_memory_capped


def memory_map(path, array):
    """`array` written to a .npy file at `path`, opened again as a read-only memory map."""
    np.save(path, array)
    return np.load(path, mmap_mode="r")


def small_data(rows=203, features=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, features)), rng.integers(0, 3, rows).astype(np.int32)


def trained(X, y, data_on_device=None, loss="cross_entropy", device="cpu", progress=False):
    net = gpubp.MLP([X.shape[1], 9, 3], activation="tanh", loss=loss, device=device, seed=2)
    gpubp.fit(net, X, y, epochs=2, batch_size=16, optimizer=gpubp.SGD(net, lr=0.05, momentum=0.9),
              data_on_device=data_on_device, progress=progress)  # fmt: skip
    return net


def test_a_memory_map_of_a_gigabyte_trains_in_bounded_memory_to_the_weights_of_the_data_in_ram(tmp_path):
    rows, features = 262_144, 1024  # float32: 1 GiB
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32, shape=(rows, features))
    rng = np.random.default_rng(0)
    for start in range(0, rows, 16_384):  # written in pieces: the test itself stays small too
        X[start : start + 16_384] = rng.random((16_384, features), dtype=np.float32)
    X.flush()
    del X
    y = rng.integers(0, 2, rows)
    np.save(tmp_path / "y.npy", y)
    X, y = load_file(tmp_path / "X.npy")
    assert isinstance(X, np.memmap) and X.nbytes >= 2**30

    def run(X, y, data_on_device=None):
        net = gpubp.MLP([features, 8, 2], loss="cross_entropy", seed=1, device="cpu")
        gpubp.fit(net, X, y, epochs=1, batch_size=1024, data_on_device=data_on_device, progress=False)
        return net.params.copy()

    gc.collect()
    tracemalloc.start()
    try:
        streamed = run(X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"training on the memory map allocated {peak / 2**20:.0f} MB at its peak"
    in_ram = run(np.array(X), np.array(y))
    np.testing.assert_array_equal(streamed, in_ram)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_host_batches_give_the_same_weights_as_data_on_the_device(tmp_path, loss):
    X, labels = small_data()
    y = labels if loss == "cross_entropy" else np.eye(3)[labels] * 0.5  # class labels, or float targets
    on_device = trained(X, y, loss=loss).params
    mapped = trained(memory_map(tmp_path / "X.npy", X), memory_map(tmp_path / "y.npy", y), loss=loss).params
    plain = trained(X, y, data_on_device=False, loss=loss).params
    np.testing.assert_array_equal(mapped, on_device)  # float64 on disk, float32 net: converted per batch
    np.testing.assert_array_equal(plain, on_device)


def test_a_big_endian_memory_map_trains_as_its_native_copy(tmp_path):
    X, y = small_data()
    big = memory_map(tmp_path / "X.npy", X.astype(">f4"))
    assert big.dtype.byteorder == ">"
    np.testing.assert_array_equal(trained(big, y).params, trained(X.astype("<f4"), y).params)


def test_validation_and_evaluate_and_predict_read_a_memory_map_as_they_read_ram(tmp_path):
    X, y = small_data()
    X_map, y_map = memory_map(tmp_path / "X.npy", X), memory_map(tmp_path / "y.npy", y)
    net = gpubp.MLP([6, 9, 3], activation="tanh", loss="cross_entropy", seed=2, device="cpu")
    history = gpubp.fit(net, X[:150], y[:150], epochs=1, batch_size=16, validation_data=(X_map[150:], y_map[150:]),
                        progress=False)  # fmt: skip
    assert history.records()[0]["val_loss"] == gpubp.evaluate(net, X[150:], y[150:])["loss"]
    assert gpubp.evaluate(net, X_map, y_map, batch_size=7) == gpubp.evaluate(net, X, y, batch_size=7)
    np.testing.assert_array_equal(net.predict(X_map, batch_size=50), net.predict(X))


@pytest.mark.parametrize("rows", [201, 200, 49])
def test_a_memory_map_is_predicted_to_its_last_row(tmp_path, rows):
    # 201 = 4 batches of 50 and one row more; 200 ends on a batch; 49 is less than one batch.
    X, _ = small_data(rows=rows)
    net = gpubp.MLP([6, 9, 3], loss="cross_entropy", seed=2, device="cpu")
    np.testing.assert_array_equal(net.predict(memory_map(tmp_path / "X.npy", X), batch_size=50), net.predict(X))


def test_each_batch_keeps_its_slot_until_the_next_has_been_handed_out():
    # On a GPU the device may still be reading batch i's slot when batch i+1 is handed out:
    # the slot of batch i must not be the one the next batch is copied into.
    X, y = small_data(rows=50)
    net = gpubp.MLP([6, 9, 3], loss="cross_entropy", seed=2, device="cpu")
    host = data.HostData(net, X, y)
    batches = data.HostBatches(host, rows=8)
    rng = np.random.default_rng(3)
    steps = [(slice(i, i + len(r)), r) for i, r in enumerate(np.array_split(rng.permutation(50), 7))]
    steps.insert(3, (slice(0, 0), np.array([], dtype=np.int64)))  # a rank with no rows in this batch
    seen = []
    for (done, rows), (got, x, yb) in zip(steps, batches(steps)):
        assert got == done
        if len(rows) == 0:
            assert x is None and yb is None
            continue
        np.testing.assert_array_equal(x, X[rows].astype(net.dtype))
        np.testing.assert_array_equal(yb, np.eye(3, dtype=net.dtype)[y[rows]])
        for held, raw in seen[-1:]:  # the previous batch's slot still holds its rows
            np.testing.assert_array_equal(held, raw)
        slot = next(i for i, (dx, _) in enumerate(batches.device) if np.array_equal(dx[: len(rows)], X[rows]))
        seen.append((batches.device[slot][0][: len(rows)], X[rows]))
    assert len(seen) == 7


def test_fit_says_when_the_data_stays_on_the_host(tmp_path, capsys):
    X, y = small_data()
    trained(memory_map(tmp_path / "X.npy", X), y, progress="lines")
    assert "the training data (X and Y) (" in capsys.readouterr().err
    trained(X, y, data_on_device=False, progress="lines")
    assert "stays on the host, since data_on_device=False" in capsys.readouterr().err
    trained(X, y, progress="lines")
    assert "stays on the host" not in capsys.readouterr().err


def test_bad_host_data_is_refused_chunk_by_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(row_views, "CHUNK_BYTES", 100)  # many chunks: the bad value sits in the last
    X, y = small_data()
    X[-1, 2] = np.nan
    with pytest.raises(gpubp.ArgumentError, match="X holds NaN or infinite values"):
        trained(memory_map(tmp_path / "X.npy", X), y)
    X[-1, 2] = 0
    y[-1] = 3
    with pytest.raises(gpubp.ArgumentError, match=r"must lie in \[0, 3\) for 3 outputs; got values from 0 to 3"):
        trained(memory_map(tmp_path / "X.npy", X), memory_map(tmp_path / "y.npy", y))
    with pytest.raises(gpubp.ShapeError, match=r"class labels Y must have shape \(203,\)"):
        trained(X, y[:-1], data_on_device=False)
    with pytest.raises(gpubp.ArgumentError, match="data_on_device must be True, False or None"):
        trained(X, y % 3, data_on_device="yes")


def test_a_npy_pair_opens_as_memory_maps(tmp_path):
    X, y = small_data()
    np.save(tmp_path / "train_X.npy", X)
    np.save(tmp_path / "train_y.npy", y)
    X2, y2 = load_file(tmp_path / "train_X.npy")
    assert isinstance(X2, np.memmap) and isinstance(y2, np.memmap)
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    np.save(tmp_path / "lonely_X.npy", X)
    with pytest.raises(gpubp.DatasetError, match="its labels y must lie beside it in lonely_y.npy"):
        load_file(tmp_path / "lonely_X.npy")
    np.save(tmp_path / "data.npy", X)
    with pytest.raises(gpubp.DatasetError, match="its name must contain X"):
        load_file(tmp_path / "data.npy")


def test_gpubp_train_takes_a_npy_pair(tmp_path):
    from .test_cli import gpubp_cli

    X, y = small_data()
    np.save(tmp_path / "train_X.npy", X)
    np.save(tmp_path / "train_y.npy", y)
    result = gpubp_cli("train", "--data", "train_X.npy", "--epochs", "2", "--layers", "8", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "opened 203 rows from train_X.npy and train_y.npy as memory maps" in result.stderr
    assert (tmp_path / "gpubp-train.safetensors").is_file()


@pytest.mark.parametrize("standardize", ["none", "feature"])
def test_gpubp_train_on_a_npy_pair_gives_the_model_of_the_same_data_in_a_npz(tmp_path, standardize):
    from .test_cli import gpubp_cli

    X, y = small_data(rows=300)
    X = X.astype(np.float32)  # as load_file reads a .npz; a .npy stays in the dtype it was saved in
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    for source, model in (("X.npy", "a.safetensors"), ("d.npz", "b.safetensors")):
        result = gpubp_cli("train", "--data", source, "--epochs", "2", "--standardize", standardize, "--save", model,
                           "--no-progress", cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
    a, b = (gpubp.load_checkpoint(tmp_path / name, device="cpu") for name in ("a.safetensors", "b.safetensors"))
    np.testing.assert_array_equal(a.net.params, b.net.params)  # the same split, scaling and batches
    evaluated = gpubp_cli("eval", "a.safetensors", "--data", "X.npy", cwd=tmp_path)
    assert evaluated.returncode == 0 and "test rows: 60" in evaluated.stdout, evaluated.stderr


def test_gpubp_train_on_a_large_npy_pair_needs_memory_for_batches_not_for_the_data(tmp_path, monkeypatch):
    from gpubp import cli

    rows, features = 262_144, 256  # float32: 256 MiB
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32, shape=(rows, features))
    rng = np.random.default_rng(0)
    for start in range(0, rows, 32_768):
        X[start : start + 32_768] = rng.random((32_768, features), dtype=np.float32)
    X.flush()
    del X
    np.save(tmp_path / "y.npy", rng.integers(0, 2, rows))
    monkeypatch.chdir(tmp_path)
    gc.collect()
    tracemalloc.start()
    try:  # split, standardise, train an epoch, evaluate the test rows, save
        code = cli.main(["train", "--data", "X.npy", "--epochs", "1", "--layers", "8", "--batch-size", "1024",
                         "--no-progress"])  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 0
    assert peak < 64 * 2**20, f"gpubp train allocated {peak / 2**20:.0f} MB at its peak for 256 MB of data"


def test_splitting_and_standardising_a_memory_map_read_it_in_pieces(tmp_path, monkeypatch):
    from gpubp.datasets import Standardizer, train_test_split

    monkeypatch.setattr(row_views, "CHUNK_BYTES", 200)  # many chunks
    X, y = small_data()
    mapped = memory_map(tmp_path / "X.npy", X)
    X_train, X_test, y_train, y_test = train_test_split(mapped, y, 0.25, seed=3)
    in_ram = train_test_split(X, y, 0.25, seed=3)
    assert isinstance(X_train, row_views.RowView) and isinstance(X_test, row_views.RowView)
    np.testing.assert_array_equal(np.asarray(X_train), in_ram[0])
    np.testing.assert_array_equal(np.asarray(X_test), in_ram[1])
    np.testing.assert_array_equal(y_train, in_ram[2])
    for per_feature in (True, False):
        chunked, whole = (
            Standardizer(per_feature=per_feature).fit(X_train),
            Standardizer(per_feature=per_feature).fit(in_ram[0]),
        )
        np.testing.assert_allclose(chunked.mean, whole.mean, rtol=1e-12)
        np.testing.assert_allclose(chunked.scale, whole.scale, rtol=1e-12)
        np.testing.assert_array_equal(np.asarray(whole.transform(X_train)), whole.transform(in_ram[0]))
    net = gpubp.MLP([6, 9, 3], loss="cross_entropy", seed=2, device="cpu")
    np.testing.assert_array_equal(net.predict(X_test, batch_size=7), net.predict(in_ram[1]))  # read in batches


@pytest.mark.gpu
def test_on_a_gpu_host_batches_equal_device_data_bit_for_bit(tmp_path):
    require_gpu()
    X, y = small_data()
    on_device = trained(X, y, device="cuda").params
    streamed = trained(memory_map(tmp_path / "X.npy", X), y, device="cuda").params
    assert (streamed == on_device).all()


@pytest.mark.gpu
def test_on_a_gpu_data_larger_than_the_memory_pool_trains_from_the_host(capsys):
    require_gpu()
    import cupy

    pool = cupy.get_default_memory_pool()
    limit = pool.get_limit()
    rng = np.random.default_rng(0)
    X, y = rng.random((200_000, 256), dtype=np.float32), rng.integers(0, 3, 200_000)  # 205 MB
    pool.free_all_blocks()
    pool.set_limit(size=pool.used_bytes() + 64 * 2**20)  # room for the net and a batch, not for X
    try:
        net = gpubp.MLP([256, 32, 3], loss="cross_entropy", device="cuda", seed=0)
        history = gpubp.fit(net, X, y, epochs=1, batch_size=1024, progress="lines")
    finally:
        pool.set_limit(size=limit)
    assert "stays on the host, since it does not fit in cuda:0's memory" in capsys.readouterr().err
    assert np.isfinite(history.records()[0]["loss"])
    # the same batches from the device give the same weights
    again = gpubp.MLP([256, 32, 3], loss="cross_entropy", device="cuda", seed=0)
    gpubp.fit(again, X, y, epochs=1, batch_size=1024, progress=False)
    assert (again.params == net.params).all()


def test_plain_arrays_are_placed_on_the_device_and_the_rest_stays_on_the_host(tmp_path):
    X, y = small_data()
    net = gpubp.MLP([6, 9, 3], loss="cross_entropy", device="cpu")
    assert isinstance(data.place(net, X, y, None, "X"), data.DeviceData)
    assert isinstance(data.place(net, X, y, False, "X"), data.HostData)
    assert isinstance(data.place(net, memory_map(tmp_path / "X.npy", X), y, None, "X"), data.HostData)
    assert isinstance(data.place(net, memory_map(tmp_path / "X.npy", X), y, True, "X"), data.DeviceData)


def test_host_data_is_checked_as_the_net_will_hold_it(tmp_path):
    from .test_network import small_net

    # A float64 1e39 is finite, but inf in a float32 net: refused before training, not met as a NaN loss.
    X = np.zeros((50, 3))
    X[37, 1] = 1e39
    np.save(tmp_path / "X.npy", X)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    message = r"X holds NaN or infinite values, or numbers too large for the net's float32; remove or impute"
    with pytest.raises(gpubp.ArgumentError, match=message):
        gpubp.fit(small_net(), mapped, np.zeros(50, dtype=int), epochs=1, progress=False)
    gpubp.fit(small_net(dtype="float64"), mapped, np.zeros(50, dtype=int), epochs=1, progress=False)  # it fits there


def test_running_out_of_memory_copying_the_data_says_so():
    # The data fits as float64 but not once more as the net's float32 copy.
    stdout = run_with_memory_capped(
        """
        import numpy as np, gpubp
        X, y = np.ones((100_000, 512)), np.zeros(100_000, dtype=np.int64)  # 400 MB of float64
        net = gpubp.MLP([512, 8, 2], loss="cross_entropy", device="cpu")
        cap_memory(100 * 2**20)
        try:
            gpubp.fit(net, X, y, epochs=1, progress=False)
        except gpubp.OutOfMemory as e:
            print(e)
        """
    )
    assert "cpu ran out of memory copying the training data (X and Y) of shape (100000, 512) as float32" in stdout
    assert "Pass data_on_device=False to keep the data on the host" in stdout


@pytest.mark.gpu
def test_gpu_out_of_memory_copying_the_data_says_so():
    require_gpu()
    model = gpubp.MLP([784, 16, 10], loss="cross_entropy", device="gpu")
    pool = model.xp.get_default_memory_pool()
    X, y = np.ones((65536, 784), dtype=np.float32), np.zeros(65536, dtype=int)  # 200 MB
    pool.set_limit(size=pool.used_bytes() + 64 * 2**20)
    try:  # data_on_device=True: the default, None, would keep the data on the host and train from there
        with pytest.raises(gpubp.OutOfMemory, match=r"cuda:0 ran out of memory copying the training data"):
            gpubp.fit(model, X, y, epochs=1, progress=False, data_on_device=True)
    finally:
        pool.set_limit(size=0)
