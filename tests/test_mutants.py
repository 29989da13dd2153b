"""ci/mutants keeps its list of breaks in step with the code: each must still apply, exactly once."""

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "ci" / "mutants"


def mutants_module():
    loader = importlib.machinery.SourceFileLoader("gpubp_mutants", str(SCRIPT))
    spec = importlib.util.spec_from_loader("gpubp_mutants", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


MUTANTS = mutants_module().MUTANTS


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_every_break_still_applies_and_names_real_tests(mutant):
    module = mutants_module()
    assert module.stale(mutant) is None
    root = SCRIPT.parent.parent
    for test in mutant.tests:
        path, _, name = test.partition("::")
        assert (root / path).is_file(), test
        assert f"def {name.split('[')[0]}(" in (root / path).read_text(), test


def test_names_are_unique():
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names)) >= 15
