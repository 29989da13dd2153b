"""ARCHITECTURE.md draws the house as it is: every module on its floor, every import going down, and
no module using another's private names."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gpubp"
UNLISTED = {"__init__", "__main__", "_version"}  # the package's front door and its version string


def floors() -> dict[str, int]:
    """Each module's floor, as ARCHITECTURE.md's table gives it."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    table = text.split("```")[1]
    found = {}
    for line in table.splitlines():
        match = re.match(r"\s*(\d+)\s+((?:[a-z_]+(?:\.py|/)(?:, )?)+)", line)
        if match:
            for name in match.group(2).split(", "):
                found[name.removesuffix(".py").removesuffix("/")] = int(match.group(1))
    return found


def module_of(path: Path) -> str:
    return "datasets" if path.parent.name == "datasets" else path.stem


def imports(path: Path):
    """(module imported, names taken) for every import of gpubp's own modules in `path`, lazy ones too."""
    tree = ast.parse(path.read_text())
    in_datasets = path.parent.name == "datasets"
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        if in_datasets and node.level == 1:
            continue  # one file of datasets/ importing another: the same room
        names = [alias.name for alias in node.names]
        if node.module is None:  # from . import x, y: each is a module
            yield from ((name, []) for name in names)
        else:
            yield node.module.split(".")[0], names


def test_every_module_is_on_a_floor_of_the_drawing():
    modules = {module_of(p) for p in PACKAGE.rglob("*.py")} - UNLISTED
    drawn = floors()
    assert modules - set(drawn) == set(), "modules missing from ARCHITECTURE.md"
    assert set(drawn) - modules == set(), "ARCHITECTURE.md names modules that do not exist"


def test_every_import_goes_down_and_takes_no_private_name():
    drawn = floors()
    upward, private = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_of(path)
        if module in UNLISTED:
            continue
        for imported, names in imports(path):
            if imported in UNLISTED or imported == module:
                continue
            if drawn[imported] >= drawn[module]:
                upward.append(f"{module} (floor {drawn[module]}) imports {imported} (floor {drawn[imported]})")
            private += [f"{module} imports {imported}.{n}" for n in names if n.startswith("_")]
    assert upward == [] and private == []


def test_the_check_sees_an_import_that_goes_up(tmp_path):
    source = tmp_path / "backend.py"
    source.write_text("def f():\n    from .train import fit\n    from . import cli\n    from .data import _hidden\n")
    assert list(imports(source)) == [("train", ["fit"]), ("cli", []), ("data", ["_hidden"])]
    drawn = floors()
    assert drawn["train"] > drawn["backend"] and drawn["cli"] > drawn["backend"]
