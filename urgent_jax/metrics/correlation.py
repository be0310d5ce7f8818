"""Agreement between predicted and reference quality scores (Track 2, REFERENCE.md §4.5).

    stats = correlation_stats(pred, ref)                     # {"MSE", "LCC", "SRCC", "KTAU"}
    utt, sys = utterance_and_system_stats(pred, ref, system_ids)

MSE = mean (p - r)^2; LCC = Pearson's r; SRCC = Spearman's rho (Pearson on average ranks, so ties
share their mean rank); KTAU = Kendall's tau-b (tie-corrected, scipy's default). System level: the
mean prediction and mean reference of each system, systems in sorted id order.

Pairs where either value is NaN are dropped (`nan_policy="omit"`, the count is returned) or make
every statistic NaN (`"propagate"`, what the official training CV does: a metric with any NaN is
skipped). Host-side numpy, O(n log n) time and O(n) memory: tau-b counts discordant pairs with
Knight's algorithm (sort by x, then count the inversions of y; `count_inversions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

STAT_NAMES = ("MSE", "LCC", "SRCC", "KTAU")
NanPolicy = Literal["omit", "propagate"]


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of x (float64 [n]); tied values get the mean of the ranks they span."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    is_new = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])
    group = np.cumsum(is_new) - 1  # tie-group index of each sorted position
    starts = np.flatnonzero(is_new)
    ends = np.concatenate([starts[1:], [x.size]])
    mean_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(x.size, np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's linear correlation; NaN when fewer than 2 values or a constant input."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.size < 2:
        return float("nan")
    dx = x - x.mean()
    dy = y - y.mean()
    denom = np.sqrt(np.dot(dx, dx) * np.dot(dy, dy))
    return float(np.dot(dx, dy) / denom) if denom > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation with average ranks for ties."""
    return pearson(average_ranks(x), average_ranks(y))


