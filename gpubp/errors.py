"""gpubp's own exceptions: each names the argument, what was expected and what was given."""

import math
import numbers


class GpubpError(Exception):
    """Base class of every error gpubp raises on purpose."""


class ArgumentError(GpubpError, ValueError):
    """An argument has the right type but a value gpubp cannot use."""


class ArgumentTypeError(GpubpError, TypeError):
    """An argument has a type (or dtype) gpubp cannot use."""


class ShapeError(ArgumentError):
    """An array's shape does not fit the network."""


class DeviceError(GpubpError, RuntimeError):
    """A device was asked for that is not usable here."""


def check_number(name: str, value, low: float, high: float = math.inf, low_ok: bool = True) -> float:
    """`value` as a float, checked to be a finite number in [low, high) (or (low, high) when low_ok is False)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise ArgumentTypeError(f"{name} must be a number; got {value!r}")
    value = float(value)
    above_low = value >= low if low_ok else value > low
    if not (above_low and value < high):  # also false for NaN
        bound = f"{'≥' if low_ok else '>'} {low:g}" + (f" and < {high:g}" if high < math.inf else "")
        raise ArgumentError(f"{name} must be a finite number {bound}; got {value!r}")
    return value


def check_whole(name: str, value, low: int = 0) -> int:
    """`value` as an int, checked to be a whole number ≥ low (a NumPy integer is one; a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be a whole number ≥ {low}; got {value!r}")
    if value < low:
        raise ArgumentError(f"{name} must be a whole number ≥ {low}; got {value!r}")
    return int(value)


def not_finite(name: str, why: str = "") -> ArgumentError:
    """The error for data `name` that holds NaN or ±inf (`why`: what else can make it so)."""
    return ArgumentError(f"{name} holds NaN or infinite values{why}; remove or impute them first")


def choice_error(argument: str, given: object, choices) -> ArgumentError:
    """The error for a name that is not one of `choices`."""
    listed = ", ".join(repr(c) for c in choices)
    return ArgumentError(f"{argument} must be one of {listed}; got {given!r}")


class TrainingDiverged(GpubpError, FloatingPointError):
    """The loss became NaN or infinite; the net holds its last good weights."""


class OutOfMemory(GpubpError, MemoryError):
    """The device ran out of memory for this batch size."""


class CheckpointError(GpubpError, ValueError):
    """A checkpoint file is missing, damaged, or not one gpubp wrote."""


class DatasetError(GpubpError, ValueError):
    """A data file is missing, malformed, or failed its checksum."""


class MissingDependency(GpubpError, ImportError):
    """An optional package that a feature needs is not installed."""
