"""Data sets that work offline, readers for a user's own files, and small helpers.

Every loader returns host (NumPy) arrays: fit moves them to the device once.
"""

from .csvfile import CsvTable, read_csv
from .files import load_file
from .idx import mnist
from .named import NAMES, Split, load_split
from .prep import Standardizer, train_test_split
from .synthetic import digits, spirals, xor

__all__ = [
    "NAMES",
    "CsvTable",
    "Split",
    "Standardizer",
    "digits",
    "load_file",
    "load_split",
    "mnist",
    "read_csv",
    "spirals",
    "train_test_split",
    "xor",
]
