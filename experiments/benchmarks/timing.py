"""Timing helper shared by the benchmarks: median wall time after a warm-up call."""

from __future__ import annotations

import time

import numpy as np


def median_time(fn, repeats: int, budget_s: float | None = None) -> float:
    """Median wall time (s) of fn() over `repeats` calls, after one warm-up call (compiles).

    budget_s: fewer calls (at least one) where `repeats` of them would take longer than this,
    judged by the warm-up call.
    """
    t0 = time.perf_counter()
    fn()
    if budget_s is not None:
        repeats = max(1, min(repeats, int(budget_s / max(time.perf_counter() - t0, 1e-9))))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
