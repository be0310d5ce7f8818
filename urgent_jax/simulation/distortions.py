"""The URGENT distortions as pure jax functions on padded batches (REFERENCE.md §2.3-§2.10).

Every function takes signals [B, T] padded with zeros and `lengths` [B], parameters as [B] arrays, and
returns [B, T] with zeros beyond each length. Nothing branches in Python on parameter values, so each
function jits once per (batch shape, sample rate) and vmaps. Wind-noise mixing lives in `wind.py`, the
codec (the only host callback) in `codec.py`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from urgent_jax.audio.activity import active_power
from urgent_jax.audio.filters import fft_convolve, filtfilt_fir, highpass_taps, next_fast_len
from urgent_jax.audio.levels import length_mask, peak


def _mask(x, lengths):
    return jnp.where(length_mask(lengths, x.shape[-1]), x, 0.0)


# --- source preparation --------------------------------------------------------------------------


def highpass(speech, lengths, sample_rate: int):
    """The reference's 70 Hz linear-phase high-pass on source speech, applied zero-phase (§2.9)."""
    return filtfilt_fir(speech, highpass_taps(sample_rate), lengths)


def early_rir(rir, rir_lengths, sample_rate: int, early_s: float = 0.05, level_ratio: float = 0.1):
    """Early part of each RIR (§2.4): zero every sample from n0 + int(early_s * fs) on, where n0 is the
    first index whose magnitude exceeds level_ratio times the peak. rir [B, Tr]."""
    mag = jnp.abs(_mask(rir, rir_lengths))
    above = mag > level_ratio * jnp.max(mag, axis=-1, keepdims=True)
    n0 = jnp.argmax(above, axis=-1)  # first True (<= argmax |h| by construction)
    stop = n0 + int(early_s * sample_rate)
    return jnp.where(jnp.arange(rir.shape[-1]) < stop[:, None], rir, 0.0)


def reverberate(speech, lengths, rir, rir_lengths, sample_rate: int):
    """(reverberant, early target): full convolution with the RIR and with its early part, both
    truncated to the speech length (§2.3 step 4, §2.4). One forward FFT of the speech serves both."""
    rir = _mask(rir, rir_lengths)
    early = early_rir(rir, rir_lengths, sample_rate)
    both = fft_convolve(speech[:, None, :], jnp.stack([rir, early], axis=1), mode="truncated")
    return _mask(both[:, 0], lengths), _mask(both[:, 1], lengths)


def align_noise(key, noise, noise_lengths, lengths, num_samples: int):
    """Noise of each example cropped or wrap-padded to its speech length (§2.5), [B, num_samples].

    Shorter noise: periodic extension with the original starting at a random offset in
    [0, L_s - L_n); longer noise: a random segment starting in [0, L_n - L_s).
    """
    noise_lengths = jnp.maximum(jnp.asarray(noise_lengths, jnp.int32), 1)
    lengths = jnp.asarray(lengths, jnp.int32)
    span = jnp.abs(lengths - noise_lengths)
    u = jax.random.uniform(key, lengths.shape)
    offset = jnp.minimum((u * span).astype(jnp.int32), jnp.maximum(span - 1, 0))
    t = jnp.arange(num_samples)[None, :]
    shorter = (noise_lengths < lengths)[:, None]
    idx = jnp.where(shorter, jnp.mod(t - offset[:, None], noise_lengths[:, None]), t + offset[:, None])
    idx = jnp.clip(idx, 0, noise.shape[-1] - 1)
    return _mask(jnp.take_along_axis(noise, idx, axis=-1), lengths)


def snr_scale(speech, noise, lengths, snr_db):
    """Gain for `noise` so that speech/noise active powers are snr_db apart (§2.5), [B]."""
    p_speech = active_power(speech, lengths)
    p_noise = active_power(noise, lengths)
    return 10.0 ** (-snr_db / 20.0) * jnp.sqrt(p_speech) / jnp.sqrt(jnp.maximum(p_noise, 1e-10))


# --- augmentations -------------------------------------------------------------------------------

# Emulated anti-aliasing responses of the four official resampling methods, as (pass-band edge,
# stop-band edge) in units of the new Nyquist frequency, with a raised-cosine transition between:
# kaiser_best (resampy, rolloff 0.9476, sharp), kaiser_fast (resampy, rolloff 0.85), scipy (FFT
# resampling: a brick wall) and polyphase (scipy.resample_poly's short Kaiser(5) filter: wide). All
# reach zero at the new Nyquist, so nothing above it survives (the round trip's aliases and images
# are not modelled).
BANDWIDTH_EDGES = np.array([[0.94, 1.0], [0.85, 1.0], [0.98, 1.0], [0.78, 1.0]], np.float32)
_GUARD = 4096  # zero padding (samples) so the circular filtering does not wrap around


