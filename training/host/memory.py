"""Host memory for XLA:CPU steps: freed memory stays in the process for the next step.

glibc's malloc serves big blocks with mmap and returns them with munmap, and gives the
free top of its heap back to the OS. XLA:CPU allocates a step's scratch, up to 800 MB
for the context-256 Transformer, at every call and frees it after, so every step faulted
the same memory back in page by page: 12k page faults a step for nanoGPT's baby GPT and
195k for the context-256 model, a third of the step's time in the kernel (measured with
getrusage, benchmarks/bench.py's models). glibc's own settings (mallopt) stop it: no
mmap, no trimming. Big blocks then come from the main heap, which only the main thread's
arena can grow past 64 MB, so steps run on the calling thread (no async CPU dispatch),
which allocates from the main arena.

One arena for every thread: memory one thread frees, another reuses. With glibc's
arena per thread, what the background compile (training/engine/precompile.py) and
XLA's threads freed stayed in their arenas, untrimmed, while the steps' scratch grew
the main heap beside it. Cold whole commands, peak RSS (2026-12-03): a 10-step
context-256 text fit (batch 32, 4x128) 1,726 -> 1,472 MB, the Fashion-MNIST VAE's epoch
1,371 -> 1,240 MB.

The price: the process keeps its peak memory until it exits. JAXTRAIN_MALLOC=glibc leaves
glibc's defaults (and async dispatch) alone, and so does a GLIBC_TUNABLES that sets malloc.
"""

import ctypes
import os
import sys

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -4, -8
TOP_PAD = 64 << 20  # the heap grows in 64 MB steps, not a page at a time


def keep_freed_memory() -> bool:
    """Sets glibc's malloc to keep freed memory; True if it did (Linux with glibc only)."""
    if os.environ.get("JAXTRAIN_MALLOC") == "glibc" or not sys.platform.startswith("linux"):
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
