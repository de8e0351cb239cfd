"""Shared by the benchmark scripts."""

import statistics
import time


def timed(fn, repeats):
    """(median, min, max) seconds of `repeats` calls of fn()."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times)
