"""Fixtures and helpers every test module shares: tiny IDX datasets in torchvision's
layout, the tiny VAE run, the CLI in this process or as a subprocess, the run's records,
and the one-line error a user must see."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

# Tests compile with LLVM's optimizations off and XLA:CPU's older loop emitters: a tiny
# Transformer's train step compiles in 2.1 s instead of 8.7 s, and steps run 2-3x slower,
# which tests of a few tiny steps hardly feel (the suite is mostly compiling: 825 -> 535 s
# on 2 cores). Every program in one test compiles alike, so resume, accumulation and
# data parallelism compare bitwise as for users; the one claim that holds only for the
# default compile (S steps in one lax.scan are S single steps, bitwise) is tested in
# processes with DEFAULT_XLA. Users' speed is `make bench`'s. Set before JAX starts its
# backend, so this process and every CLI process a test starts get the flags.
# (xdist's workers inherit the flags from the process that started them.) One LLVM module
# per program, not XLA:CPU's 32 parts compiled side by side: on 2 cores already busy
# with other tests the split only adds work (docs/testing.md).
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false "
                  "--xla_cpu_parallel_codegen_split_count=1")
_user_flags = os.environ.get("XLA_FLAGS", "").replace(TEST_XLA_FLAGS, "").strip()
DEFAULT_XLA = {"XLA_FLAGS": _user_flags, "JAXTRAIN_DEFAULT_XLA": "1"}
if not os.environ.get("JAXTRAIN_DEFAULT_XLA"):
    os.environ["XLA_FLAGS"] = f"{_user_flags} {TEST_XLA_FLAGS}".strip()

N_TRAIN, N_TEST = 64, 30  # 30 test images: the last eval batch of 8 is partial

# A tiny model and run, so a CLI call costs seconds: 8 steps per epoch.
TINY = ["--encoder-widths", "32", "--decoder-widths", "32", "--latent-dim", "4",
        "--batch-size", "8", "--warmup-steps", "2", "--no-download"]


# The fixtures' images, MNIST's shape (training/sources/mnist.py), and what a digits
# Transformer of them is sized with (training/commands/prepare.py:with_spec does it in a run).
SHAPE = (28, 28, 1)
DIGITS = {"image_shape": SHAPE, "context": 196}

def fit_args(data_dir, workdir, epochs=2, *extra) -> list:
    """`jaxtrain fit` of the tiny VAE on the tiny dataset (8 steps an epoch, a log every 4)."""
    return ["fit", "--data-dir", data_dir, "--workdir", workdir, "--epochs", epochs, *TINY,
            "--log-every", 4, *extra]


def fresh_params(family, batch_size: int):
    """`family.init` at key 0, jitted as a run's init is: one program, not a compile per
    operation."""
    import jax

    return jax.jit(family.init, static_argnums=1)(jax.random.PRNGKey(0), batch_size)


def records(workdir) -> list[dict]:
    """The run's metrics.jsonl records."""
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def assert_one_line_error(proc, *fragments):
    """The failure is one line on stderr, "error: ...", no traceback, a non-zero exit."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_ends_in_one_error_line(proc, *fragments):
    """Progress lines may come first; the failure itself is one line, no traceback."""
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in last, last


def write_idx(path, array: np.ndarray) -> None:
    """Writes an uint8 array as an IDX file (big-endian header, as MNIST ships it)."""
    magic = 0x0800 | array.ndim
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def make_images(n: int, seed: int):
    """Digit-like images: class k lights up a 4-pixel-wide bar at row 2k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 40, size=(n, 28, 28))
    for image, label in zip(images, labels):
        image[2 * label + 4: 2 * label + 8, 4:24] = 255
    return images.astype(np.uint8), labels.astype(np.uint8)


