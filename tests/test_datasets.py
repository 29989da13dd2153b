"""Data sets: the shipped and generated ones, a user's files, and MNIST's reader and download."""

import gzip
import hashlib
import http.server
import re
import struct
import threading
from contextlib import contextmanager

import numpy as np
import pytest

import gpubp
from gpubp import datasets
from gpubp.datasets import idx as mnist_module


def test_xor_and_spirals():
    X, y = datasets.xor()
    assert X.shape == (4, 2) and y.tolist() == [0, 1, 1, 0]
    X, y = datasets.spirals(n=50, classes=4, noise=0.1, seed=3)
    assert X.shape == (200, 2) and np.bincount(y).tolist() == [50] * 4
    np.testing.assert_array_equal(X, datasets.spirals(n=50, classes=4, noise=0.1, seed=3)[0])
    assert not np.array_equal(X, datasets.spirals(n=50, classes=4, noise=0.1, seed=4)[0])
    assert np.abs(X).max() <= 1.0 + 1e-6
    with pytest.raises(gpubp.ArgumentError, match="classes must be a whole number ≥ 2; got 1"):
        datasets.spirals(classes=1)


def test_digits_ships_inside_the_package():
    X, y = datasets.digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32 and y.dtype == np.int64
    assert X.min() == 0 and X.max() == 16
    counts = np.bincount(y)
    assert len(counts) == 10 and counts.min() >= 170 and counts.sum() == 1797
    # A "0" is a ring: its centre pixels are darker than its left and right strokes.
    zero = X[y == 0].mean(axis=0).reshape(8, 8)
    assert zero[3:5, 3:5].mean() < 0.5 * zero[3:5, [1, 6]].mean()


@pytest.mark.parametrize("rows, test_size, test_rows", [(10, 0.29, 3), (10, 0.21, 2), (7, 0.5, 4), (200, 0.333, 67)])
def test_the_test_split_has_the_nearest_whole_number_of_rows(rows, test_size, test_rows):
    X, y = np.zeros((rows, 2)), np.arange(rows)
    X_train, X_test, y_train, y_test = datasets.train_test_split(X, y, test_size=test_size, seed=0)
    assert len(X_test) == len(y_test) == test_rows  # rows × test_size, rounded to the nearest whole number
    assert len(X_train) == len(y_train) == rows - test_rows


def test_the_outputs_count_every_class_of_both_splits():
    X = np.zeros((4, 2))
    split = datasets.named.Split("s", X, np.array([0, 1, 1, 0]), X, np.array([2, 0, 1, 0]))
    assert split.classification and split.n_outputs == 3  # class 2 is in the test rows alone
    split = datasets.named.Split("s", X, np.array([0, 4, 1, 0]), X, np.array([2, 0, 1, 0]))
    assert split.n_outputs == 5
    values = datasets.named.Split("s", X, np.zeros((4, 3)), X, np.zeros((4, 3)))
    assert not values.classification and values.n_outputs == 3


def test_train_test_split_and_standardizer():
    X = np.arange(40, dtype=float).reshape(20, 2)
    y = np.arange(20)
    X_train, X_test, y_train, y_test = datasets.train_test_split(X, y, test_size=0.25, seed=1)
    assert len(X_test) == 5 and len(X_train) == 15
    assert sorted(np.concatenate([y_train, y_test]).tolist()) == list(range(20))
    np.testing.assert_array_equal(X_train[:, 0], 2 * y_train)  # rows stay paired with their labels
    with pytest.raises(gpubp.ShapeError, match="same number of rows; got 20 and 3"):
        datasets.train_test_split(X, y[:3])
    with pytest.raises(gpubp.ArgumentError, match="test_size must be a fraction"):
        datasets.train_test_split(X, y, test_size=1.5)

    scaler = datasets.Standardizer().fit(np.array([[1.0, 5.0], [3.0, 5.0]]))
    np.testing.assert_allclose(scaler.transform(np.array([[2.0, 5.0], [3.0, 6.0]])), [[0, 0], [1, 1]])
    image_scaler = datasets.Standardizer(per_feature=False).fit(np.array([[0.0, 2.0], [2.0, 4.0]]))
    np.testing.assert_allclose(image_scaler.mean, [2.0, 2.0])
    np.testing.assert_allclose(image_scaler.scale, [np.sqrt(2.0)] * 2)
    again = datasets.Standardizer.from_dict(image_scaler.to_dict())
    np.testing.assert_array_equal(again.transform(np.ones((1, 2))), image_scaler.transform(np.ones((1, 2))))


def test_load_file_npz_and_csv(tmp_path):
    X = np.random.default_rng(0).normal(size=(6, 3))
    y = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "d.npz", X=X, y=y)
    X2, y2 = datasets.load_file(tmp_path / "d.npz")
    np.testing.assert_allclose(X2, X, rtol=1e-6)
    assert y2.dtype == np.int64 and y2.tolist() == y.tolist()

    rows = "\n".join(",".join(f"{v:.6f}" for v in row) + f",{label}" for row, label in zip(X, y))
    (tmp_path / "plain.csv").write_text(rows + "\n")
    (tmp_path / "header.csv").write_text("a,b,c,label\n" + rows + "\n")
    for name in ("plain.csv", "header.csv"):
        X3, y3 = datasets.load_file(tmp_path / name)
        assert X3.shape == (6, 3) and y3.tolist() == y.tolist()
        np.testing.assert_allclose(X3, X, atol=1e-6)

    (tmp_path / "reg.csv").write_text("1,2,0.5\n3,4,1.25\n")
    X4, y4 = datasets.load_file(tmp_path / "reg.csv")
    assert y4.dtype.kind == "f" and y4.tolist() == [0.5, 1.25]  # float targets stay targets


