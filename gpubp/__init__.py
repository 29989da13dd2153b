"""gpubp: multilayer perceptrons trained by explicit backpropagation, on NumPy or CuPy."""

from . import datasets
from ._version import __version__
from .backend import (
    Device,
    device,
    device_of,
    get_array_module,
    gpu_available,
    gpu_unavailable_reason,
    to_numpy,
)
from .callbacks import Callback, CosineLR, EarlyStopping, History, ModelCheckpoint, StepLR
from .checkpoint import Checkpoint, load, load_checkpoint, save
from .errors import (
    ArgumentError,
    ArgumentTypeError,
    CheckpointError,
    DatasetError,
    DeviceError,
    GpubpError,
    OutOfMemory,
    ShapeError,
    TrainingDiverged,
)
from .gradcheck import gradcheck
from .monitor import LayerMonitor, learning_speeds
from .network import MLP, Grads, Trace
from .optim import SGD, Adam, AdamW, Optimizer
from .train import evaluate, fit

__all__ = [
    "MLP",
    "SGD",
    "Adam",
    "AdamW",
    "Optimizer",
    "ArgumentError",
    "ArgumentTypeError",
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "CosineLR",
    "DatasetError",
    "Device",
    "DeviceError",
    "EarlyStopping",
    "GpubpError",
    "Grads",
    "History",
    "LayerMonitor",
    "ModelCheckpoint",
    "OutOfMemory",
    "ShapeError",
    "StepLR",
    "Trace",
    "TrainingDiverged",
    "__version__",
    "datasets",
    "device",
    "device_of",
    "evaluate",
    "fit",
    "get_array_module",
    "gpu_available",
    "gpu_unavailable_reason",
    "gradcheck",
    "learning_speeds",
    "load",
    "load_checkpoint",
    "save",
    "to_numpy",
]
