"""Checkpoints: the weights in the safetensors format, with everything else in its metadata.

A file holds one tensor per layer ("layers.0.weight" of shape (n_in, n_out),
"layers.0.bias"), readable by any safetensors reader, plus the optimizer's
state arrays ("optimizer.velocity" for SGD with momentum, "optimizer.m" and
"optimizer.v" for Adam). Its metadata (JSON strings) holds the format
version, the gpubp version, the network's configuration, the optimizer's
hyperparameters and step count, the caller's own fields (epoch, history, RNG
seed, ...) and a SHA-256 checksum over all of it. Writes are atomic; loading never unpickles.

dumps and loads make and read the same bytes in memory (for a pickle, or a broadcast
between ranks); save and load_checkpoint are them, written to and read from a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy

from . import atomic
from ._version import __version__
from .backend import to_numpy
from .errors import ArgumentTypeError, CheckpointError, DeviceError, GpubpError
from .network import MLP
from .optim import Optimizer

FORMAT = "gpubp-mlp"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 64 << 20  # a header larger than this is refused before it is parsed


@dataclass
class Checkpoint:
    """What `load_checkpoint` returns: the net, its optimizer (or None), and the saved fields."""

    net: MLP
    optimizer: Optimizer | None
    meta: dict

    @property
    def epoch(self) -> int:
        return int(self.meta.get("epoch", 0))


def _checksum(tensors: dict, metadata: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = numpy.ascontiguousarray(tensors[name])
        digest.update(f"{name}|{t.dtype.str}|{t.shape}|".encode())
        digest.update(t.tobytes())
    for key in sorted(k for k in metadata if k != "checksum"):
        digest.update(f"{key}={metadata[key]}|".encode())
    return digest.hexdigest()


_CONFIG_KEYS = ("sizes", "activation", "output_activation", "loss", "dtype", "init", "seed")


def _config(net: MLP) -> dict:
    return {
        "sizes": list(net.sizes),
        "activation": net.activation.name,
        "output_activation": net.output_activation.name,
        "loss": net.loss_fn.name,
        "dtype": net.dtype.name,
        "init": net.init,
        "seed": net.seed,
    }


def dumps(net: MLP, optimizer: Optimizer | None = None, **meta) -> bytes:
    """`net` (and `optimizer`'s state, and any JSON-serialisable `meta`) as the bytes of a checkpoint file."""
    import safetensors.numpy

    if not isinstance(net, MLP):
        raise ArgumentTypeError(f"net must be a gpubp.MLP; got {type(net).__name__}")
    if optimizer is not None and optimizer.net is not net:
        raise CheckpointError("optimizer belongs to another network; pass the optimizer that trains this net")
    tensors = {}
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        tensors[f"layers.{l}.weight"] = to_numpy(W)
        tensors[f"layers.{l}.bias"] = to_numpy(b)
    if optimizer is not None:
        for name, array in optimizer.state.items():  # SGD's velocity, Adam's m and v
            tensors[f"optimizer.{name}"] = to_numpy(array)
    try:
        user = json.dumps(meta)
    except TypeError as e:
        raise CheckpointError(f"meta must be JSON-serialisable ({e})") from None
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "gpubp_version": __version__,
        "config": json.dumps(_config(net)),
        "optimizer": json.dumps(optimizer.hyperparameters() if optimizer is not None else None),
        "meta": user,
    }
    metadata["checksum"] = _checksum(tensors, metadata)
    return safetensors.numpy.save(tensors, metadata=metadata)


def save(net: MLP, path, optimizer: Optimizer | None = None, **meta) -> Path:
    """Write `net` (and `optimizer`'s state, and any JSON-serialisable `meta`) to `path`, atomically."""
    return atomic.write_bytes(path, dumps(net, optimizer, **meta))