def write_dataset(root, folder="MNIST", n_train=N_TRAIN):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for split, n, seed in (("train", n_train, 0), ("t10k", N_TEST, 1)):
        images, labels = make_images(n, seed)
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return raw


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory):
    """The cache folder of this worker's commands (the text runs' tokens, the measured
    peak), not the user's ~/.cache/jaxtrain."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.getbasetemp() / "xdg-cache")


# The folder every xdist worker of this session shares (pytest-N/, the workers' parent).
SESSION = {}


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """An XLA compilation cache for this session's tests and the CLI processes they
    start, not the user's: a program compiled once, in any xdist worker or command, is
    loaded from disk after that (the whole suite, back to back: 932 -> 807 CPU-seconds
    and 7 min 58 s -> 6 min 50 s against one cache per worker, 2026-12-03). XLA's own
    caches are off: their folder, inside this one, enters every cache key, so no worker
    could load another's programs. JAX's size cap is left off: it locks the folder and
    scans it at every write (tests of many small programs ran 3-5x slower; the suite
    9 min 50 s). (JAX writes an entry in
    place; a process that reads one at the very moment another writes it is warned and
    compiles it itself.)"""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    base = tmp_path_factory.getbasetemp()
    SESSION["folder"] = base.parent if worker else base
    folder = SESSION["folder"] / "xla-cache"
    settings = {"JAX_COMPILATION_CACHE_DIR": str(folder),
                "JAX_PERSISTENT_CACHE_ENABLE_XLA_CACHES": "none"}
    os.environ.update(settings)
    # The CLI called in this process (the jaxtrain fixture) uses it too: JAX read the
    # variables when the test modules imported it, before this fixture ran.
    import jax

    for name, value in settings.items():
        jax.config.update(name.lower(), value)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield folder


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_dataset(root)
    return root


def write_judged_dataset(root):
    """The tiny data with its judge trained and kept where the commands look for it, so
    `eval --samples` and `fit --final-eval samples=N` read it. 150 steps reach >= 90%
    test accuracy here (tests/test_judge.py) where the command's 1,000-step minimum
    takes 30-60 s."""
    from jaxtrain.training.settings.config import DataConfig

    write_dataset(root)
    train_judge(DataConfig(dataset="mnist", data_dir=str(root), download=False), root)
    return root


def train_judge(data, root, steps: int = 150) -> None:
    """The judge of `data` (a DataConfig) trained for `steps` steps and kept where the
    commands look for it. Trained once a session for the same images and steps: every
    xdist worker copies the first judge from the session's folder (a judge of 28 x 28
    images takes 7-10 CPU-seconds at the tests' compile)."""
    from jaxtrain.training.scoring.judge import fingerprint, judge_path, load_or_train
    from jaxtrain.training.sources.images import ImageSource

    source, path = ImageSource(data, 8, 0), judge_path(data, root)
    kept = SESSION["folder"] / f"judge-{fingerprint(source.train, source.test)}-{steps}"
    if kept.exists():
        path.write_bytes(kept.read_bytes())
        return
    load_or_train(source, path, 10, epochs=1, min_steps=steps)
    tmp = kept.with_name(f"{kept.name}.{os.getpid()}")
    tmp.write_bytes(path.read_bytes())
    tmp.replace(kept)  # another worker never reads half a file


def write_digit_folder(root, size: int, n_train: int = N_TRAIN, judge: bool = True):
    """The tiny dataset as a grey folder, train/ and test/ (n_train and 30 PNGs, one
    subfolder per class); with `judge`, its judge trained and kept for `--dataset folder
    --image-size size`, as write_judged_dataset does for the IDX files, but for 30 steps:
    a judge that scores, not one that is right (its convolutions run slowly at the tests'
    compile: 150 steps of 8 x 8 images took 10 s)."""
    from PIL import Image

    from jaxtrain.training.settings.config import DataConfig

    for split, n, seed in (("train", n_train, 0), ("test", N_TEST, 1)):
        images, labels = make_images(n, seed)
        for i, (image, label) in enumerate(zip(images, labels)):
            (root / split / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / split / str(label) / f"{i:03d}.png")
    if not judge:
        return root
    train_judge(DataConfig(dataset="folder", data_dir=str(root), image_size=size,
                           download=False), root, steps=30)
    return root


@pytest.fixture(scope="session")
def judged_data_dir(tmp_path_factory):
    return write_judged_dataset(tmp_path_factory.mktemp("judged"))


def exit_code(*args) -> int:
    """`jaxtrain ARGS` called in this process (the CLI's entry point); its exit code."""
    from jaxtrain.cli.main import main

    argv, sys.argv = sys.argv, ["jaxtrain", *map(str, args)]
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
    finally:
        sys.argv = argv
    return exit_.value.code


@pytest.fixture
def jaxtrain(capsys):
    """The CLI's entry point called in this process: no interpreter start and imports
    (about 7 s a call), where a separate process adds nothing (no signals, no kills).
    `check=True` asserts that it succeeded."""

    def call(*args, check=False):
        code = exit_code(*args)
        out, err = capsys.readouterr()
        if check and code != 0:
            raise AssertionError(f"jaxtrain {' '.join(map(str, args))} failed with "
                                 f"{code}:\n{err}")
        return subprocess.CompletedProcess(args, code, out, err)

    return call


def in_process(*args) -> None:
    """`jaxtrain ARGS` in this process, asserted to succeed, for fixtures of a module or
    session (which cannot use the jaxtrain fixture)."""
    assert exit_code(*args) == 0, f"jaxtrain {' '.join(map(str, args))} failed"


def cli(*args, check=True, env=None, **kwargs) -> subprocess.CompletedProcess:
    """Runs `jaxtrain ARGS` in a fresh process, as a user would; `env` adds variables."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "jaxtrain.cli.main", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"jaxtrain {' '.join(map(str, args))} failed with "
                             f"{proc.returncode}:\n{proc.stderr}")
    return proc


def popen(*args, env=None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "jaxtrain.cli.main", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            **kwargs)
