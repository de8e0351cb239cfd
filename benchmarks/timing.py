"""Shared by the benchmark scripts."""

import statistics
import time


def seconds(fn) -> float:
    """Wall-clock seconds of one call of fn()."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def timed(fn, repeats):
    """(median, min, max) seconds of `repeats` calls of fn()."""
    times = [seconds(fn) for _ in range(repeats)]
    return statistics.median(times), min(times), max(times)
