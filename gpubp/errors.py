"""gpubp's own exceptions: each names the argument, what was expected and what was given."""


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


def choice_error(argument: str, given: object, choices) -> ArgumentError:
    """The error for a name that is not one of `choices`."""
    listed = ", ".join(repr(c) for c in choices)
    return ArgumentError(f"{argument} must be one of {listed}; got {given!r}")


class TrainingDiverged(GpubpError, FloatingPointError):
    """The loss became NaN or infinite; the net holds its last good weights."""


class CheckpointError(GpubpError, ValueError):
    """A checkpoint file is missing, damaged, or not one gpubp wrote."""


class DatasetError(GpubpError, ValueError):
    """A data file is missing, malformed, or failed its checksum."""


class MissingDependency(GpubpError, ImportError):
    """An optional package that a feature needs is not installed."""
