"""The argument checks every public function shares: what they accept, and what they say otherwise."""

import re

import numpy as np
import pytest

import gpubp
from gpubp.errors import check_whole


def test_check_whole_takes_whole_numbers_and_names_what_it_refuses():
    assert check_whole("epochs", 3, 1) == 3 and check_whole("seed", np.int64(0)) == 0
    assert type(check_whole("n", np.uint8(7), 1)) is int  # NumPy's integers come back as Python's
    for value in (True, 2.0, "3", None, np.float64(1)):
        with pytest.raises(
            gpubp.ArgumentTypeError, match="^" + re.escape(f"epochs must be a whole number ≥ 1; got {value!r}") + "$"
        ):
            check_whole("epochs", value, 1)
    with pytest.raises(gpubp.ArgumentError, match=r"^classes must be a whole number ≥ 2; got 1$"):
        check_whole("classes", 1, 2)


@pytest.mark.parametrize(
    "call",
    [
        lambda: gpubp.EarlyStopping(patience=0),
        lambda: gpubp.StepLR(step_size=1.5),
        lambda: gpubp.LayerMonitor(every=False),
        lambda: gpubp.MLP([2, 2], seed=-1, device="cpu"),
        lambda: gpubp.datasets.spirals(n=0),
    ],
    ids=["patience", "step_size", "every", "seed", "n"],
)
def test_each_count_argument_is_checked_the_same_way(call):
    with pytest.raises((gpubp.ArgumentError, gpubp.ArgumentTypeError), match=r"must be a whole number ≥ \d; got "):
        call()
