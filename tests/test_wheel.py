"""jaxtrain as a package: `python -m build` makes an sdist and, from it, a wheel that maps
cli/, models/, training/ to jaxtrain.* with the presets; the wheel installed into a fresh
virtual environment runs `jaxtrain --help`, `--version` and `presets`. One build for all."""

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cli", "models", "training")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# What a checkout holds besides the sources, none of which a build reads.
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "__pycache__", "build", "dist",
                                     "*.egg-info", "site", "data", ".gpu-carry",
                                     ".pytest_cache", "checkpoints")


def sources() -> list[str]:
    """Every file the wheel must carry, as the package paths the checkout's layout maps to."""
    files = [p for top in PACKAGES for p in (ROOT / top).rglob("*")
             if p.suffix in (".py", ".toml") and "__pycache__" not in p.parts]
    return sorted(f"jaxtrain/{p.relative_to(ROOT).as_posix()}" for p in files)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """dist/ with the sdist and the wheel built from it, as `make dist` makes them.

    The build runs on a copy, so its jaxtrain.egg-info/ never lands in the checkout
    (from where importlib.metadata could read a stale version)."""
    tmp = tmp_path_factory.mktemp("build")
    shutil.copytree(ROOT, tmp / "src", ignore=NOT_SOURCES)
    # --no-isolation: this environment's setuptools, not one downloaded per build.
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", tmp / "dist", tmp / "src",
        hint="build and setuptools come with `make install` (the [test] extra)")
    return tmp / "dist"


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed and, visible without a
    download, this environment's dependencies (but not its editable jaxtrain)."""
    env = tmp_path_factory.mktemp("venv") / "env"
    run(sys.executable, "-m", "venv", "--without-pip", env)
    python = env / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
        "--no-index", wheel_of(dist))
    # Written after the install, so pip never sees the editable jaxtrain there. A path in
    # a .pth is only put on sys.path; that folder's own .pth files (the editable finder
    # that maps jaxtrain to the checkout) do not run.
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site.stdout.strip()) / "_jaxtrain_test_deps.pth").write_text("\n".join(ours) + "\n")
    return env


def wheel_of(dist: Path) -> Path:
    (wheel,) = dist.glob("*.whl")
    return wheel


def run(*args, hint: str = "", **kwargs) -> subprocess.CompletedProcess:
    """A command that must succeed; its output is the failure's message if it does not."""
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{hint}\n{done.stdout}\n{done.stderr}".strip()
    return done


def in_venv(venv: Path, *args) -> subprocess.CompletedProcess:
    """A command of the fresh environment, away from the checkout and its PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return run(*args, cwd=venv, env=env)


def test_the_build_makes_an_sdist_and_a_wheel(dist):
    assert sorted(p.name for p in dist.iterdir()) == [
        f"jaxtrain-{VERSION}-py3-none-any.whl", f"jaxtrain-{VERSION}.tar.gz"]


def test_the_wheel_holds_every_module_and_preset_and_nothing_else(dist):
    names = zipfile.ZipFile(wheel_of(dist)).namelist()
    info = f"jaxtrain-{VERSION}.dist-info/"
    # A subpackage missing from pyproject's `packages` breaks only the installed wheel
    # (the editable install maps whole folders): every .py file must be here.
    packaged = {n for n in names if not n.startswith(info)}
    missing, extra = sorted(set(sources()) - packaged), sorted(packaged - set(sources()))
    assert missing == [], "add their packages to [tool.setuptools] in pyproject.toml"
    assert extra == []
    presets = [n for n in names if n.startswith("jaxtrain/training/settings/presets/")]
    assert len(presets) >= 4 and all(n.endswith(".toml") for n in presets)
    assert not [n for n in names if n.startswith(("cli/", "models/", "training/", "tests/"))]
    assert {"METADATA", "WHEEL", "RECORD", "entry_points.txt"} <= {
        n.removeprefix(info) for n in names if n.startswith(info)}


def test_the_wheel_declares_the_jaxtrain_command(dist):
    wheel = zipfile.ZipFile(wheel_of(dist))
    entry_points = wheel.read(f"jaxtrain-{VERSION}.dist-info/entry_points.txt").decode()
    assert "[console_scripts]\njaxtrain = jaxtrain.cli.main:run" in entry_points
    metadata = wheel.read(f"jaxtrain-{VERSION}.dist-info/METADATA").decode()
    assert f"Version: {VERSION}" in metadata and "Requires-Dist: jax" in metadata


def test_the_sdist_holds_what_a_build_reads(dist):
    # The wheel above was built from this sdist, so it rebuilds; no tests or benchmarks.
    top = f"jaxtrain-{VERSION}/"
    with tarfile.open(dist / f"jaxtrain-{VERSION}.tar.gz") as sdist:
        names = {m.name.removeprefix(top) for m in sdist.getmembers() if m.isfile()}
    assert {"pyproject.toml", "README.md", "PKG-INFO"} <= names
    missing = sorted(set(sources()) - {f"jaxtrain/{n}" for n in names if n.startswith(PACKAGES)})
    assert missing == []
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/"))]


def test_the_installed_wheel_runs_from_its_environment(venv):
    where = in_venv(venv, venv / "bin" / "python", "-c",
                    "import jaxtrain.cli.main as m; print(m.__file__)").stdout.strip()
    assert Path(where).is_relative_to(venv), f"jaxtrain imported from {where}, not the wheel"
    assert in_venv(venv, venv / "bin" / "jaxtrain", "--version").stdout == f"jaxtrain {VERSION}\n"
    help_text = in_venv(venv, venv / "bin" / "jaxtrain", "--help").stdout
    assert "Usage: jaxtrain" in help_text and "presets" in help_text
    listed = in_venv(venv, venv / "bin" / "jaxtrain", "presets").stdout
    shipped = sorted(p.stem for p in (ROOT / "training/settings/presets").glob("*.toml"))
    assert [line.split()[0] for line in listed.splitlines() if line.strip()] == shipped
