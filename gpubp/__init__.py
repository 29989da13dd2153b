"""gpubp: multilayer perceptrons trained by explicit backpropagation, on NumPy or CuPy."""

__version__ = "0.1.0"

from .backend import (
    Device,
    device,
    device_of,
    get_array_module,
    gpu_available,
    gpu_unavailable_reason,
    to_numpy,
)
from .errors import ArgumentError, ArgumentTypeError, DeviceError, GpubpError, ShapeError
from .gradcheck import gradcheck
from .network import MLP, Grads, Trace
from .optim import SGD

__all__ = [
    "MLP",
    "SGD",
    "ArgumentError",
    "ArgumentTypeError",
    "Device",
    "DeviceError",
    "GpubpError",
    "Grads",
    "ShapeError",
    "Trace",
    "__version__",
    "device",
    "device_of",
    "get_array_module",
    "gpu_available",
    "gpu_unavailable_reason",
    "gradcheck",
    "to_numpy",
]
