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


def modules():
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def project_imports(path: Path) -> set[tuple[str, int]]:
    """(layer, line) of every `jaxtrain.<layer>` import in the file, function-level ones too."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        out.update((name.split(".")[1], node.lineno) for name in names
                   if name.startswith("jaxtrain.") and name.count(".") >= 1)
    return out


def test_imports_never_run_upward():
    wrong = []
    for path in modules():
        layer = path.relative_to(ROOT).parts[0]
        wrong += [f"{path.relative_to(ROOT)}:{line} imports jaxtrain.{target}"
                  for target, line in project_imports(path) if target not in ALLOWED[layer]]
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