def _tied_pairs(x: np.ndarray) -> int:
    """Pairs i < j with x_i == x_j."""
    _, counts = np.unique(x, return_counts=True)
    return int(np.sum(counts * (counts - 1) // 2))


def count_inversions(ranks: np.ndarray) -> int:
    """Pairs i < j with ranks[i] > ranks[j] (equal ranks are no inversion); ranks int >= 0 [n].

    O(n log(max rank)) and vectorised: a most-significant-bit-first radix sort. At bit b the items
    are ordered by their bits above b (stably, so by index within a group of equal high bits);
    inside a group, a pair is inverted at bit b exactly when the earlier item has bit 1 and the
    later one bit 0 (higher bits are equal, lower bits do not matter), so each inverted pair is
    counted once, at the highest bit where the two ranks differ. The groups are then split
    stably by bit b (zeros first) for the next bit.
    """
    r = np.asarray(ranks, np.int64).reshape(-1)
    n = r.size
    if n < 2:
        return 0
    if r.min() < 0:
        raise ValueError("ranks must be >= 0")
    order = np.arange(n)  # items sorted by their bits above the current one, stably
    position = np.arange(n)
    total = 0
    for b in range(int(r.max()).bit_length() - 1, -1, -1):
        key = r[order]
        bit = (key >> b) & 1
        high = key >> (b + 1)
        is_start = np.empty(n, bool)
        is_start[0], is_start[1:] = True, high[1:] != high[:-1]
        starts = np.flatnonzero(is_start)
        group = np.cumsum(is_start) - 1  # group of each position
        ones_before = np.cumsum(bit) - bit  # ones at earlier positions (all groups)
        ones_before -= ones_before[starts][group]  # ... in the same group
        total += int(ones_before[bit == 0].sum())
        zeros_in_group = np.add.reduceat(1 - bit, starts)
        zeros_before = position - starts[group] - ones_before
        new_position = starts[group] + np.where(
            bit == 0, zeros_before, zeros_in_group[group] + ones_before
        )
        new_order = np.empty_like(order)
        new_order[new_position] = order
        order = new_order
    return total


def _dense_ranks(x: np.ndarray) -> np.ndarray:
    """0-based ranks with ties sharing one rank (int64 [n])."""
    return np.unique(x, return_inverse=True)[1].reshape(-1).astype(np.int64)


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - n1)(n0 - n2)), n0 = n(n-1)/2 and
    n1, n2 the pairs tied in x, in y. NaN when fewer than 2 values or either input is constant.

    Knight's algorithm as scipy's `kendalltau`: sort by (x, y); the discordant pairs are then the
    inversions of y (pairs tied in x are ordered by y and give none), and concordant - discordant
    = n0 - n1 - n2 + n3 - 2 discordant, n3 the pairs tied in both. O(n log n).
    """
    x = np.asarray(x, np.float64).reshape(-1)
    y = np.asarray(y, np.float64).reshape(-1)
    n = x.size
    if n < 2:
        return float("nan")
    rx, ry = _dense_ranks(x), _dense_ranks(y)
    order = np.lexsort((ry, rx))  # by x, then y
    rx, ry = rx[order], ry[order]
    discordant = count_inversions(ry)
    is_new = np.ones(n + 1, bool)
    is_new[1:n] = (rx[1:] != rx[:-1]) | (ry[1:] != ry[:-1])
    run = np.diff(np.flatnonzero(is_new))  # lengths of runs tied in both x and y
    tied_both = int(np.sum(run * (run - 1) // 2))
    n0 = n * (n - 1) // 2
    tied_x, tied_y = _tied_pairs(rx), _tied_pairs(ry)
    if tied_x == n0 or tied_y == n0:
        return float("nan")
    s = n0 - tied_x - tied_y + tied_both - 2 * discordant  # concordant - discordant (exact int)
    tau = s / np.sqrt(float(n0 - tied_x)) / np.sqrt(float(n0 - tied_y))
    return float(min(1.0, max(-1.0, tau)))


def _finite_pairs(pred, ref, nan_policy: NanPolicy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred = np.asarray(pred, np.float64).reshape(-1)
    ref = np.asarray(ref, np.float64).reshape(-1)
    if pred.shape != ref.shape:
        raise ValueError(f"pred has {pred.size} values, ref {ref.size}")
    if nan_policy not in ("omit", "propagate"):
        raise ValueError(f"nan_policy must be 'omit' or 'propagate', got {nan_policy!r}")
    keep = ~(np.isnan(pred) | np.isnan(ref))
    return pred, ref, keep


def correlation_stats(pred, ref, nan_policy: NanPolicy = "omit") -> dict[str, float]:
    """{"MSE", "LCC", "SRCC", "KTAU", "num_pairs", "num_dropped"} over paired values."""
    pred, ref, keep = _finite_pairs(pred, ref, nan_policy)
    num_dropped = int(np.sum(~keep))
    if nan_policy == "propagate" and num_dropped:
        stats = dict.fromkeys(STAT_NAMES, float("nan"))
        return {**stats, "num_pairs": int(pred.size), "num_dropped": 0}
    p, r = pred[keep], ref[keep]
    stats = {
        "MSE": float(np.mean((p - r) ** 2)) if p.size else float("nan"),
        "LCC": pearson(p, r),
        "SRCC": spearman(p, r),
        "KTAU": kendall_tau_b(p, r),
    }
    return {**stats, "num_pairs": int(p.size), "num_dropped": num_dropped}


def system_means(
    values: np.ndarray, system_ids: Sequence[str]
) -> tuple[list[str], np.ndarray]:
    """(sorted system ids, mean of `values` per system) — float64 [num_systems]."""
    values = np.asarray(values, np.float64)
    ids = np.asarray(system_ids, dtype=object)
    if ids.shape != values.shape:
        raise ValueError(f"{ids.size} system ids for {values.size} values")
    systems, index = np.unique(ids.astype(str), return_inverse=True)
    sums = np.bincount(index, weights=values, minlength=systems.size)
    counts = np.bincount(index, minlength=systems.size)
    return systems.tolist(), sums / counts


def utterance_and_system_stats(
    pred, ref, system_ids: Sequence[str], nan_policy: NanPolicy = "omit"
) -> tuple[dict[str, float], dict[str, float]]:
    """(utterance-level stats, system-level stats). NaN pairs are dropped before the system means
    (`omit`) or make both levels NaN (`propagate`)."""
    pred, ref, keep = _finite_pairs(pred, ref, nan_policy)
    utt = correlation_stats(pred, ref, nan_policy)
    if nan_policy == "propagate" and not keep.all():
        return utt, {**dict.fromkeys(STAT_NAMES, float("nan")), "num_pairs": 0, "num_dropped": 0}
    ids = np.asarray(system_ids, dtype=object)[keep] if len(system_ids) else np.asarray([], object)
    _, sys_pred = system_means(pred[keep], ids)
    _, sys_ref = system_means(ref[keep], ids)
    sys = correlation_stats(sys_pred, sys_ref, nan_policy)
    return utt, sys
