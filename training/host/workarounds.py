"""The process-level workarounds for speed at start and exit, in one place: each says
what it works around and what it buys, and each can be turned off to measure it again
(`python benchmarks/workarounds.py`, which writes benchmarks/results/workarounds.md)
or to rule it out when something looks wrong:

    JAXTRAIN_WORKAROUNDS_OFF=torchvision-import,fast-exit jaxtrain fit ...

- `torchvision-import`: torchvision importing TorchDynamo (torchvision_module); buys an
  image command's start.
- `tensorboardx-import`: tensorboardX importing torch (summary_writer_class); buys a text
  command's start.
- `malloc`: glibc's malloc returning XLA's step scratch to the OS, and fragmenting its
  heap when told not to: jemalloc where it is installed (use_jemalloc), else glibc told
  to keep freed memory (keep_freed_memory); buys step speed and peak RSS.
- `fast-exit`: the interpreter's teardown of JAX's and torch's objects (exit_process);
  buys every command's end.

Each is exact: none changes what a run computes, saves or prints; turning one off
changes only time and memory (tests/test_host.py runs a fit with all of them off).

Dropped when measured (2026-12-03, benchmarks/results/workarounds.md): compiling the first
programs in a thread while the state initializes bought nothing on 2 cores (cold fits:
VAE 19.7 s with it, 19.5 s without; baby GPT 24.9 s with it, 21.1 s without) and raised
the peak RSS by 100-200 MB; training/engine/precompile.py now compiles them in order.
"""

import atexit
import ctypes
import os
import sys
import threading
import types

NAMES = ("torchvision-import", "tensorboardx-import", "malloc", "fast-exit")
_OFF_ENV = "JAXTRAIN_WORKAROUNDS_OFF"


def on(name: str) -> bool:
    """Whether workaround `name` (one of NAMES) is on: not listed in
    JAXTRAIN_WORKAROUNDS_OFF (read at each call, so a test can set it)."""
    assert name in NAMES, name
    return name not in os.environ.get(_OFF_ENV, "").split(",")


# --- torchvision-import ---
# torchvision 0.29's `ops/roi_align.py` imports `torch._dynamo.utils` at module level for
# one function (`is_compile_supported`) that only roi_align's calls use, although the
# same file defers `torch.compile` on purpose "to avoid eagerly importing dynamo".
# `import torchvision` imports its ops, so every image command paid for TorchDynamo
# (1.6 s of a warm 20-step VAE fit's 7.5 s when it was found). While torchvision
# imports, `torch._dynamo.utils` is a stand-in whose `is_compile_supported` imports the
# real one when called; the stand-in leaves sys.modules afterwards, so anything that
# imports TorchDynamo later gets the real module (tests/test_data.py checks both).


def _is_compile_supported(*args, **kwargs):
    from torch._dynamo.utils import is_compile_supported

    return is_compile_supported(*args, **kwargs)


def torchvision_module() -> types.ModuleType:
    """`import torchvision`, without importing torch._dynamo."""
    import torch  # noqa: F401  (first: the stand-in must not shadow torch's own imports)

    if (not on("torchvision-import") or "torchvision" in sys.modules
            or "torch._dynamo.utils" in sys.modules):
        import torchvision

        return torchvision
    stand_in = types.ModuleType("torch._dynamo.utils")
    stand_in.is_compile_supported = _is_compile_supported
    sys.modules["torch._dynamo.utils"] = stand_in
    try:
        import torchvision
    finally:
        if sys.modules.get("torch._dynamo.utils") is stand_in:
            del sys.modules["torch._dynamo.utils"]
    return torchvision


# --- tensorboardx-import ---


def summary_writer_class():
    """tensorboardX's SummaryWriter, imported without torch where the run has not
    imported it: tensorboardX's writer tries `import torch` (2.3 s when it was found)
    only to accept torch tensors, which jaxtrain never passes, and text runs otherwise
    need no torch."""
    if "torch" in sys.modules or not on("tensorboardx-import"):
        from tensorboardX import SummaryWriter
    else:
        sys.modules["torch"] = None  # `import torch` raises ImportError while this is set
        try:
            from tensorboardX import SummaryWriter
        finally:
            del sys.modules["torch"]
    return SummaryWriter


# --- malloc ---
# glibc's malloc serves big blocks with mmap and returns them with munmap, and gives the
# free top of its heap back to the OS. XLA:CPU allocates a step's scratch, up to 800 MB
# for the context-256 Transformer, at every call and frees it after, so every step
# faulted the same memory back in page by page: 12k page faults a step for nanoGPT's
# baby GPT and 195k for the context-256 model, a third of the step's time in the kernel
# (measured with getrusage, benchmarks/bench.py's models). glibc's own settings
# (mallopt) stop it: no mmap, no trimming. Big blocks then come from the main heap,
# which only the main thread's arena can grow past 64 MB, so steps run on the calling
# thread (no async CPU dispatch), which allocates from the main arena.
#
# One arena for every thread: memory one thread frees, another reuses. With glibc's
# arena per thread, what a compile thread (then, training/engine/precompile.py) and
# XLA's threads freed stayed in their arenas, untrimmed, while the steps' scratch grew
# the main heap beside it (cold whole commands, peak RSS, 2026-12-03: a 10-step
# context-256 text fit, batch 32, 4x128, 1,726 -> 1,472 MB; the Fashion-MNIST VAE's
# epoch 1,371 -> 1,240 MB).
#
# The price: the process keeps its peak memory until it exits. And glibc's heap
# fragments: a baby GPT's 2000-step fit held 203 MB (malloc_stats) while its heap grew
# to 805 MB, because no free block was left whole for a step's 48 MB scratch; such runs
# peaked at 0.84-1.79 GB where the others peaked at 0.5 GB (11 of 23 runs,
# docs/performance.md). jemalloc, told to keep freed pages, did neither: 516-540 MB in
# 4 runs of 4, as fast. So where it is installed (Debian's libjemalloc2), the `jaxtrain`
# command starts again under it (use_jemalloc), and the glibc settings are the fallback.
#
# JAXTRAIN_MALLOC chooses: unset, jemalloc if installed, else glibc kept; `jemalloc`,
# the same (an error if jemalloc is missing); `glibc-kept`, glibc with these settings;
# `glibc` (or JAXTRAIN_WORKAROUNDS_OFF=malloc), glibc's defaults and async dispatch
# left alone, as a GLIBC_TUNABLES that sets malloc leaves them.

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -4, -8
TOP_PAD = 64 << 20  # the heap grows in 64 MB steps, not a page at a time


