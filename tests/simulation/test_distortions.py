"""Per-distortion property and reference checks (REFERENCE.md §2.3-§2.10)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from urgent_jax.audio.filters import highpass_taps
from urgent_jax.simulation import distortions as D
from tests.audio.test_activity import reference_mask


def _speechlike(rng, n, fs):
    t = np.arange(n) / fs
    env = (np.sin(2 * np.pi * 3 * t) > 0).astype(float) * 0.9 + 0.05
    voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for f0 in (140.0,) for k in range(1, 12))
    return ((voiced + 0.3 * rng.standard_normal(n)) * env).astype(np.float32)


def _batch(rows, width=None):
    width = width or max(len(r) for r in rows)
    out = np.zeros((len(rows), width), np.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out, np.array([len(r) for r in rows], np.int32)


def test_realised_snr_on_active_regions(rng):
    fs = 16000
    speech, lengths = _batch([_speechlike(rng, n, fs) for n in (32000, 20000, 40000, 9000)])
    noise, noise_lengths = _batch([rng.standard_normal(n).astype(np.float32) * g
                                   for n, g in ((10000, 0.1), (50000, 3.0), (40000, 1.0), (3000, 0.01))])
    snr = np.array([-5.0, 0.0, 7.5, 20.0], np.float32)
    aligned = D.align_noise(jax.random.PRNGKey(0), noise, noise_lengths, lengths, speech.shape[1])
    scaled = np.asarray(aligned * D.snr_scale(speech, aligned, lengths, snr)[:, None])
    for i, n in enumerate(lengths):
        s, v = speech[i, :n].astype(np.float64), scaled[i, :n].astype(np.float64)
        p_s = np.mean(s[reference_mask(s)] ** 2)
        p_n = np.mean(v[reference_mask(v)] ** 2)
        assert abs(10 * np.log10(p_s / p_n) - snr[i]) < 0.2
        assert not scaled[i, n:].any()


def test_noise_wrap_pad_and_crop(rng):
    noise = rng.standard_normal((2, 5000)).astype(np.float32)
    noise_lengths = np.array([3000, 5000])
    lengths = np.array([7000, 2000])
    out = np.asarray(D.align_noise(jax.random.PRNGKey(3), noise, noise_lengths, lengths, 8000))
    # Shorter noise: np.pad(noise, (off, Ls - Ln - off), 'wrap') for some off in [0, Ls - Ln).
    src = noise[0, :3000]
    matches = [o for o in range(4000) if np.array_equal(out[0, :7000], np.pad(src, (o, 4000 - o), "wrap"))]
    assert matches
    # Longer noise: a contiguous segment noise[off : off + Ls], off in [0, Ln - Ls).
    seg = [o for o in range(3000) if np.array_equal(out[1, :2000], noise[1, o : o + 2000])]
    assert len(seg) == 1
    assert not out[0, 7000:].any() and not out[1, 2000:].any()


def test_silent_noise_and_speech_stay_finite():
    speech = np.zeros((2, 4000), np.float32)
    speech[1, :100] = 0.1
    noise = np.zeros((2, 4000), np.float32)
    scale = np.asarray(D.snr_scale(speech, noise, np.array([4000, 4000]), np.array([5.0, 5.0])))
    assert np.all(np.isfinite(scale))


def _reference_early_rir(h, fs):
    a = np.abs(h)
    m = np.argmax(a)
    n0 = np.argmax(a[: m + 1] > 0.1 * a[m])
    out = h.copy()
    out[n0 + int(0.05 * fs):] = 0
    return out


@pytest.mark.parametrize("fs", [8000, 22050, 48000])
def test_reverberation_and_early_rir_target(fs, rng):
    n = fs // 2
    speech, lengths = _batch([_speechlike(rng, n, fs), _speechlike(rng, n // 2, fs)])
    rirs = []
    for delay in (0.003, 0.011):
        r = np.zeros(int(0.4 * fs))
        d = int(delay * fs)
        r[d - 2] = 0.05  # a pre-echo below 10 % of the peak is not the direct path
        r[d] = 1.0
        tail = rng.standard_normal(len(r) - d - 1) * np.exp(-np.arange(len(r) - d - 1) / (0.05 * fs)) * 0.3
        r[d + 1:] = tail
        rirs.append(r.astype(np.float32))
    rir, rir_lengths = _batch(rirs)
    rev, early = D.reverberate(jnp.asarray(speech), lengths, rir, rir_lengths, fs)
    for i in range(2):
        m = lengths[i]
        e_ref = _reference_early_rir(rirs[i].astype(np.float64), fs)
        np.testing.assert_allclose(np.asarray(D.early_rir(rir, rir_lengths, fs))[i, : len(rirs[i])], e_ref, atol=0)
        ref_rev = scipy.signal.convolve(speech[i, :m].astype(np.float64), rirs[i])[:m]
        ref_early = scipy.signal.convolve(speech[i, :m].astype(np.float64), e_ref)[:m]
        np.testing.assert_allclose(np.asarray(rev)[i, :m], ref_rev, atol=2e-4 * np.abs(ref_rev).max())
        np.testing.assert_allclose(np.asarray(early)[i, :m], ref_early, atol=2e-4 * np.abs(ref_early).max())
        assert not np.asarray(rev)[i, m:].any()


def test_highpass_matches_filtfilt(rng):
    fs = 16000
    x, lengths = _batch([_speechlike(rng, 16000, fs), _speechlike(rng, 9000, fs)])
    y = np.asarray(D.highpass(x, lengths, fs))
    for i, n in enumerate(lengths):
        ref = scipy.signal.filtfilt(highpass_taps(fs), 1.0, x[i, :n].astype(np.float64))
        assert np.abs(y[i, :n] - ref).max() < 1e-4


@pytest.mark.parametrize("fs", [16000, 44100, 48000])
def test_bandwidth_limit_removes_energy_above_new_nyquist(fs, rng):
    lower = [r for r in (8000, 16000, 22050, 24000, 32000, 44100) if r < fs]
    rows = 8
    x = rng.standard_normal((rows, fs)).astype(np.float32)  # white: energy at all frequencies
    lengths = np.full(rows, fs, np.int32)
    lengths[1] = fs // 2
    x[1, fs // 2:] = 0
    method = np.arange(rows, dtype=np.int32) % 4
    fs_new = np.array([lower[i % len(lower)] for i in range(rows)], np.int32)
    y = np.asarray(jax.jit(lambda a, n, m, f: D.bandwidth_limit(a, n, fs, m, f))(x, lengths, method, fs_new))
    for i in range(rows):
        n = lengths[i]
        # Hann-windowed (Welch) spectra, so the measurement's own leakage stays below the bound.
        freqs, spec = scipy.signal.welch(y[i, :n], fs, nperseg=2048)
        beyond = spec[freqs > 1.05 * fs_new[i] / 2].sum() / spec.sum()
        assert 10 * np.log10(beyond + 1e-30) < -50, (i, fs_new[i], method[i])
        # The pass band is kept: energy below 0.7 x the new Nyquist is unchanged (within 1 %).
        inband = freqs < 0.7 * fs_new[i] / 2
        _, ref = scipy.signal.welch(x[i, :n], fs, nperseg=2048)
        assert abs(spec[inband].sum() / ref[inband].sum() - 1) < 0.01
    # Method -1 (the official 'none' at 8 kHz) and fs_new == fs leave the signal unchanged.
    same = np.asarray(D.bandwidth_limit(x[:2], lengths[:2], fs, np.array([-1, 0]), np.array([8000, fs])))
    np.testing.assert_array_equal(same, x[:2])


def test_bandwidth_methods_have_different_transition_bands(rng):
    fs, n = 48000, 48000
    x = np.tile(rng.standard_normal(n).astype(np.float32), (4, 1))
    y = np.asarray(D.bandwidth_limit(x, np.full(4, n), fs, np.arange(4), np.full(4, 16000)))
    freqs = np.fft.rfftfreq(n, 1 / fs)
    band = (freqs > 0.8 * 8000) & (freqs < 0.99 * 8000)
    kept = [np.sum(np.abs(np.fft.rfft(r)) ** 2 * band) / np.sum(np.abs(np.fft.rfft(x[0])) ** 2 * band) for r in y]
    # scipy (brick wall) > kaiser_best > kaiser_fast > polyphase in the upper pass band.
    assert kept[2] > kept[0] > kept[1] > kept[3]


def test_clipping_bounds_are_numpy_quantiles(rng):
    x, lengths = _batch([rng.standard_normal(n).astype(np.float32) for n in (1000, 777, 5000, 2)])
    q_min = np.array([0.0, 0.05, 0.1, 0.03], np.float32)
    q_max = np.array([1.0, 0.9, 0.95, 0.97], np.float32)
    y = np.asarray(jax.jit(D.clip_quantiles)(x, lengths, q_min, q_max))
    for i, n in enumerate(lengths):
        lo, hi = np.quantile(x[i, :n], [q_min[i], q_max[i]])
        np.testing.assert_allclose(y[i, :n], np.clip(x[i, :n], lo, hi), atol=1e-6)
        assert not y[i, n:].any()


@pytest.mark.parametrize("fs", [8000, 22050, 44100])
def test_packet_loss_zeros_exactly_the_packet_spans(fs, rng):
    n = fs
    x = (rng.standard_normal((2, n)) + 3.0).astype(np.float32)  # no natural zeros
    packet = 20 * fs // 1000
    lost = np.zeros((2, -(-n // packet)), bool)
    lost[0, [0, 7, 8, 49]] = True
    lost[1, [3, 20]] = True
    y = np.asarray(D.packet_loss(x, np.array([n, n - 100]), lost, fs))
    for i in range(2):
        expected = x[i].copy()
        for p in np.flatnonzero(lost[i]):
            expected[p * 20 * fs // 1000 : (p + 1) * 20 * fs // 1000] = 0
        if i == 1:
            expected[n - 100:] = 0
        np.testing.assert_array_equal(y[i], expected)


def test_peak_normalize_joint(rng):
    a = rng.standard_normal((2, 100)).astype(np.float32)
    b = 3 * rng.standard_normal((2, 100)).astype(np.float32)
    (sa, sb), gain = D.peak_normalize((a, b), np.array([100, 50]))
    assert np.isclose(np.abs(np.asarray(sb)[0]).max(), 0.9, atol=1e-6)
    assert np.isclose(max(np.abs(np.asarray(sa)[1, :50]).max(), np.abs(np.asarray(sb)[1, :50]).max()), 0.9)
    np.testing.assert_allclose(np.asarray(sa) / a, np.asarray(gain)[:, None] * np.ones_like(a), rtol=1e-6)
    (z,), g = D.peak_normalize((np.zeros((1, 10), np.float32),), np.array([10]))
    assert np.isfinite(np.asarray(g)).all()
