"""Spectral helpers: mel filterbanks (librosa-compatible Slaney and HTK) and magnitude compression."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np


def hz_to_mel(freqs_hz, htk: bool = False):
    """Hz -> mel. HTK: 2595 log10(1 + f / 700). Slaney: linear below 1 kHz, logarithmic above."""
    f = np.asarray(freqs_hz, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    f_sp = 200.0 / 3.0
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)


def mel_to_hz(mels, htk: bool = False):
    """mel -> Hz, the inverse of hz_to_mel."""
    m = np.asarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=32)
def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    htk: bool = False,
    norm: str | None = "slaney",
) -> np.ndarray:
    """Triangular mel filterbank [n_mels, n_fft // 2 + 1] (float32), as librosa.filters.mel.

    norm='slaney' scales each triangle to unit area (2 / band width in Hz); None leaves peaks at 1.
    """
    if fmax is None:
        fmax = sample_rate / 2.0
    if norm not in ("slaney", None):
        raise ValueError(f"norm must be 'slaney' or None, got {norm!r}")
    fft_freqs = np.arange(1 + n_fft // 2) * (sample_rate / n_fft)  # also right for odd n_fft
    mel_pts = np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2)
    hz_pts = mel_to_hz(mel_pts, htk)
    widths = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (hz_pts[2:] - hz_pts[:-2]))[:, None]
    return weights.astype(np.float32)


def mel_spectrogram(power_spec, sample_rate: int, n_fft: int, **mel_kwargs):
    """Apply a mel filterbank to a power (or magnitude) spectrogram [..., frames, bins] -> [..., frames, n_mels]."""
    fb = jnp.asarray(mel_filterbank(sample_rate, n_fft, **mel_kwargs))
    return jnp.einsum("...tf,mf->...tm", power_spec, fb, precision="highest")


def compress_spec(spec, exponent: float = 0.667, scale: float = 0.065):
    """Magnitude compression scale * |X|^exponent * exp(j angle X) (FlowSE front-end, REFERENCE.md §3.1)."""
    mag = jnp.abs(spec)
    phase = jnp.where(mag > 0, spec / jnp.where(mag > 0, mag, 1.0), 0.0)
    return scale * mag**exponent * phase


def decompress_spec(spec, exponent: float = 0.667, scale: float = 0.065):
    """Inverse of compress_spec: (|Y| / scale)^(1 / exponent) * exp(j angle Y)."""
    mag = jnp.abs(spec)
    phase = jnp.where(mag > 0, spec / jnp.where(mag > 0, mag, 1.0), 0.0)
    return (mag / scale) ** (1.0 / exponent) * phase