def _read(data: bytes, source: str) -> tuple[dict, dict]:
    """The tensors and metadata of a safetensors file's bytes, with every way they can be broken named."""
    import safetensors.numpy

    size = len(data)
    if size < 8:
        raise CheckpointError(f"{source} is truncated: {size} bytes is too short for a safetensors file")
    (header_bytes,) = struct.unpack("<Q", data[:8])
    if header_bytes > MAX_HEADER_BYTES:
        raise CheckpointError(f"{source} declares a {header_bytes}-byte header, over the {MAX_HEADER_BYTES} allowed")
    if 8 + header_bytes > size:
        raise CheckpointError(f"{source} is truncated: its header needs {8 + header_bytes} bytes, it has {size}")
    try:  # safetensors checks the header and every tensor's extent; the metadata is the header's own field
        tensors = safetensors.numpy.load(data)
        metadata = json.loads(data[8 : 8 + header_bytes]).get("__metadata__") or {}
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{source} is not a valid safetensors file ({type(e).__name__}: {e})") from None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{source} is not a valid safetensors file (its metadata must map names to strings)")
    return tensors, metadata


def load_checkpoint(path, device="auto") -> Checkpoint:
    """Read a checkpoint onto `device`: the net, its optimizer if one was saved, and the saved fields."""
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"path must be a file path; got {path!r}")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    return loads(path.read_bytes(), device, source=str(path))


def loads(data: bytes, device="auto", source: str = "the checkpoint") -> Checkpoint:
    """The checkpoint in `data` (what dumps or save wrote) onto `device`, checked as load_checkpoint checks
    a file; `source` names it in the errors."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ArgumentTypeError(f"data must be the bytes of a checkpoint; got {type(data).__name__}")
    tensors, metadata = _read(bytes(data), source)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{source} is a safetensors file but not a gpubp checkpoint (no format={FORMAT!r})")
    try:
        version = int(metadata.get("format_version", ""))
    except ValueError:
        raise CheckpointError(f"{source} has an unreadable format_version {metadata.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source} uses checkpoint format {version}, newer than this gpubp {__version__} reads "
            f"(up to {FORMAT_VERSION}); upgrade gpubp"
        )
    if version < 1:
        raise CheckpointError(f"{source} has an invalid format_version {version}")
    if metadata.get("checksum") != _checksum(tensors, metadata):
        raise CheckpointError(f"{source} failed its checksum: it was changed or damaged after it was written")
    try:
        config = json.loads(metadata["config"])
        hyper = json.loads(metadata["optimizer"])
        meta = json.loads(metadata["meta"])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{source} has damaged metadata ({e})") from None
    if not isinstance(config, dict) or not isinstance(meta, dict) or not isinstance(hyper, (dict, type(None))):
        raise CheckpointError(f"{source} has damaged metadata: config, optimizer and meta must be JSON objects")
    try:
        return _rebuild(tensors, config, hyper, meta, device)
    except (CheckpointError, DeviceError):
        raise
    except (GpubpError, KeyError, TypeError, ValueError) as e:
        # The checksum guards against damage, not against a file made to look valid: check what it describes.
        raise CheckpointError(f"{source} describes no network gpubp can build ({type(e).__name__}: {e})") from None


def _rebuild(tensors: dict, config: dict, hyper: dict | None, meta: dict, device) -> Checkpoint:
    """The net and optimizer that the metadata describes, with the saved tensors put in place."""
    unknown = set(config) - set(_CONFIG_KEYS)
    if unknown:
        raise CheckpointError(f"unknown configuration keys {sorted(unknown)}")
    net = MLP(**config, device=device)
    with net.device.activate():
        for l, (W, b) in enumerate(zip(net.weights, net.biases)):
            for target, name in ((W, f"layers.{l}.weight"), (b, f"layers.{l}.bias")):
                _put(target, tensors.get(name), name, net)
        optimizer = None
        if hyper is not None:
            optimizer = Optimizer.from_hyperparameters(net, hyper)  # the lr a schedule reached, the step count
            for name, array in optimizer.state.items():
                _put(array, tensors.get(f"optimizer.{name}"), f"optimizer.{name}", net)
    return Checkpoint(net=net, optimizer=optimizer, meta=meta)


def _put(target, saved, name: str, net: MLP) -> None:
    if saved is None or saved.shape != target.shape or saved.dtype != net.dtype:
        got = "nothing" if saved is None else f"{saved.dtype} {saved.shape}"
        raise CheckpointError(f"tensor {name} must be {net.dtype} {tuple(target.shape)} for {net}; got {got}")
    target[...] = net.device.asarray(saved)


def load(path, device="auto") -> MLP:
    """The network saved in `path`, on `device` (a GPU-trained net loads on a CPU and back)."""
    return load_checkpoint(path, device).net
