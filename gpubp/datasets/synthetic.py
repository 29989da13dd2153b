"""Small data sets made on the spot or shipped inside the package."""

from __future__ import annotations

from importlib import resources

import numpy

from ..errors import ArgumentError, check_whole


def xor(dtype="float32"):
    """The four XOR cases: X of shape (4, 2) and labels y = [0, 1, 1, 0]."""
    X = numpy.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype)
    return X, numpy.array([0, 1, 1, 0])


def spirals(n: int = 300, classes: int = 3, noise: float = 0.2, seed: int = 0, dtype="float32"):
    """`classes` interleaved spiral arms in the plane, n points each: X (n·classes, 2), integer labels y.

    A classic set that no linear model separates, from a seeded host RNG.
    """
    n, classes = check_whole("n", n, 1), check_whole("classes", classes, 2)
    if not noise >= 0:
        raise ArgumentError(f"noise must be ≥ 0; got {noise!r}")
    rng = numpy.random.default_rng(seed)
    radius = numpy.tile(numpy.linspace(0.05, 1.0, n), classes)
    y = numpy.repeat(numpy.arange(classes), n)
    angle = y * (2 * numpy.pi / classes) + radius * 4.0 + rng.normal(0.0, noise, size=n * classes)
    X = numpy.stack([radius * numpy.sin(angle), radius * numpy.cos(angle)], axis=1)
    return X.astype(dtype), y


def digits(dtype="float32"):
    """The 8×8 handwritten digits: X of shape (1797, 64) with pixel values 0–16, labels y in 0–9.

    From the UCI Optical Recognition of Handwritten Digits data (Alpaydin and Kaynak),
    CC BY 4.0, shipped inside gpubp as a 45 kB file: no network is needed.
    """
    with resources.files(__package__).joinpath("digits.npz").open("rb") as f, numpy.load(f) as data:
        images, labels = data["images"], data["labels"]
    return images.reshape(len(images), 64).astype(dtype), labels.astype(numpy.int64)
