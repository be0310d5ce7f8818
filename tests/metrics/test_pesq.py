"""PESQ: equal to the pesq package (nb / wb / resampled wb), pool == serial, errors become NaN, a
dead worker process is survived."""

import os
import signal
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
import scipy.signal
import soxr
from pesq import pesq

from urgent_jax.metrics.pesq import WORKER_DIED, PesqPool, pesq_one


@pytest.fixture(scope="module")
def pairs(noizeus_pair):
    clean, noisy, fs = noizeus_pair
    n = 4 * fs
    return clean[:n].astype(np.float64), noisy[:n].astype(np.float64)


def test_wideband_and_narrowband_equal_the_package(pairs):
    clean, noisy = pairs
    assert pesq_one(clean, noisy, 16000) == (pesq(16000, clean, noisy, "wb"), "")
    c8 = scipy.signal.resample_poly(clean, 1, 2)
    n8 = scipy.signal.resample_poly(noisy, 1, 2)
    assert pesq_one(c8, n8, 8000) == (pesq(8000, c8, n8, "nb"), "")


def test_above_16k_resampled_with_soxr_then_wideband(pairs):
    clean, noisy = pairs
    c48 = scipy.signal.resample_poly(clean, 3, 1)
    n48 = scipy.signal.resample_poly(noisy, 3, 1)
    ref = pesq(16000, soxr.resample(c48, 48000, 16000, "HQ"), soxr.resample(n48, 48000, 16000, "HQ"), "wb")
    assert pesq_one(c48, n48, 48000)[0] == ref


def test_pool_equals_serial_and_errors_are_nan(pairs):
    clean, noisy = pairs
    batch = np.zeros((3, len(clean)), np.float32)
    ref = np.zeros_like(batch)
    ref[0], batch[0] = clean, noisy
    ref[1, :1000], batch[1, :1000] = clean[:1000], noisy[:1000]  # 1/16 s: too short
    ref[2], batch[2] = clean, clean  # identical: high score
    lengths = np.array([len(clean), 1000, len(clean)])
    with PesqPool(2) as pool:
        values, reasons = pool(ref, batch, lengths, 16000)
    serial, _ = PesqPool(1)(ref, batch, lengths, 16000)
    np.testing.assert_array_equal(values, serial)
    assert values[0] == pesq(16000, ref[0].astype(np.float64), batch[0].astype(np.float64), "wb")
    assert np.isnan(values[1]) and "short" in reasons[1].lower()
    assert values[2] > 4.4 and reasons[0] == reasons[2] == ""
    assert np.isnan(pesq_one(np.zeros(16000), noisy[:16000], 16000)[0])
    assert "undefined" in pesq_one(clean, noisy, 11025)[1]


def test_pool_buffer_grows_and_keeps_each_dtype(pairs):
    """Batches go to the workers through a shared buffer: one larger than it restarts the pool
    with a bigger buffer; float64 and float32 rows arrive unchanged, in their own order."""
    clean, noisy = pairs
    n = 16000
    ref64 = np.stack([clean[:n], clean[n : 2 * n], clean[:n]])  # float64
    est32 = np.stack([noisy[:n], noisy[n : 2 * n], clean[:n]]).astype(np.float32)
    expected = [pesq(16000, r, e.astype(np.float64), "wb") for r, e in zip(ref64, est32)]
    with PesqPool(2) as pool:
        pool.MIN_BUFFER_BYTES = 16 * n  # fits one call with 1 pair of rows, not 3
        first, _ = pool(ref64[:1], est32[:1], [n], 16000)
        small = pool._buffer.size
        values, reasons = pool(ref64, est32, [n, n, n], 16000)
        assert pool._buffer.size >= max(2 * small, 12 * n * 3)
        again, _ = pool(ref64[::-1], est32[::-1], [n, n, n], 16000)
    assert first[0] == expected[0]
    np.testing.assert_array_equal(values, expected)
    np.testing.assert_array_equal(again, expected[::-1])
    assert reasons == ["", "", ""]


def test_pool_restarts_after_a_worker_dies(pairs):
    """A killed worker breaks the executor: the pool restarts and later batches score normally."""
    clean, noisy = pairs
    n = 32000
    ref = np.stack([clean[:n], clean[n : 2 * n]]).astype(np.float32)
    est = np.stack([noisy[:n], noisy[n : 2 * n]]).astype(np.float32)
    expected = [
        pesq(16000, r.astype(np.float64), e.astype(np.float64), "wb") for r, e in zip(ref, est)
    ]
    with PesqPool(2) as pool:
        first, _ = pool(ref, est, [n, n], 16000)
        os.kill(next(iter(pool._pool._processes)), signal.SIGKILL)  # e.g. a crash in the C library
        for _ in range(2):
            values, reasons = pool(ref, est, [n, n], 16000)
            np.testing.assert_array_equal(values, expected)
            assert reasons == ["", ""]
    np.testing.assert_array_equal(first, expected)


def test_batch_that_breaks_the_pool_twice_is_skipped(pairs, monkeypatch):
    """Retried once; then the batch's items are NaN with a reason; the next batch still scores."""
    clean, noisy = pairs
    n = 16000
    ref, est = clean[None, :n].astype(np.float32), noisy[None, :n].astype(np.float32)
    expected = pesq(16000, ref[0].astype(np.float64), est[0].astype(np.float64), "wb")
    attempts = []

    def broken(*args):
        attempts.append(args)
        raise BrokenProcessPool("a worker died")

    with PesqPool(2) as pool:
        monkeypatch.setattr(pool, "_map", broken)
        values, reasons = pool(ref, est, [n], 16000)
        assert len(attempts) == 2 and np.isnan(values[0]) and reasons == [WORKER_DIED]
        monkeypatch.undo()
        values, reasons = pool(ref, est, [n], 16000)
    assert values[0] == expected and reasons == [""]
