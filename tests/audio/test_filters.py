"""FIR design vs scipy.signal.firwin2, FFT convolution vs numpy, zero-phase filtering vs filtfilt."""

import jax
import numpy as np
import pytest
import scipy.signal

from urgent_jax.audio import filters as F
from urgent_jax.audio.resample import SAMPLE_RATES

EXPECTED_TAPS = {8000: 243, 16000: 485, 22050: 669, 24000: 727, 32000: 969, 44100: 1337, 48000: 1455}


@pytest.mark.parametrize("fs", SAMPLE_RATES)
def test_highpass_taps_match_firwin2(fs):
    taps = F.highpass_taps(fs)
    assert len(taps) == EXPECTED_TAPS[fs]
    ref = scipy.signal.firwin2(len(taps), [0, 55, 70, fs / 2], [0, 0, 1, 1], fs=fs)
    np.testing.assert_allclose(taps, ref, atol=1e-12)


def test_firwin2_with_step_and_other_windows():
    for window in ("hamming", "hann", "boxcar"):
        ref = scipy.signal.firwin2(101, [0, 0.3, 0.3, 1], [1, 1, 0, 0], window=window)
        ours = F.firwin2(101, [0, 0.3, 0.3, 1], [1, 1, 0, 0], sample_rate=2.0, window=window)
        np.testing.assert_allclose(ours, ref, atol=1e-12)
    with pytest.raises(ValueError):
        F.firwin2(100, [0, 0.5, 1], [1, 1, 1], sample_rate=2.0)


def test_highpass_response():
    fs = 16000
    w, h = scipy.signal.freqz(F.highpass_taps(fs), worN=1 << 16, fs=fs)
    # The reference's tap count gives a ~100 Hz wide transition, not the nominal 15 Hz.
    mag = np.abs(h)
    assert mag[0] < 0.005 and mag[np.searchsorted(w, 20.0)] < 0.05
    assert 0.5 < mag[np.searchsorted(w, 70.0)] < 0.7
    assert np.abs(mag[w > 250] - 1).max() < 1e-3


@pytest.mark.parametrize("mode", ["full", "same", "truncated"])
def test_fft_convolve_matches_numpy(mode, rng):
    x = rng.standard_normal((3, 1000)).astype(np.float32)
    h = rng.standard_normal((3, 257)).astype(np.float32)
    ours = np.asarray(F.fft_convolve(x, h, mode=mode))
    full = np.stack([np.convolve(a, b) for a, b in zip(x, h)])
    ref = {"full": full, "same": np.stack([np.convolve(a, b, "same") for a, b in zip(x, h)]),
           "truncated": full[:, :1000]}[mode]
    np.testing.assert_allclose(ours, ref, atol=1e-4 * np.abs(ref).max())


def test_fft_convolve_broadcast_rir(rng):
    x = rng.standard_normal((4, 16000)).astype(np.float32)
    rir = rng.standard_normal(8000).astype(np.float32) * np.exp(-np.arange(8000) / 800)
    y = np.asarray(jax.jit(lambda a, b: F.fft_convolve(a, b, "truncated"))(x, rir))
    ref = scipy.signal.fftconvolve(x, rir[None], axes=-1)[:, :16000]
    np.testing.assert_allclose(y, ref, atol=1e-4 * np.abs(ref).max())


def test_next_fast_len():
    for n in (1, 7, 97, 1000, 12345, 240001):
        m = F.next_fast_len(n)
        assert m >= n and m == scipy.fft.next_fast_len(n, real=True) or _is_5_smooth(m)


def _is_5_smooth(m):
    for p in (2, 3, 5):
        while m % p == 0:
            m //= p
    return m == 1


@pytest.mark.parametrize("fs", [8000, 16000, 48000])
def test_filtfilt_matches_scipy(fs, rng):
    taps = F.highpass_taps(fs)
    x = (rng.standard_normal(fs) + 0.3).astype(np.float64)  # DC offset exercises the initial conditions
    ours = np.asarray(F.filtfilt_fir(x.astype(np.float32), taps))
    ref = scipy.signal.filtfilt(taps, 1.0, x)
    assert np.abs(ours - ref).max() < 2e-5 * np.abs(ref).max() + 1e-5


def test_filtfilt_with_lengths_equals_unpadded(rng):
    taps = F.highpass_taps(8000)
    lengths = np.array([8000, 5000, 3000])
    x = np.zeros((3, 8000), np.float32)
    for i, n in enumerate(lengths):
        x[i, :n] = rng.standard_normal(n)
    out = np.asarray(jax.jit(lambda a, n: F.filtfilt_fir(a, taps, n))(x, lengths))
    for i, n in enumerate(lengths):
        ref = scipy.signal.filtfilt(taps, 1.0, x[i, :n].astype(np.float64))
        assert np.abs(out[i, :n] - ref).max() < 1e-4
        assert not out[i, n:].any()
