"""FIR design (frequency sampling), FFT convolution and zero-phase FIR filtering.

`firwin2` designs a linear-phase FIR by sampling a piecewise-linear gain on a uniform grid, an inverse
real FFT with a linear-phase shift, truncation and a window (the classic frequency-sampling method, with
the grid and window conventions of scipy.signal.firwin2). `highpass_taps` is the reference's 70 Hz
speech high-pass (REFERENCE.md §2.9) and `filtfilt_fir` applies an FIR forward and backward with odd
extension and steady-state initial conditions, the semantics of scipy.signal.filtfilt(b, 1).
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np


def _symmetric_window(name: str, num_taps: int) -> np.ndarray:
    n = np.arange(num_taps)
    if name == "hamming":
        return 0.54 - 0.46 * np.cos(2.0 * np.pi * n / (num_taps - 1))
    if name == "hann":
        return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / (num_taps - 1))
    if name in ("boxcar", "rect"):
        return np.ones(num_taps)
    raise ValueError(f"unknown window {name!r}")


def firwin2(
    num_taps: int,
    freqs_hz,
    gains,
    sample_rate: float,
    window: str = "hamming",
    num_grid: int | None = None,
) -> np.ndarray:
    """Type-I/II linear-phase FIR with piecewise-linear gain through (freqs_hz, gains).

    freqs_hz must start at 0 and end at sample_rate / 2 and be non-decreasing; a repeated frequency
    makes a step. The gain is sampled on num_grid points (default 1 + 2**ceil(log2(num_taps))).
    """
    freqs = np.asarray(freqs_hz, dtype=np.float64) / (sample_rate / 2.0)
    gains = np.asarray(gains, dtype=np.float64)
    if freqs.shape != gains.shape or freqs.ndim != 1:
        raise ValueError("freqs and gains must be 1-D of equal length")
    if freqs[0] != 0 or freqs[-1] != 1:
        raise ValueError("freqs must start at 0 and end at the Nyquist frequency")
    if np.any(np.diff(freqs) < 0):
        raise ValueError("freqs must be non-decreasing")
    if num_taps % 2 == 0 and gains[-1] != 0:
        raise ValueError("an even number of taps (type II) needs zero gain at Nyquist")
    if num_grid is None:
        num_grid = 1 + 2 ** int(math.ceil(math.log2(num_taps)))
    # Split repeated frequencies by a tiny amount so that interpolation makes a step.
    freqs = freqs.copy()
    eps = np.finfo(float).eps * 100
    for k in range(len(freqs) - 1):
        if freqs[k] == freqs[k + 1]:
            freqs[k] -= eps
            freqs[k + 1] += eps
    grid = np.linspace(0.0, 1.0, num_grid)
    desired = np.interp(grid, freqs, gains)
    shift = np.exp(-0.5 * (num_taps - 1) * 1j * np.pi * grid)
    impulse = np.fft.irfft(desired * shift)
    return impulse[:num_taps] * _symmetric_window(window, num_taps)


def highpass_num_taps(sample_rate: int, transition_hz: float = 15.0) -> int:
    """Tap count of the reference speech high-pass: max(int(10 fs / (22 * 15)), 101), made odd."""
    n = max(int(10 * sample_rate / (22 * transition_hz)), 101)
    return n + 1 - n % 2


@functools.lru_cache(maxsize=16)
def highpass_taps(sample_rate: int, cutoff_hz: float = 70.0, transition_hz: float = 15.0) -> np.ndarray:
    """The 70 Hz linear-phase high-pass of REFERENCE.md §2.9 (gain 0 up to 55 Hz, 1 from 70 Hz)."""
    n = highpass_num_taps(sample_rate, transition_hz)
    f = [0.0, cutoff_hz - transition_hz, cutoff_hz, sample_rate / 2.0]
    return firwin2(n, f, [0.0, 0.0, 1.0, 1.0], sample_rate)


def next_fast_len(n: int) -> int:
    """Smallest 5-smooth integer >= n (a fast FFT size)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def fft_convolve(x, h, mode: str = "full"):
    """Linear convolution along the last axis with batch broadcasting.

    x [..., T], h [..., K] -> 'full' [..., T + K - 1], 'same' [..., T] (centred, as numpy),
    'truncated' [..., T] (the first T samples: causal filtering, e.g. RIR convolution).
    """
    x = jnp.asarray(x, jnp.float32)
    h = jnp.asarray(h, jnp.float32)
    t, k = x.shape[-1], h.shape[-1]
    n_full = t + k - 1
    n = next_fast_len(n_full)
    y = jnp.fft.irfft(jnp.fft.rfft(x, n=n) * jnp.fft.rfft(h, n=n), n=n)[..., :n_full]
    if mode == "full":
        return y
    if mode == "truncated":
        return y[..., :t]
    if mode == "same":
        start = (k - 1) // 2
        return y[..., start : start + t]
    raise ValueError(f"mode must be 'full', 'same' or 'truncated', got {mode!r}")


