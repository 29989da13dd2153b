"""The current code against every recorded run under tests/golden/, on every usable device."""

import json

import numpy as np
import pytest

from .goldens import CASES, TOLERANCE, golden_path, recordings, relative_error, run_case


def test_every_case_has_a_cpu_recording():
    missing = [name for name in CASES if not golden_path(name, "cpu").exists()]
    assert not missing, f"no CPU golden for {missing}: run ci/record-goldens --device cpu"


@pytest.mark.parametrize("path", recordings(), ids=lambda p: p.stem)
def test_matches_recording(path, device):
    meta = json.loads(path.with_suffix(".json").read_text())
    case = CASES[meta["case"]]
    golden = np.load(path)
    result = run_case(case, device)
    tolerance = TOLERANCE[case.dtype]
    where = f"{case.name} on {device} against the run recorded on {meta['device']} ({meta['device_name']})"
    assert relative_error(result["losses"], golden["losses"]) <= tolerance, where
    assert relative_error(result["params"], golden["params"]) <= tolerance, where


def test_training_moved_the_weights():
    # A golden is only worth comparing if the run it records really learned something.
    for case in CASES.values():
        before, after = run_case(case, "cpu")["loss_on_all_data"]
        assert after < 0.95 * before, case.name
