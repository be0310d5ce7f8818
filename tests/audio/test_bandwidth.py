"""Bandwidth estimate (REFERENCE.md §5.1) against a numpy implementation written here, on
band-limited noise at several rates: the same top bin and the same target rate, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from urgent_jax.audio.bandwidth import (
    bandwidth_fft_sizes,
    estimate_bandwidth,
    mean_power_spectrum,
    target_sample_rate,
)

RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)


def numpy_bandwidth(x: np.ndarray, fs: int) -> float:
    """§5.1 in numpy: centred reflect-padded periodic-Hann STFT, mean power, -50 dB of the peak."""
    n_fft, hop = int(512 * fs / 16000), int(256 * fs / 16000)
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    num_frames = 1 + (len(padded) - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([padded[i * hop : i * hop + n_fft] * window for i in range(num_frames)])
    power = np.mean(np.abs(np.fft.rfft(frames, axis=-1)) ** 2, axis=0)
    above = np.flatnonzero(power > power.max() * 10 ** (-50 / 10))
    return above.max() * fs / n_fft


def numpy_target_rate(bandwidth_hz: float) -> int:
    for rate in RATES:
        if 2 * bandwidth_hz <= rate:
            return rate
    return 48000


def band_limited_noise(rng, num_samples: int, fs: int, cutoff_hz: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(num_samples))
    spec[np.fft.rfftfreq(num_samples, 1 / fs) > cutoff_hz] = 0
    x = np.fft.irfft(spec, num_samples)
    ramp = np.hanning(2 * (num_samples // 10))  # smooth edges: reflect padding adds no kink
    x[: len(ramp) // 2] *= ramp[: len(ramp) // 2]
    x[-(len(ramp) // 2) :] *= ramp[len(ramp) // 2 :]
    return (0.1 * x).astype(np.float32)


@pytest.mark.parametrize("fs", [16000, 22050, 48000])
def test_bandwidth_matches_numpy_reference(fs):
    rng = np.random.default_rng(fs)
    cutoffs = [c for c in (3000.0, 3900.0, 7000.0, 10500.0, 15000.0, 21000.0) if c < fs / 2]
    lengths = [int(fs * d) for d in np.linspace(0.7, 1.3, len(cutoffs))]
    batch = np.zeros((len(cutoffs), max(lengths)), np.float32)
    for i, (cutoff, n) in enumerate(zip(cutoffs, lengths)):
        batch[i, :n] = band_limited_noise(rng, n, fs, cutoff)
        batch[i, n:] = rng.standard_normal(max(lengths) - n)  # padding must not matter
    ours = np.asarray(estimate_bandwidth(batch, np.array(lengths), fs))
    assert np.all(np.diff(ours) > 0)  # a wider band gives a wider estimate
    for i, (cutoff, n) in enumerate(zip(cutoffs, lengths)):
        ref = numpy_bandwidth(batch[i, :n], fs)
        assert ours[i] == pytest.approx(ref, rel=1e-6), (fs, cutoff)
        assert target_sample_rate(ours[i]) == numpy_target_rate(ref)
        assert abs(ref - cutoff) < 0.05 * cutoff, (fs, cutoff, ref)  # near the true cut-off


def test_target_rate_edges():
    assert target_sample_rate(4000.0) == 8000
    assert target_sample_rate(4000.1) == 16000
    assert target_sample_rate(11025.0) == 22050
    assert target_sample_rate(30000.0) == 48000
    np.testing.assert_array_equal(target_sample_rate(np.array([0.0, 12000.0])), [8000, 24000])


def torch_mean_power(x: np.ndarray, fs: int) -> np.ndarray:
    """Mean |X|^2 per bin of torch.stft as the 2025 utility calls it (centre, reflect, float64)."""
    import torch

    n_fft, hop = int(512 * fs / 16000), int(256 * fs / 16000)
    window = torch.hann_window(n_fft, dtype=torch.float64)
    spec = torch.stft(torch.from_numpy(x.astype(np.float64)), n_fft=n_fft, hop_length=hop,
                      window=window, onesided=True, return_complex=True)  # fmt: skip
    return (spec.real**2 + spec.imag**2).mean(-1).numpy()  # spec [K, frames] -> [K]


@pytest.mark.parametrize("fs", [22050, 44100, 16000])
def test_frame_count_matches_torch_stft_on_hop_multiples(fs):
    """Odd n_fft (705 at 22.05 kHz, 1411 at 44.1 kHz): torch pads n_fft - 1 samples in all, so a
    length that is a multiple of the hop has 1 + (T - 1) // hop frames, not 1 + T // hop. A click
    in the last samples lives only in that extra frame: counting it moved the estimate from ~3 kHz
    to the top bin (target rate 8 kHz -> fs)."""
    n_fft, hop = bandwidth_fft_sizes(fs)
    rng = np.random.default_rng(7)
    lengths = [hop * 40, hop * 41, hop * 40 + 1, hop * 40 - 1]
    batch = np.zeros((len(lengths), max(lengths)), np.float32)
    for i, n in enumerate(lengths):
        batch[i, :n] = band_limited_noise(rng, n, fs, 3000.0)
        batch[i, n - 3 : n] = [0.0, 0.05, 0.0]  # a click at the very end (an edit or a cut)
    ours_power = np.asarray(mean_power_spectrum(batch, np.array(lengths), fs))
    ours_bw = np.asarray(estimate_bandwidth(batch, np.array(lengths), fs))
    freqs = np.fft.rfftfreq(n_fft, 1 / fs)
    for i, n in enumerate(lengths):
        ref = torch_mean_power(batch[i, :n], fs)
        assert ours_power.shape[1] == ref.shape[0]
        # float32 STFT against torch's float64 one: 1e-5 of the peak over every bin
        np.testing.assert_allclose(ours_power[i], ref, rtol=0, atol=1e-5 * ref.max())
        above = np.flatnonzero(ref > ref.max() * 10 ** (-50 / 10))
        assert ours_bw[i] == pytest.approx(freqs[above.max()], rel=1e-6), (fs, n)
        assert target_sample_rate(ours_bw[i]) == numpy_target_rate(freqs[above.max()])