MALLOC_CHOICES = ("jemalloc", "glibc-kept", "glibc")
# Where Debian, Ubuntu and Fedora put jemalloc's shared library.
JEMALLOC_PATHS = tuple(f"/usr/{lib}/libjemalloc.so.2" for lib in (
    "lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu", "lib64", "lib"))
# jemalloc's options: keep freed pages (its default returns them after 10 s, and the
# steps faulted them back in: the baby GPT's fit took 151-169 s instead of 116-122 s).
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def malloc_choice() -> str:
    """JAXTRAIN_MALLOC ('' when unset); a ValueError names the choices."""
    choice = os.environ.get("JAXTRAIN_MALLOC", "")
    if choice not in ("", *MALLOC_CHOICES):
        raise ValueError(f"JAXTRAIN_MALLOC={choice!r} is not one of {', '.join(MALLOC_CHOICES)}"
                         " (or unset: jemalloc where it is installed)")
    return choice


def jemalloc_loaded() -> bool:
    """Whether this process's malloc is jemalloc's (it exports mallctl)."""
    try:
        return hasattr(ctypes.CDLL(None), "mallctl")
    except OSError:
        return False


def use_jemalloc(argv: list[str]) -> None:
    """Starts this command again under jemalloc (LD_PRELOAD: a running process cannot
    change its malloc) where it is installed and wanted; returns where it is not (then
    glibc's settings apply). Called first thing, before the CLI's imports, so the cost is
    one interpreter start (`jaxtrain --help`: 0.22-0.47 s against 0.21-0.36 s). The
    process keeps its pid, so signals, Slurm and `kill` see one process. `argv`: the
    interpreter's own command line (sys.orig_argv)."""
    choice = malloc_choice()
    if (choice not in ("", "jemalloc") or not on("malloc") or not sys.platform.startswith("linux")
            or "jemalloc" in os.environ.get("LD_PRELOAD", "") or jemalloc_loaded()):
        return
    path = next((p for p in JEMALLOC_PATHS if os.path.exists(p)), None)
    if path is None:
        if choice == "jemalloc":
            raise ValueError("JAXTRAIN_MALLOC=jemalloc, but jemalloc is not installed: "
                             "`apt-get install libjemalloc2` (or `make malloc`), or unset it")
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(filter(None, [path, env.get("LD_PRELOAD", "")]))
    env.setdefault("MALLOC_CONF", JEMALLOC_CONF)  # the user's own options win
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], env)


def malloc_in_use() -> str:
    """The run's malloc as its record says it: jemalloc, glibc-kept or glibc."""
    if jemalloc_loaded():
        return "jemalloc"
    return "glibc-kept" if _kept else "glibc"


_kept = False  # keep_freed_memory set glibc's malloc


def keep_freed_memory() -> bool:
    """Sets glibc's malloc to keep freed memory; True if it did (Linux with glibc only)."""
    global _kept
    if (malloc_choice() == "glibc" or not on("malloc") or not sys.platform.startswith("linux")
            or jemalloc_loaded()):
        return False
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False  # the user's own malloc settings win
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # A trim threshold of -1 is SIZE_MAX inside glibc: the heap is never trimmed. One
    # arena: threads started from now on share the main one (those with one keep it).
    _kept = all(mallopt(param, value) == 1
                for param, value in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1),
                                     (M_TOP_PAD, TOP_PAD), (M_ARENA_MAX, 1)))
    return _kept


def tune_host() -> bool:
    """Before JAX's CPU backend starts: malloc keeps freed memory (jemalloc, or glibc
    set to), and if it does, CPU steps run on the calling thread, as they were measured
    (with glibc, that thread's arena holds the big blocks). True if set."""
    import jax

    kept = jemalloc_loaded() or keep_freed_memory()
    if kept:
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    return kept


# --- fast-exit ---


def exit_process(code: int):
    """Ends the process with `code`, skipping the interpreter's teardown, which frees
    JAX's and torch's objects one by one (1.6 s of a 10.7 s `fit` when it was found).
    Nothing is lost: the command has closed its writers and checkpoint manager, and
    here the other threads finish, the streams flush and atexit handlers run. With
    fast-exit off, a plain sys.exit."""
    if not on("fast-exit"):
        sys.exit(code)
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)