def bandwidth_limit(x, lengths, sample_rate: int, method, fs_new):
    """Band-limit to an effective rate fs_new < fs (§2.7) with a zero-phase frequency-domain filter.

    method [B] indexes BANDWIDTH_EDGES (-1 or fs_new >= fs: unchanged); fs_new [B] in Hz.
    """
    t = x.shape[-1]
    n = next_fast_len(t + _GUARD)
    freqs = jnp.fft.rfftfreq(n, 1.0 / sample_rate)[None, :]
    edges = jnp.asarray(BANDWIDTH_EDGES)[jnp.clip(method, 0, 3)]  # [B, 2]
    nyq = fs_new.astype(jnp.float32)[:, None] / 2.0
    f_pass, f_stop = edges[:, :1] * nyq, edges[:, 1:] * nyq
    ramp = jnp.clip((freqs - f_pass) / (f_stop - f_pass), 0.0, 1.0)
    gain = 0.5 * (1.0 + jnp.cos(jnp.pi * ramp))
    y = jnp.fft.irfft(jnp.fft.rfft(x, n=n) * gain, n=n)[..., :t]
    active = (method >= 0) & (fs_new < sample_rate)
    return _mask(jnp.where(active[:, None], y, x), lengths)


def _order_key(x):
    """float32 -> int32 with the same order (for exact selection by bisection on integers)."""
    i = jax.lax.bitcast_convert_type(x, jnp.int32)
    return jnp.where(i < 0, i ^ jnp.int32(0x7FFFFFFF), i)


def _from_order_key(k):
    i = jnp.where(k < 0, k ^ jnp.int32(0x7FFFFFFF), k)
    return jax.lax.bitcast_convert_type(i, jnp.float32)


def order_statistics(x, lengths, ranks):
    """The ranks[b, k]-th smallest (0-based) valid sample of each example: [B, T], [B, K] -> [B, K].

    Exact selection without sorting (XLA's CPU sort is ~20x slower than this): bisection over the
    order-preserving int32 image of float32, 32 counting passes.
    """
    valid = length_mask(lengths, x.shape[-1])
    big = jnp.iinfo(jnp.int32).max
    keys = jnp.where(valid, _order_key(x), big)
    lo = jnp.broadcast_to(jnp.min(keys, -1, keepdims=True), ranks.shape)
    hi = jnp.broadcast_to(jnp.max(jnp.where(valid, keys, -big), -1, keepdims=True), ranks.shape)

    def halve(_, bounds):
        lo, hi = bounds
        mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)  # floor((lo + hi) / 2) without overflow
        count = jnp.sum(keys[:, None, :] <= mid[:, :, None], axis=-1, dtype=jnp.int32)
        enough = count >= ranks + 1
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    lo, _ = jax.lax.fori_loop(0, 32, halve, (lo, hi))
    return _from_order_key(lo)


def quantiles(x, lengths, q):
    """Per-example linear-interpolation quantiles (numpy's default) over the valid samples.
    q [B, K] in [0, 1] -> [B, K]."""
    x = jnp.asarray(x, jnp.float32)
    n = jnp.maximum(jnp.asarray(lengths), 1)[:, None]
    pos = q * (n - 1).astype(jnp.float32)
    rank = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, n - 1)
    frac = pos - rank
    low = order_statistics(x, lengths, rank)
    # The next order statistic: equal to `low` if it is repeated, else the smallest larger sample.
    valid = length_mask(lengths, x.shape[-1])
    at_most = jnp.sum(valid[:, None, :] & (x[:, None, :] <= low[:, :, None]), -1)
    larger = jnp.min(jnp.where(valid[:, None, :] & (x[:, None, :] > low[:, :, None]), x[:, None, :],
                               jnp.inf), axis=-1)
    high = jnp.where((at_most >= rank + 2) | (rank + 1 >= n), low, larger)
    return low + frac * (high - low)


def clip_quantiles(x, lengths, q_min, q_max):
    """Clip each example to its own [q_min, q_max] sample quantiles (§2.7)."""
    bounds = quantiles(x, lengths, jnp.stack([q_min, q_max], axis=-1))
    return _mask(jnp.clip(x, bounds[:, :1], bounds[:, 1:]), lengths)


def packet_loss(x, lengths, lost, sample_rate: int, packet_duration_ms: int = 20):
    """Zero the samples of lost packets: packet i spans [i * P, (i + 1) * P), P = 20 ms (§2.7).
    lost [B, num_packets] bool."""
    packet = packet_duration_ms * sample_rate // 1000
    idx = jnp.minimum(jnp.arange(x.shape[-1]) // packet, lost.shape[-1] - 1)
    return _mask(jnp.where(lost[:, idx], 0.0, x), lengths)


def peak_normalize(signals, lengths, target_peak: float = 0.9, floor: float = 1e-6):
    """Scale a tuple of [B, T] signals by one gain per example so that the largest peak among them
    is target_peak (§2.3 step 9). Returns (scaled signals, gain [B])."""
    peaks = jnp.stack([peak(s, lengths) for s in signals], axis=0).max(axis=0)
    gain = target_peak / jnp.maximum(peaks, floor)
    return tuple(s * gain[:, None] for s in signals), gain
