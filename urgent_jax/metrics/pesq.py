"""PESQ through the `pesq` C package (ITU-T P.862), in a process pool across cores.

Mode by rate (REFERENCE.md §4.1): 8 kHz narrow-band, 16 kHz wide-band; above 16 kHz both signals are
resampled to 16 kHz first (soxr HQ when the `soxr` package is installed, as the reference; else our
Kaiser resampler) and scored wide-band; other rates below 16 kHz are rejected. This is host-only work
(the C library), isolated here and run in worker processes; everything else in metrics/ is jax.

Every PESQ error code becomes NaN with its reason (the reference maps only "no utterances" to NaN and
records other error codes as scores, REFERENCE.md §6.17). A worker process that dies (a crash in
the C library, the OOM killer) breaks the pool: it is restarted and the batch retried once; a batch
that breaks it again gets NaN with `WORKER_DIED` as every reason, and the next batch starts a
fresh pool.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from urgent_jax import configure_host_allocator
from urgent_jax.audio.resample import resample_numpy

WORKER_DIED = "pesq worker process died"  # reason of a batch that broke the pool twice

log = logging.getLogger(__name__)


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


_SHARED: np.ndarray | None = None  # in a worker: bytes of its pool's shared buffer


def _init_worker(buffer) -> None:
    global _SHARED
    configure_host_allocator()
    _SHARED = np.frombuffer(buffer, np.uint8)


def _pesq_shared_job(args):
    """pesq_one on a (ref, est) pair that the parent wrote into the shared buffer."""
    (ref_at, ref_dtype), (est_at, est_dtype), length, sample_rate = args

    def row(at: int, dtype: str) -> np.ndarray:
        dtype = np.dtype(dtype)
        return _SHARED[at : at + length * dtype.itemsize].view(dtype)

    return pesq_one(row(ref_at, ref_dtype), row(est_at, est_dtype), sample_rate)


class PesqPool:
    """A reusable pool of worker processes scoring PESQ (spawned: safe next to jax's threads).

    A batch reaches the workers through a buffer they share with this process (a
    `multiprocessing.RawArray`, handed over when they start), not pickled through pipes; the
    pool restarts with a buffer twice as large when a batch does not fit. Each worker keeps large
    freed buffers in its heap (`urgent_jax.configure_host_allocator`): the C library allocates and
    frees its work arrays on every call. Measured on 2 cores, 16 x 4 s at 48 kHz: pickled rows
    cost this process ~2 ms of CPU per clip that the workers needed, and one PESQ took 74.5 ms per
    clip with glibc's defaults against 68.7.
    """

    MIN_BUFFER_BYTES = 1 << 25  # 32 MiB (16 pairs of 4 s float32 at 48 kHz: 24.6 MB)

    def __init__(self, num_workers: int | None = None):
        self.num_workers = num_workers or os.cpu_count() or 1
        self._pool = None
        self._buffer = None  # np.uint8 view of the RawArray the workers see

    def _executor(self, nbytes: int):
        """The worker pool, with a shared buffer of at least nbytes (None: one worker)."""
        if self.num_workers <= 1:
            return None
        size = max(nbytes, self.MIN_BUFFER_BYTES)
        if self._pool is not None and self._buffer.size < nbytes:
            self.close()  # grow: the buffer is fixed for the workers' lifetime
            size = max(size, 2 * self._buffer.size)
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            raw = context.RawArray("B", size)
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.num_workers, mp_context=context, initializer=_init_worker, initargs=(raw,)
            )
            self._buffer = np.frombuffer(raw, np.uint8)
        return self._pool

    def __call__(self, ref, est, lengths, sample_rate: int) -> tuple[np.ndarray, list[str]]:
        """Scores [B] (NaN on failure) and reasons [B] ('' when fine) for a padded batch."""
        ref, est = np.asarray(ref), np.asarray(est)
        lengths = [int(n) for n in np.asarray(lengths)]
        if self.num_workers <= 1:
            results = [pesq_one(ref[i, :n], est[i, :n], sample_rate) for i, n in enumerate(lengths)]
        else:
            results = None
            for attempt in (1, 2):
                try:
                    results = self._map(ref, est, lengths, sample_rate)
                    break
                except BrokenProcessPool as e:
                    log.warning("PESQ pool broken (attempt %d of 2 for this batch): %s", attempt, e)
                    self._discard_pool()  # the next _map (or call) starts a fresh pool
            if results is None:
                results = [(float("nan"), WORKER_DIED)] * len(lengths)
        return np.array([r[0] for r in results], np.float64), [r[1] for r in results]

    def _map(self, ref, est, lengths, sample_rate: int) -> list[tuple[float, str]]:
        """Write the rows into the shared buffer and score them in the pool."""
        nbytes = sum(n * (ref.itemsize + est.itemsize) for n in lengths)
        pool = self._executor(nbytes)
        jobs, at = [], 0
        for i, n in enumerate(lengths):
            places = []
            for x in (ref, est):
                size = n * x.itemsize
                self._buffer[at : at + size] = np.ascontiguousarray(x[i, :n]).view(np.uint8)
                places.append((at, x.dtype.str))
                at += size
            jobs.append((*places, n, sample_rate))
        return list(pool.map(_pesq_shared_job, jobs))

    def _discard_pool(self) -> None:
        """Drop a broken pool (its executor has already ended the remaining workers)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
