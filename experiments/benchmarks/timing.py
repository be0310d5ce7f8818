"""Timing helpers shared by the benchmarks: median wall times after a warm-up call."""

from __future__ import annotations

import time

import numpy as np


def median_time(fn, repeats: int) -> float:
    """Median wall time (s) of fn() over `repeats` calls, after one warm-up call (compiles)."""
    return interleaved_median_times([fn], repeats, turn_s=0.0, settle_s=0.0)[0]


def interleaved_median_times(
    fns, repeats: int, budget_s: float | None = None, turn_s: float = 0.25, settle_s: float = 0.2
) -> list[float]:
    """Median wall time (s) per call of each of fns, after one warm-up call each, timed in
    `repeats` rounds in which every function takes a turn, so that all see the same machine load
    (on a shared machine it drifts within seconds). A turn calls its function back to back for
    about `turn_s` (at least once) and counts the mean, which is steady-state throughput: a lone
    short call right after another program's work also pays for cold caches and sleeping worker
    threads. Each turn starts `settle_s` after the previous one ended: thread pools of the other
    side (OpenBLAS, OpenMP in torch, XLA's) keep spinning for a while after their last call and
    would take cores from this one. budget_s: a function whose `repeats` calls would take longer
    than this, judged by a second call after the warm-up, takes a turn only in the first rounds
    (at least one).
    A turn of several calls starts with one more, untimed: the first call after the other side's
    turn runs on caches that side filled (LSD at 48 kHz: 50-58 ms against 40 ms after it)."""
    plans = []  # (calls per turn, turns)
    for fn in fns:
        fn()  # warm-up: compiles, loads
        if budget_s is None and turn_s <= 0:  # one call per turn, every round: nothing to size
            plans.append((1, repeats))
            continue
        # The turns are sized on a second call: sized on a compiling first call, a fast function
        # got one call per turn (and no untimed call), each right after the other side's turn.
        t0 = time.perf_counter()
        fn()
        warm = max(time.perf_counter() - t0, 1e-9)
        turns = repeats if budget_s is None else max(1, min(repeats, int(budget_s / warm)))
        plans.append((max(1, int(turn_s / warm)), turns))
    times: list[list[float]] = [[] for _ in fns]
    for round_index in range(repeats):
        for fn, (calls, turns), spent in zip(fns, plans, times):
            if round_index < turns:
                time.sleep(settle_s)
                if calls > 1:  # untimed: refills the caches the other side's turn evicted
                    fn()
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                spent.append((time.perf_counter() - t0) / calls)
    return [float(np.median(t)) for t in times]
