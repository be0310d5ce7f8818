"""Sample-rate conversion between all seven URGENT rates, against scipy.resample_poly, soxr and the
ideal band-limited signal; filter stop-band >= 80 dB; jit/vmap shapes. The torchaudio-default
resampler (`resample_sinc_hann`) against a numpy implementation of torchaudio's documented algorithm
(`torchaudio_resample_reference`, also used by the Distill-MOS parity tests)."""

import itertools
import math

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
    resample_sinc_hann,
    resample_sinc_hann_numpy,
    resampled_length,
    sinc_hann_resampled_length,
    sinc_hann_resampled_lengths,
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


@pytest.mark.parametrize("orig, new", [(16000, 8000), (8000, 44100), (44100, 16000)])
def test_short_and_empty_signals_match_resample_poly(orig, new, rng):
    # An empty time axis gave ZeroDivisionError; 1-3 samples must still match scipy's length/values.
    up, down, taps = design_resampler(orig, new)
    for shape in ((0,), (2, 0), (1,), (2, 3)):
        x = rng.standard_normal(shape).astype(np.float32)
        ref = scipy.signal.resample_poly(x.astype(np.float64), up, down, axis=-1, window=taps / up)
        y = np.asarray(resample(x, orig, new))
        assert y.shape == ref.shape == (*shape[:-1], resampled_length(shape[-1], orig, new))
        np.testing.assert_allclose(y, ref, atol=1e-5)


@pytest.mark.parametrize("orig,new", [(22050, 8000), (22050, 48000), (48000, 16000), (44100, 48000)])
def test_numpy_twin_matches_jax_resampler(orig, new, rng):
    x = (0.1 * rng.standard_normal((2, 9000))).astype(np.float32)
    np.testing.assert_allclose(resample_numpy(x, orig, new), np.asarray(resample(x, orig, new)), atol=1e-6)


# --- torchaudio's default resampler (sinc_interp_hann) ---------------------------------------------


def torchaudio_resample_reference(x, orig_sr, new_sr, lowpass_filter_width=6, rolloff=0.99):
    """torchaudio.transforms.Resample(orig_sr, new_sr) defaults on one signal [T] -> float32, in numpy.

    From torchaudio's documented algorithm: with o, n the gcd-reduced rates, the band edge is
    b = min(o, n) * rolloff and the half width w = ceil(width * o / b) input samples. Output phase j
    (of n per frame) weights input offset k in [-w, w + o) of the frame with the Hann-windowed sinc
    h(t) = b / o * sinc(t) * cos(pi t / (2 width))^2 at t = clip(b (k / o - j / n), +-width); j / n
    is rounded to float32 (torch's integer division) and the taps are stored in float32. The signal
    is zero padded by w on the left and w + o on the right, frame i starts at input i * o, and the
    output (frames times phases, interleaved) is cut to ceil(n T / o), that ratio rounded to float32
    first as torch does. Sums in float64 here.
    """
    g = math.gcd(orig_sr, new_sr)
    o, n = orig_sr // g, new_sr // g
    base = min(o, n) * rolloff
    w = math.ceil(lowpass_filter_width * o / base)
    phase = (np.arange(n, dtype=np.float32) / np.float32(n)).astype(np.float64)  # j / n
    t = (np.arange(-w, w + o)[None, :] / o - phase[:, None]) * base  # [n, 2 w + o]
    t = np.clip(t, -lowpass_filter_width, lowpass_filter_width)
    taps = np.sinc(t) * np.cos(np.pi * t / (2 * lowpass_filter_width)) ** 2 * base / o
    taps = taps.astype(np.float32).astype(np.float64)
    x = np.asarray(x, np.float64)
    padded = np.concatenate([np.zeros(w), x, np.zeros(w + o)])
    # Frame i = padded[i * o : i * o + 2 w + o], [len // o + 1, 2 w + o].
    frames = np.lib.stride_tricks.sliding_window_view(padded, 2 * w + o)[::o]
    y = (frames @ taps.T).reshape(-1)  # output i * n + j = frame i, phase j
    num_out = math.ceil(np.float32(n * len(x) / o))
    return y[:num_out].astype(np.float32)


TO_16K = [8000, 22050, 44100, 48000]


