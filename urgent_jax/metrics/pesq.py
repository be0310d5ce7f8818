"""PESQ through the `pesq` C package (ITU-T P.862), in a process pool across cores.

Mode by rate (REFERENCE.md §4.1): 8 kHz narrow-band, 16 kHz wide-band; above 16 kHz both signals are
resampled to 16 kHz first (soxr HQ when the `soxr` package is installed, as the reference; else our
Kaiser resampler) and scored wide-band; other rates below 16 kHz are rejected. This is host-only work
(the C library), isolated here and run in worker processes; everything else in metrics/ is jax.

Every PESQ error code becomes NaN with its reason (the reference maps only "no utterances" to NaN and
records other error codes as scores, REFERENCE.md §6.17).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os

import numpy as np

from urgent_jax.audio.resample import resample_numpy

def _to_16k(x: np.ndarray, sample_rate: int) -> np.ndarray:
    try:
        import soxr

        return soxr.resample(x.astype(np.float64), sample_rate, 16000, "HQ")
    except ImportError:
        return resample_numpy(x, sample_rate, 16000).astype(np.float64)


def pesq_one(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> tuple[float, str]:
    """(score, '') or (nan, reason) for one pair of 1-D signals at sample_rate."""
    try:
        from pesq import pesq
    except ImportError as e:
        raise ImportError("PESQ needs the `pesq` package: pip install pesq==0.0.4") from e
    if sample_rate == 8000:
        mode, rate = "nb", 8000
    elif sample_rate == 16000:
        mode, rate = "wb", 16000
    elif sample_rate > 16000:
        ref, est = _to_16k(ref, sample_rate), _to_16k(est, sample_rate)
        mode, rate = "wb", 16000
    else:
        return float("nan"), f"PESQ is undefined at {sample_rate} Hz"
    ref, est = np.asarray(ref, np.float64), np.asarray(est, np.float64)
    if not np.any(ref) or not np.any(est):
        return float("nan"), "silent signal"
    try:
        return float(pesq(rate, ref, est, mode)), ""
    except Exception as e:  # PesqError subclasses (no utterances, buffer too short, ...)
        return float("nan"), f"pesq {type(e).__name__}: {e}".strip().rstrip(":")


def _pesq_job(args):
    return pesq_one(*args)


class PesqPool:
    """A reusable pool of worker processes scoring PESQ (spawned: safe next to jax's threads)."""

    def __init__(self, num_workers: int | None = None):
        self.num_workers = num_workers or os.cpu_count() or 1
        self._pool = None

    def _executor(self):
        if self._pool is None and self.num_workers > 1:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.num_workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    def __call__(self, ref, est, lengths, sample_rate: int) -> tuple[np.ndarray, list[str]]:
        """Scores [B] (NaN on failure) and reasons [B] ('' when fine) for a padded batch."""
        ref, est = np.asarray(ref), np.asarray(est)
        lengths = np.asarray(lengths)
        jobs = [(ref[i, : lengths[i]], est[i, : lengths[i]], sample_rate) for i in range(len(lengths))]
        pool = self._executor()
        results = list(pool.map(_pesq_job, jobs)) if pool else [pesq_one(*j) for j in jobs]
        return np.array([r[0] for r in results], np.float64), [r[1] for r in results]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