@functools.lru_cache(maxsize=32)
def _zero_phase_response(taps_key: bytes, n_fft: int) -> np.ndarray:
    """rfft of h * reversed(h), computed once on the host in float64."""
    h = np.frombuffer(taps_key, dtype=np.float64)
    return np.fft.rfft(np.convolve(h, h[::-1]), n_fft).astype(np.complex64)


def filtfilt_fir(x, taps, lengths=None):
    """Zero-phase FIR filtering of x [..., T] (scipy.signal.filtfilt(taps, 1, x) semantics).

    Odd extension of 3 * len(taps) samples at both ends of each example's valid region, steady-state
    initial conditions for both passes. With `lengths` ([...] ints) each example is filtered over its own
    first `lengths` samples and the output is zero beyond; without, the whole axis is the signal.
    Signals shorter than 3 * len(taps) + 1 samples are not supported (scipy raises; here the odd
    extension is clamped to the signal).
    """
    x = jnp.asarray(x, jnp.float32)
    taps_np = np.asarray(taps, dtype=np.float64)
    k = len(taps_np)
    pad = 3 * k
    t = x.shape[-1]
    lead = x.shape[:-1]
    if lengths is None:
        lengths = jnp.full(lead, t, jnp.int32)
    lengths = jnp.asarray(lengths, jnp.int32)
    last = jnp.maximum(lengths - 1, 0)[..., None]  # [..., 1]
    pos = jnp.arange(-pad, t + pad)  # extended coordinates
    first_val = x[..., :1]
    last_val = jnp.take_along_axis(x, last, axis=-1)
    left_idx = jnp.clip(-pos, 0, t - 1)
    right_idx = jnp.clip(2 * last - pos, 0, t - 1)
    mid_idx = jnp.clip(pos, 0, t - 1)
    left = 2.0 * first_val - jnp.take(x, left_idx, axis=-1)
    right = 2.0 * last_val - jnp.take_along_axis(x, jnp.broadcast_to(right_idx, (*lead, pos.size)), -1)
    mid = jnp.take(x, mid_idx, axis=-1)
    ext = jnp.where(pos < 0, left, jnp.where(pos <= last, mid, right))  # [..., T + 2 pad]
    # Forward and backward passes fused into one convolution with h * reversed(h) (length 2k - 1):
    # with steady-state initial conditions the forward pass sees the signal preceded by copies of its
    # first sample, and the backward pass's right-hand initial condition only reaches the last k - 1
    # extended samples, all inside the discarded 3k padding. So the kept outputs are exact.
    z = jnp.concatenate([jnp.broadcast_to(ext[..., :1], (*lead, k - 1)), ext], axis=-1)
    n_full = z.shape[-1] + 2 * k - 2
    n_fft = next_fast_len(n_full)
    response = _zero_phase_response(taps_np.tobytes(), n_fft)
    y = jnp.fft.irfft(jnp.fft.rfft(z, n=n_fft) * response, n=n_fft)
    y2 = y[..., 2 * (k - 1) : 2 * (k - 1) + ext.shape[-1]]
    out = y2[..., pad : pad + t]
    return jnp.where(jnp.arange(t) < lengths[..., None], out, 0.0)
