"""MNIST from the standard IDX files, gzipped or raw, read from a folder or downloaded once."""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy

from ..errors import DatasetError

DEFAULT_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
ENV_URL = "GPUBP_MNIST_URL"

# SHA-256 of the four published archives.
CHECKSUMS = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gpubp" / "mnist"


def read_idx(path) -> numpy.ndarray:
    """An unsigned-byte IDX array from `path`, gzipped or raw: the magic number, the sizes, the bytes."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DatasetError(f"{path} is not a valid gzip file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file (its magic number is {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path} is truncated inside its header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(numpy.prod(shape, dtype=numpy.int64))
    if len(raw) - header != size:
        raise DatasetError(f"{path} should hold {size} bytes of data for shape {shape}; it holds {len(raw) - header}")
    return numpy.frombuffer(raw, dtype=numpy.uint8, offset=header).reshape(shape)


def _find(folder: Path, gz_name: str) -> Path | None:
    for name in (gz_name, gz_name[: -len(".gz")]):
        if (folder / name).is_file():
            return folder / name
    return None


def _download(url: str, target: Path, sha256: str) -> None:
    """Fetch `url` into `target` only if its SHA-256 matches; on any failure nothing is left behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise DatasetError(
                f"{url} failed its checksum (SHA-256 {digest.hexdigest()}, expected {sha256}); "
                "the file was refused and nothing was kept. Check the mirror set by "
                f"{ENV_URL}, or try again."
            )
        os.replace(partial, target)  # atomic: the cache holds a whole, checked file or none
    except (urllib.error.URLError, OSError) as e:
        raise DatasetError(f"could not download {url} ({e}); set {ENV_URL} to another mirror") from None
    finally:
        partial.unlink(missing_ok=True)


def mnist(path=None, download: bool = False, cache_dir=None, url: str | None = None, checksums=None, dtype="float32"):
    """MNIST as (X_train, y_train, X_test, y_test): X rows of 784 pixel values 0–255, labels 0–9.

    Reads the four IDX files (gzipped or raw) from `path`, else from `cache_dir`
    (default ~/.cache/gpubp/mnist). With download=True, missing files are fetched
    from `url` (default: $GPUBP_MNIST_URL, else a public mirror), each checked
    against its known SHA-256 (`checksums` overrides them) before it enters the cache.
    """
    folder = Path(path) if path is not None else Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if path is not None and not folder.is_dir():
        raise DatasetError(f"MNIST folder {str(folder)!r} does not exist")
    checksums = dict(CHECKSUMS if checksums is None else checksums)
    base = url or os.environ.get(ENV_URL) or DEFAULT_URL
    arrays = []
    for name in CHECKSUMS:
        found = _find(folder, name)
        if found is None:
            if not download:
                raise DatasetError(
                    f"{name} (or its unzipped form) is not in {folder}; "
                    "pass download=True (gpubp train --data mnist --download) or point path at the files"
                )
            found = folder / name
            _download(base.rstrip("/") + "/" + name, found, checksums[name])
        arrays.append(read_idx(found))
    train_images, train_labels, test_images, test_labels = arrays
    for images, labels in ((train_images, train_labels), (test_images, test_labels)):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(f"MNIST files in {folder} disagree: images {images.shape}, labels {labels.shape}")
    return (
        train_images.reshape(len(train_images), -1).astype(dtype),
        train_labels.astype(numpy.int64),
        test_images.reshape(len(test_images), -1).astype(dtype),
        test_labels.astype(numpy.int64),
    )