def test_torchaudio_reference_passes_a_tone_and_stops_aliases():
    # The reference itself: a 1 kHz tone keeps its amplitude and phase; a 14 kHz tone at 48 kHz is
    # >= 60 dB down at 16 kHz (the short Hann-windowed filter leaks just above 8 kHz: -17 dB at 9 kHz).
    for orig in TO_16K:
        t = np.arange(orig // 2) / orig
        y = torchaudio_resample_reference(np.sin(2 * np.pi * 1000.0 * t), orig, 16000)
        ideal = np.sin(2 * np.pi * 1000.0 * np.arange(len(y)) / 16000)
        assert len(y) == 8000
        assert np.abs(y - ideal)[400:-400].max() < 2e-3
    x = np.sin(2 * np.pi * 14000.0 * np.arange(24000) / 48000)
    assert np.abs(torchaudio_resample_reference(x, 48000, 16000))[400:-400].max() < 1e-3


@pytest.mark.parametrize("orig", TO_16K)
def test_sinc_hann_matches_torchaudio_reference_on_a_padded_batch(orig, rng):
    # Three examples of different lengths, zero padded: each example's first
    # sinc_hann_resampled_length(n) outputs equal the reference run on that example alone.
    num_samples = [int(0.3 * orig), int(0.21 * orig) + 1, int(0.05 * orig) + 7]
    clips = [0.3 * rng.standard_normal(n).astype(np.float32) for n in num_samples]
    batch = np.zeros((3, max(num_samples)), np.float32)
    for i, c in enumerate(clips):
        batch[i, : len(c)] = c
    got = np.asarray(jax.jit(resample_sinc_hann, static_argnums=(1, 2))(batch, orig, 16000))
    assert got.shape == (3, sinc_hann_resampled_length(batch.shape[1], orig, 16000))
    out_lengths = np.asarray(sinc_hann_resampled_lengths(np.array(num_samples), orig, 16000))
    for i, c in enumerate(clips):
        expected = torchaudio_resample_reference(c, orig, 16000)
        assert out_lengths[i] == len(expected) == sinc_hann_resampled_length(len(c), orig, 16000)
        np.testing.assert_allclose(got[i, : len(expected)], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("orig,new", [(8000, 16000), (22050, 16000), (44100, 16000), (48000, 16000),
                                      (16000, 48000)])
def test_sinc_hann_numpy_twin_matches_torchaudio_reference(orig, new, rng):
    # The loaders' host-side version (SQA audio): channels [C, T], lengths not multiples of the
    # rate ratio, and a signal shorter than the filter.
    # Empty and 1-sample signals too, through the jax version as well.
    for n in (int(0.4 * orig) + 3, 37, 1, 0):
        x = (0.3 * rng.standard_normal((2, n))).astype(np.float32)
        expected = np.stack([torchaudio_resample_reference(c, orig, new) for c in x])
        jax_version = np.asarray(resample_sinc_hann(x, orig, new))
        for got in (resample_sinc_hann_numpy(x, orig, new), jax_version):
            assert got.dtype == np.float32 and got.shape == expected.shape
            assert got.shape[-1] == sinc_hann_resampled_length(n, orig, new)
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert np.array_equal(resample_sinc_hann_numpy(x, orig, orig), x)


@pytest.mark.parametrize("orig,new", [(16000, 48000), (44100, 8000), (24000, 32000)])
def test_sinc_hann_other_pairs_and_leading_axes(orig, new, rng):
    x = (0.3 * rng.standard_normal((2, 1, 3001))).astype(np.float32)
    got = np.asarray(resample_sinc_hann(x, orig, new))
    expected = np.stack([torchaudio_resample_reference(r, orig, new) for r in x[:, 0]])
    np.testing.assert_allclose(got[:, 0], expected, rtol=0, atol=1e-6)
    assert np.array_equal(np.asarray(resample_sinc_hann(x, orig, orig)), x)


def test_sinc_hann_lengths_round_like_torch():
    # torchaudio computes the output length ceil(n L / o) from a float32 ratio: for 44.1 and 22.05 kHz
    # input longer than ~4.1 s it is sometimes one below the exact ceiling (e.g. 180697 samples at
    # 44.1 kHz: 65559, not 65560). Integer emulation (jit) == the float32 formula == the static one.
    assert sinc_hann_resampled_length(180697, 44100, 16000) == 65559
    assert resampled_length(180697, 44100, 16000) == 65560
    lengths = np.arange(0, 4_000_000, 997)
    lengths = np.concatenate([np.arange(0, 3000), lengths, [180697, 90569]]).astype(np.int32)
    lengths_of = jax.jit(sinc_hann_resampled_lengths, static_argnums=(1, 2))
    for orig in SAMPLE_RATES:
        for new in (8000, 16000, 48000):
            g = math.gcd(orig, new)
            o, n = orig // g, new // g
            expected = np.ceil((n * lengths / o).astype(np.float32)).astype(np.int64)
            got = np.asarray(lengths_of(lengths, orig, new))
            np.testing.assert_array_equal(got, expected, err_msg=f"{orig} -> {new}")
            for length in (0, 1, 180697, 3_999_999):
                assert sinc_hann_resampled_length(length, orig, new) == math.ceil(
                    np.float32(n * length / o)
                )
