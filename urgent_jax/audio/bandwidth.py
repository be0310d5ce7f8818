"""Effective-bandwidth estimate and the matching target sampling rate (REFERENCE.md §5.1).

The URGENT utilities estimate how much of a file's spectrum carries signal: an STFT at the file's
own rate with n_fft = int(512 fs / 16000) and hop = int(256 fs / 16000) (32 ms / 16 ms), periodic
Hann window, centred frames with reflect padding (torch.stft defaults), power |X|^2 averaged over
frames per bin. The bandwidth is the frequency of the highest bin whose mean power exceeds the
peak mean power minus 50 dB; the target rate is the smallest URGENT rate of at least twice that.

Bin k sits at k fs / n_fft Hz (the rfft frequency; for odd n_fft, 22.05 kHz, the last bin is just
below fs / 2). Mono only: callers pass channel 0 (the reference takes the minimum over channels).

`estimate_bandwidth` works on padded batches [B, T] with lengths [B]: each example is framed as if
it had only its valid samples (its own reflect padding at the end). Rates are static; compiled
once per (B, T, sample_rate).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from urgent_jax.audio.resample import SAMPLE_RATES

THRESHOLD_DB = -50.0  # relative to the peak mean power over bins
REFERENCE_RATE = 16000  # Hz: n_fft = 512 and hop = 256 at this rate


def bandwidth_fft_sizes(sample_rate: int) -> tuple[int, int]:
    """(n_fft, hop_length) of the bandwidth STFT at sample_rate Hz (32 ms / 16 ms, truncated)."""
    n_fft = int(512 * sample_rate / REFERENCE_RATE)
    hop_length = int(256 * sample_rate / REFERENCE_RATE)
    return n_fft, hop_length


def target_sample_rate(bandwidth_hz, sample_rates=SAMPLE_RATES):
    """Smallest rate of `sample_rates` with 2 * bandwidth_hz <= rate, else the largest (host; scalar
    or array)."""
    rates = np.sort(np.asarray(sample_rates, np.int64))
    bw = np.asarray(bandwidth_hz, np.float64)
    index = np.searchsorted(rates, 2.0 * bw, side="left")
    out = rates[np.minimum(index, len(rates) - 1)]
    return int(out) if out.ndim == 0 else out


def num_stft_frames(num_samples, n_fft: int, hop_length: int):
    """Frames of torch.stft(center=True) on num_samples samples: the signal padded by n_fft // 2
    on each side, 1 + (num_samples + 2 (n_fft // 2) - n_fft) // hop_length. For even n_fft that is
    1 + num_samples // hop_length; for odd n_fft (22.05 / 44.1 kHz: 705 / 1411) the padding is one
    sample short of n_fft, so 1 + (num_samples - 1) // hop_length (one frame fewer whenever
    num_samples is a multiple of the hop)."""
    return 1 + (num_samples + 2 * (n_fft // 2) - n_fft) // hop_length


def _periodic_hann(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


def mean_power_spectrum(x, lengths, sample_rate: int):
    """Mean |STFT|^2 over each example's frames: x [B, T], lengths [B] -> [B, n_fft // 2 + 1]."""
    x = jnp.asarray(x, jnp.float32)
    batch, num_samples = x.shape
    lengths = jnp.clip(jnp.asarray(lengths, jnp.int32), 1, num_samples)
    n_fft, hop = bandwidth_fft_sizes(sample_rate)
    pad = n_fft // 2
    # Centred frames: padded index j reads sample j - pad, reflected at 0 and at length - 1.
    max_frames = num_stft_frames(num_samples, n_fft, hop)
    pos = jnp.arange(max_frames)[:, None] * hop + jnp.arange(n_fft)[None, :] - pad  # [F, n_fft]
    last = (lengths - 1)[:, None, None]  # [B, 1, 1]
    src = jnp.abs(pos)[None]  # reflect at the start
    src = jnp.where(src > last, 2 * last - src, src)  # reflect at the end (torch needs T > pad)
    src = jnp.clip(src, 0, num_samples - 1)
    frames = jnp.take_along_axis(x[:, None, :], src.reshape(batch, 1, -1), axis=-1)
    frames = frames.reshape(batch, max_frames, n_fft) * _periodic_hann(n_fft)
    power = jnp.abs(jnp.fft.rfft(frames, axis=-1)) ** 2  # [B, F, K]
    num_frames = num_stft_frames(lengths, n_fft, hop)
    valid = jnp.arange(max_frames)[None, :] < num_frames[:, None]
    total = jnp.sum(jnp.where(valid[..., None], power, 0.0), axis=1)
    return total / num_frames[:, None].astype(jnp.float32)


@functools.partial(jax.jit, static_argnames="sample_rate")
def estimate_bandwidth(x, lengths, sample_rate: int):
    """Effective bandwidth in Hz [B] (float32) of a padded batch x [B, T] at sample_rate Hz.

    0 for an all-zero example (no bin exceeds a zero threshold).
    """
    mean_power = mean_power_spectrum(x, lengths, sample_rate)  # [B, K]
    n_fft, _ = bandwidth_fft_sizes(sample_rate)
    threshold = jnp.max(mean_power, axis=-1, keepdims=True) * 10.0 ** (THRESHOLD_DB / 10.0)
    above = mean_power > threshold
    num_bins = mean_power.shape[-1]
    highest = jnp.max(jnp.where(above, jnp.arange(num_bins)[None, :], 0), axis=-1)
    return highest.astype(jnp.float32) * (sample_rate / n_fft)