def test_load_file_errors(tmp_path):
    with pytest.raises(gpubp.DatasetError, match="does not exist"):
        datasets.load_file(tmp_path / "missing.csv")
    (tmp_path / "d.txt").write_text("1,2\n")
    with pytest.raises(gpubp.DatasetError, match="must end in .npz, .csv or .npy"):
        datasets.load_file(tmp_path / "d.txt")
    np.savez(tmp_path / "wrong.npz", data=np.zeros(3))
    with pytest.raises(gpubp.DatasetError, match=r"must hold arrays named X and y; it holds \['data'\]"):
        datasets.load_file(tmp_path / "wrong.npz")
    np.savez(tmp_path / "objects.npz", X=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    with pytest.raises(gpubp.DatasetError, match="not a readable .npz"):
        datasets.load_file(tmp_path / "objects.npz")  # object arrays would need unpickling: refused
    (tmp_path / "words.csv").write_text("a,b\n1,x\n")
    with pytest.raises(gpubp.DatasetError, match="words.csv line 2, column 2 is not a number: 'x'"):
        datasets.load_file(tmp_path / "words.csv")


# --- MNIST ---------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding, written from its specification: 0, 0, type 0x08, ndim, big-endian sizes, data."""
    return bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape) + array.tobytes()


def small_mnist(rng, n_train=30, n_test=10):
    """Four tiny IDX archives in the real files' names: images (N, 28, 28) and labels (N,)."""
    arrays = [
        rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, size=n_train, dtype=np.uint8),
        rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, size=n_test, dtype=np.uint8),
    ]
    return {name: gzip.compress(idx_bytes(a)) for name, a in zip(mnist_module.CHECKSUMS, arrays)}, arrays


def test_mnist_reads_gzipped_and_raw_idx_files(tmp_path):
    files, arrays = small_mnist(np.random.default_rng(0))
    for i, (name, data) in enumerate(files.items()):
        if i % 2:  # half of them unzipped, as some downloads arrive
            (tmp_path / name[:-3]).write_bytes(gzip.decompress(data))
        else:
            (tmp_path / name).write_bytes(data)
    X_train, y_train, X_test, y_test = datasets.mnist(path=tmp_path)
    assert X_train.shape == (30, 784) and X_test.shape == (10, 784) and X_train.dtype == np.float32
    np.testing.assert_array_equal(X_train.reshape(30, 28, 28), arrays[0])
    np.testing.assert_array_equal(y_test, arrays[3])


def test_mnist_without_files_says_how_to_get_them(tmp_path):
    with pytest.raises(gpubp.DatasetError, match="pass download=True"):
        datasets.mnist(path=tmp_path)
    with pytest.raises(gpubp.DatasetError, match="does not exist"):
        datasets.mnist(path=tmp_path / "nowhere")


def test_idx_reader_refuses_damaged_files(tmp_path):
    good = idx_bytes(np.zeros((2, 3), dtype=np.uint8))
    for data, message in [
        (good[:-1], "should hold 6 bytes of data"),
        (b"\x00\x00\x0d\x01" + good[4:], "not an unsigned-byte IDX file"),
        (good[:6], "truncated inside its header"),
        (b"\x1f\x8b" + b"garbage", "not a valid gzip file"),
    ]:
        (tmp_path / "f.idx").write_bytes(data)
        with pytest.raises(gpubp.DatasetError, match=message):
            mnist_module.read_idx(tmp_path / "f.idx")


@contextmanager
def serve(files: dict):
    """A loopback HTTP server answering GET /NAME with files[NAME], and 404 otherwise."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path.lstrip("/"))
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_mnist_download_checks_every_file_and_caches_it(tmp_path, monkeypatch):
    files, arrays = small_mnist(np.random.default_rng(1))
    checksums = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    cache = tmp_path / "cache"
    with serve(files) as url:
        monkeypatch.setenv(mnist_module.ENV_URL, url)  # the mirror comes from the environment
        X_train, y_train, _, _ = datasets.mnist(cache_dir=cache, download=True, checksums=checksums)
    np.testing.assert_array_equal(y_train, arrays[1])
    assert sorted(p.name for p in cache.iterdir()) == sorted(files)
    # Cached now: a second call needs no server.
    np.testing.assert_array_equal(datasets.mnist(cache_dir=cache)[0], X_train)


def test_a_corrupted_download_is_refused_and_leaves_nothing(tmp_path):
    files, _ = small_mnist(np.random.default_rng(2))
    checksums = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    corrupted = dict(files)
    name = "train-labels-idx1-ubyte.gz"
    corrupted[name] = files[name][:-4] + b"\x00\x00\x00\x00"
    cache = tmp_path / "cache"
    with serve(corrupted) as url, pytest.raises(gpubp.DatasetError, match=f"{name} failed its checksum"):
        datasets.mnist(cache_dir=cache, download=True, url=url, checksums=checksums)
    assert name not in {p.name for p in cache.iterdir()}
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no partial file either


def test_an_unreachable_mirror_is_a_clear_error(tmp_path):
    with serve({}) as url, pytest.raises(gpubp.DatasetError, match="could not download .*GPUBP_MNIST_URL"):
        datasets.mnist(cache_dir=tmp_path, download=True, url=url)
    assert list(tmp_path.iterdir()) == []


def test_the_checksums_are_sha256_hex_digests_of_the_four_files():
    assert sorted(mnist_module.CHECKSUMS) == sorted(
        f"{part}-{kind}-idx{dims}-ubyte.gz"
        for part in ("train", "t10k")
        for kind, dims in (("images", 3), ("labels", 1))
    )
    for digest in mnist_module.CHECKSUMS.values():  # what hashlib's hexdigest() gives: 64 lower-case hex digits
        assert re.fullmatch("[0-9a-f]{64}", digest), digest
