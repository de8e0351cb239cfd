"""training/host/workarounds.py, malloc: a command starts again under jemalloc where it
is installed; else, with glibc told to keep freed memory, a big block freed and
allocated again is not faulted back in; JAXTRAIN_MALLOC=glibc and a user's
GLIBC_TUNABLES leave glibc's defaults. And every workaround can be turned off without
changing a run's figures."""

import json
import os
import subprocess
import sys

import pytest

from jaxtrain.training.host import workarounds

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
# Debian's libjemalloc2 is here (`make malloc`): commands start under it.
JEMALLOC = any(os.path.exists(p) for p in workarounds.JEMALLOC_PATHS)

# 64 MB, over glibc's largest mmap threshold (32 MB): by default it is mmapped, and
# every allocation faults its 16,384 pages in again.
PROBE = """
import ctypes, json, resource
from jaxtrain.training.host.workarounds import keep_freed_memory
kept = keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(64 << 20)
    ctypes.memset(block, 1, 64 << 20)  # touches every page
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""


def probe(**env):
    env = {**{k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}, **env}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def test_freed_memory_is_reused_without_page_faults():
    kept = probe(JAXTRAIN_MALLOC="")
    assert kept["kept"]
    assert max(kept["faults"][1:]) < 100  # the block freed first is reused
    default = probe(JAXTRAIN_MALLOC="glibc")
    assert not default["kept"]
    assert min(default["faults"]) > 16_000  # mmap and munmap each time


# 16 MB freed by another thread, then allocated by the main thread: with an arena per
# thread the block stays in the other thread's arena and the main heap faults 4,096
# pages in; with one arena the main thread reuses it.
THREAD_PROBE = """
import ctypes, json, resource, threading
from jaxtrain.training.host.workarounds import keep_freed_memory
kept = keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
SIZE = 16 << 20
def use():
    block = libc.malloc(SIZE)
    ctypes.memset(block, 1, SIZE)
    libc.free(block)
thread = threading.Thread(target=use)
thread.start()
thread.join()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
use()
print(json.dumps({"kept": kept,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def test_memory_freed_by_another_thread_is_reused():
    env = {**{k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"},
           "JAXTRAIN_MALLOC": ""}
    out = json.loads(subprocess.run([sys.executable, "-c", THREAD_PROBE], env=env, check=True,
                                    capture_output=True, text=True).stdout)
    assert out["kept"] and out["faults"] < 100


def test_user_malloc_tunables_win():
    out = probe(JAXTRAIN_MALLOC="", GLIBC_TUNABLES="glibc.malloc.mmap_max=0")
    assert not out["kept"]


def test_tune_host_runs_cpu_steps_on_the_calling_thread():
    code = ("import jax; from jaxtrain.training.host.workarounds import tune_host; "
            "print(tune_host(), jax.config.read('jax_cpu_enable_async_dispatch'))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env={**os.environ, "JAXTRAIN_MALLOC": ""}).stdout.split()
    assert out == ["True", "False"]


@pytest.mark.slow
def test_workarounds_off_change_no_figure_of_a_run(data_dir, tmp_path):
    """training/host/workarounds.py: a run with every workaround off (the interpreter's
    own exit, glibc's malloc, torchvision and tensorboardX imported as they come)
    computes the same losses, bit for bit, and ends the same way."""
    from conftest import cli, fit_args, records

    from jaxtrain.training.host.workarounds import NAMES

    cli(*fit_args(data_dir, tmp_path / "on", 1))
    off = cli(*fit_args(data_dir, tmp_path / "off", 1),
              env={"JAXTRAIN_WORKAROUNDS_OFF": ",".join(NAMES)})
    assert off.returncode == 0 and "done:" in off.stderr

    def figures(workdir):
        return [{k: v for k, v in r.items() if "loss" in k or k in ("step", "lr")}
                for r in records(workdir)]

    assert figures(tmp_path / "on") == figures(tmp_path / "off")
    # The command started again under jemalloc where it is installed (`make test`
    # installs it where it can: `make malloc`), and on glibc's defaults with malloc off.
    assert records(tmp_path / "on")[0]["malloc"] == ("jemalloc" if JEMALLOC else "glibc-kept")
    assert records(tmp_path / "off")[0]["malloc"] == "glibc"


def test_the_malloc_choice_is_checked_and_jemalloc_is_preloaded(monkeypatch):
    """use_jemalloc's decisions (the command's start, before any import): which library,
    what the new process's environment holds, and a user's own choices left alone."""
    if workarounds.jemalloc_loaded():
        pytest.skip("this process runs under jemalloc already")
    started = []
    monkeypatch.setattr(workarounds.os, "execve", lambda *a: started.append(a))
    monkeypatch.setattr(workarounds, "JEMALLOC_PATHS", ("/no/such.so", sys.executable))
    for variable in ("JAXTRAIN_MALLOC", "LD_PRELOAD", "MALLOC_CONF", "JAXTRAIN_WORKAROUNDS_OFF"):
        monkeypatch.delenv(variable, raising=False)
    argv = [sys.executable, "-m", "jaxtrain.cli.main", "fit", "--steps", "3"]
    workarounds.use_jemalloc(argv)
    (executable, args, env), = started
    assert executable == sys.executable and args == argv
    assert env["LD_PRELOAD"] == sys.executable  # the first path that exists
    assert env["MALLOC_CONF"] == workarounds.JEMALLOC_CONF
    monkeypatch.setenv("MALLOC_CONF", "narenas:1")  # the user's jemalloc options win
    monkeypatch.setenv("LD_PRELOAD", "/lib/other.so")
    workarounds.use_jemalloc(argv)
    assert started[-1][2]["MALLOC_CONF"] == "narenas:1"
    assert started[-1][2]["LD_PRELOAD"] == f"{sys.executable} /lib/other.so"
    for variable, value in (("JAXTRAIN_MALLOC", "glibc"), ("JAXTRAIN_MALLOC", "glibc-kept"),
                            ("JAXTRAIN_WORKAROUNDS_OFF", "malloc"),
                            ("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")):
        with monkeypatch.context() as m:
            m.setenv(variable, value)
            workarounds.use_jemalloc(argv)  # stays: no second start
    assert len(started) == 2
    monkeypatch.setenv("JAXTRAIN_MALLOC", "tcmalloc")
    with pytest.raises(ValueError, match="JAXTRAIN_MALLOC='tcmalloc' is not one of jemalloc, "
                                         "glibc-kept, glibc"):
        workarounds.use_jemalloc(argv)
    monkeypatch.setattr(workarounds, "JEMALLOC_PATHS", ("/no/such.so",))
    monkeypatch.delenv("JAXTRAIN_MALLOC")
    workarounds.use_jemalloc(argv)  # not installed: glibc, silently
    monkeypatch.setenv("JAXTRAIN_MALLOC", "jemalloc")
    with pytest.raises(ValueError, match="jemalloc is not installed: `apt-get install "
                                         "libjemalloc2`"):
        workarounds.use_jemalloc(argv)
    assert len(started) == 2


def test_a_bad_malloc_choice_is_one_line(tmp_path):
    from conftest import assert_one_line_error, cli

    proc = cli("--help", check=False, env={"JAXTRAIN_MALLOC": "tcmalloc"})
    assert proc.returncode == 2
    assert_one_line_error(proc, "JAXTRAIN_MALLOC='tcmalloc' is not one of")
