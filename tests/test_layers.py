"""The house's shape, read from the source: imports run cli -> training -> models and
never upward, `--help` needs no JAX, and every module stays readable at a glance."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cli", "models", "training")
# What each layer may import from the project (itself included).
ALLOWED = {"cli": {"cli", "training", "models"}, "training": {"training", "models"},
           "models": {"models"}}
MAX_LINES = 300
# The rooms inside training/, lowest first: a room imports only rooms before it (and
# itself), so no two import each other.
ROOMS = ("errors", "metrics", "host", "sources", "settings", "scoring", "engine", "rundir",
         "commands")


def modules():
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def project_imports(path: Path, depth: int = 1) -> set[tuple[str, int]]:
    """(layer, line) of every `jaxtrain.<layer>` import in the file, function-level ones
    too; with depth 2, (room, line) of every `jaxtrain.training.<room>` import."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        out.update((name.split(".")[depth], node.lineno) for name in names
                   if name.startswith("jaxtrain.") and name.count(".") >= depth
                   and (depth == 1 or name.startswith("jaxtrain.training.")))
    return out


def test_imports_never_run_upward():
    wrong = []
    for path in modules():
        layer = path.relative_to(ROOT).parts[0]
        wrong += [f"{path.relative_to(ROOT)}:{line} imports jaxtrain.{target}"
                  for target, line in project_imports(path) if target not in ALLOWED[layer]]
    assert not wrong, "\n".join(wrong)


def test_rooms_inside_training_import_only_rooms_below():
    rank = {room: i for i, room in enumerate(ROOMS)}
    assert {p.stem if p.is_file() else p.name for p in (ROOT / "training").iterdir()
            if not p.name.startswith("_") and (p.is_dir() or p.suffix == ".py")} == set(ROOMS)
    wrong = []
    for path in sorted((ROOT / "training").rglob("*.py")):
        parts = path.relative_to(ROOT / "training").parts
        room = parts[0].removesuffix(".py")
        if room.startswith("_"):
            continue
        wrong += [f"{path.relative_to(ROOT)}:{line} ({room}) imports training.{target}"
                  for target, line in project_imports(path, depth=2)
                  if rank[target] > rank[room]]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from jaxtrain.training.metrics import METRICS\n")
    assert project_imports(bad) == {("training", 2)}


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_are_short_and_say_their_job(path):
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"{len(lines)} lines: split it by job"
    if path.name != "__init__.py" or lines:
        assert ast.get_docstring(ast.parse(path.read_text())), "no docstring saying its job"


def test_the_help_imports_no_jax():
    import subprocess
    import sys

    code = ("import sys; from jaxtrain.cli.main import app; "
            "heavy = [m for m in ('jax', 'torch', 'flax', 'orbax') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
