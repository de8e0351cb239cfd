"""The process-level workarounds for speed at start and exit, in one place: each says
what it works around and what it buys, and each can be turned off to measure it again
(`python benchmarks/workarounds.py`, which writes benchmarks/results/workarounds.md)
or to rule it out when something looks wrong:

    JAXTRAIN_WORKAROUNDS_OFF=torchvision-import,fast-exit jaxtrain fit ...

- `torchvision-import`: torchvision importing TorchDynamo (torchvision_module); buys an
  image command's start.
- `tensorboardx-import`: tensorboardX importing torch (summary_writer_class); buys a text
  command's start.
- `malloc`: glibc's malloc returning XLA's step scratch to the OS (keep_freed_memory);
  buys step speed and peak RSS.
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
# The price: the process keeps its peak memory until it exits. JAXTRAIN_MALLOC=glibc
# (or JAXTRAIN_WORKAROUNDS_OFF=malloc) leaves glibc's defaults and async dispatch
# alone, and so does a GLIBC_TUNABLES that sets malloc.

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -4, -8
TOP_PAD = 64 << 20  # the heap grows in 64 MB steps, not a page at a time


def keep_freed_memory() -> bool:
    """Sets glibc's malloc to keep freed memory; True if it did (Linux with glibc only)."""
    if (os.environ.get("JAXTRAIN_MALLOC") == "glibc" or not on("malloc")
            or not sys.platform.startswith("linux")):
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
    return all(mallopt(param, value) == 1
               for param, value in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1),
                                    (M_TOP_PAD, TOP_PAD), (M_ARENA_MAX, 1)))


def tune_host() -> bool:
    """Before JAX's CPU backend starts: malloc keeps freed memory, and if it does, CPU
    steps run on the calling thread, whose arena holds the big blocks. True if set."""
    import jax

    kept = keep_freed_memory()
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
