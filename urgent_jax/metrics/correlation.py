"""Agreement between predicted and reference quality scores (Track 2, REFERENCE.md §4.5).

    stats = correlation_stats(pred, ref)                     # {"MSE", "LCC", "SRCC", "KTAU"}
    utt, sys = utterance_and_system_stats(pred, ref, system_ids)

MSE = mean (p - r)^2; LCC = Pearson's r; SRCC = Spearman's rho (Pearson on average ranks, so ties
share their mean rank); KTAU = Kendall's tau-b (tie-corrected, scipy's default). System level: the
mean prediction and mean reference of each system, systems in sorted id order.

Pairs where either value is NaN are dropped (`nan_policy="omit"`, the count is returned) or make
every statistic NaN (`"propagate"`, what the official training CV does: a metric with any NaN is
skipped). Host-side numpy: these run once per evaluation over at most a few 10^5 values; tau-b's
pair count is accumulated in row blocks to bound memory at O(block * n).
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
    _, counts = np.unique(x, return_counts=True)
    return int(np.sum(counts * (counts - 1) // 2))


def kendall_tau_b(x: np.ndarray, y: np.ndarray, block: int = 2048) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - n1)(n0 - n2)), n0 = n(n-1)/2 and
    n1, n2 the pairs tied in x, in y. NaN when fewer than 2 values or either input is constant."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n = x.size
    if n < 2:
        return float("nan")
    # sum over i<j of sign(dx) sign(dy) = half the sum over all ordered pairs (the diagonal is 0).
    s = 0.0
    for lo in range(0, n, block):
        sx = np.sign(x[lo : lo + block, None] - x[None, :])
        sy = np.sign(y[lo : lo + block, None] - y[None, :])
        s += float(np.sum(sx * sy))
    s /= 2.0
    n0 = n * (n - 1) / 2.0
    denom = np.sqrt((n0 - _tied_pairs(x)) * (n0 - _tied_pairs(y)))
    return float(s / denom) if denom > 0 else float("nan")


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
