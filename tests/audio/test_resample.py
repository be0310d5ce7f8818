"""Sample-rate conversion between all seven URGENT rates, against scipy.resample_poly, soxr and the
ideal band-limited signal; filter stop-band >= 80 dB; jit/vmap shapes."""

import itertools

import jax
import numpy as np
import pytest
import scipy.signal
import soxr

from urgent_jax.audio.resample import (
    SAMPLE_RATES,
    design_resampler,
    resample,
    resample_numpy,
    resampled_length,
)

PAIRS = [(a, b) for a, b in itertools.product(SAMPLE_RATES, SAMPLE_RATES) if a != b]


def _tones(sr, n, freqs):
    t = np.arange(n) / sr
    env = np.hanning(n)
    return (np.sin(2 * np.pi * np.asarray(freqs)[:, None] * t).sum(0) * env).astype(np.float32)


@pytest.mark.parametrize("orig,new", PAIRS)
def test_band_limited_signal_matches_ideal_and_references(orig, new):
    n = orig // 2  # 0.5 s
    nyq = min(orig, new) / 2
    freqs = [97.0, 441.0, 0.37 * nyq, 0.8 * nyq]
    x = _tones(orig, n, freqs)
    y = np.asarray(resample(x, orig, new))
    assert y.shape == (resampled_length(n, orig, new),)
    up, down, _ = design_resampler(orig, new)
    y_poly = scipy.signal.resample_poly(x, up, down)
    y_soxr = soxr.resample(x, orig, new, "HQ")
    assert len(y) == len(y_poly) == len(y_soxr)
    # Ideal: the same tones evaluated at the new rate (envelope interpolated).
    tb = np.arange(len(y)) / new
    ta = np.arange(n) / orig
    ideal = np.sin(2 * np.pi * np.asarray(freqs)[:, None] * tb).sum(0) * np.interp(tb, ta, np.hanning(n))
    inner = slice(len(y) // 10, -len(y) // 10)
    scale = np.abs(ideal).max()
    assert np.abs(y[inner] - ideal[inner]).max() / scale < 1e-4
    assert np.abs(y[inner] - y_soxr[inner]).max() / scale < 3e-4
    assert np.abs(y[inner] - y_poly[inner]).max() / scale < 5e-3  # resample_poly's own filter is looser


@pytest.mark.parametrize("orig,new", PAIRS)
def test_stopband_attenuation_at_least_80db(orig, new):
    up, down, taps = design_resampler(orig, new)
    n_fft = 1 << 21
    resp = np.abs(np.fft.rfft(taps / up, n_fft))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / (orig * up))
    stop = resp[freqs >= min(orig, new) / 2].max()
    passband = resp[freqs <= 0.85 * min(orig, new) / 2]
    assert 20 * np.log10(stop) <= -80.0
    assert np.abs(passband - 1).max() < 1e-3


def test_alias_rejection_on_downsampling():
    # A tone just above the new Nyquist must vanish (>= 80 dB down) after 48k -> 16k.
    x = _tones(48000, 48000, [8300.0])
    y = np.asarray(resample(x, 48000, 16000))
    assert 20 * np.log10(np.abs(y).max() / np.abs(x).max()) < -80


def test_batch_jit_vmap(rng):
    x = rng.standard_normal((3, 2, 4410)).astype(np.float32)
    f = jax.jit(lambda a: resample(a, 44100, 16000))
    y = np.asarray(f(x))
    assert y.shape == (3, 2, resampled_length(4410, 44100, 16000))
    y_v = np.asarray(jax.vmap(lambda a: resample(a, 44100, 16000))(x))
    y_1 = np.asarray(resample(x[1, 0], 44100, 16000))
    np.testing.assert_allclose(y[1, 0], y_1, atol=1e-6)
    np.testing.assert_allclose(y_v, y, atol=1e-6)


def test_identity_and_round_trip(rng):
    x = _tones(16000, 16000, [300.0, 2000.0, 5000.0])
    assert np.array_equal(np.asarray(resample(x, 16000, 16000)), x)
    back = np.asarray(resample(resample(x, 16000, 48000), 48000, 16000))
    inner = slice(1600, -1600)
    assert np.abs(back[inner] - x[inner]).max() < 1e-4


@pytest.mark.parametrize("orig,new", [(22050, 8000), (22050, 48000), (48000, 16000), (44100, 48000)])
def test_numpy_twin_matches_jax_resampler(orig, new, rng):
    x = (0.1 * rng.standard_normal((2, 9000))).astype(np.float32)
    np.testing.assert_allclose(resample_numpy(x, orig, new), np.asarray(resample(x, orig, new)), atol=1e-6)
