"""Short-time Fourier transform and its inverse, batched over leading axes.

Semantics follow the reference front-end (torch.stft / ESPnet STFTEncoder, REFERENCE.md §3.1): periodic
Hann window of `win_length` centred inside `n_fft`, optional centring with reflect padding of `n_fft // 2`
on both sides, one-sided spectrum, no normalisation. Spectra are laid out time-major,
`[..., frames, bins]`, which is what the models consume.

Window, frame indices and the overlap-add envelope are numpy constants built at trace time, so every
function here is jit- and vmap-friendly with static `n_fft`, `hop_length` and signal length.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np


def hann_window(win_length: int, periodic: bool = True) -> np.ndarray:
    """Hann window (float64). periodic=True matches torch.hann_window / scipy 'hann' with fftbins."""
    if win_length == 1:
        return np.ones(1)
    n = np.arange(win_length)
    denom = win_length if periodic else win_length - 1
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / denom)


def _window(window: str | np.ndarray, win_length: int, n_fft: int) -> np.ndarray:
    """Analysis window of length n_fft (a shorter window is zero-padded symmetrically, as torch)."""
    if isinstance(window, str):
        if window == "hann":
            w = hann_window(win_length)
        elif window in ("boxcar", "rect", "rectangular", "ones"):
            w = np.ones(win_length)
        elif window == "hamming":
            w = 0.54 - 0.46 * np.cos(2.0 * np.pi * np.arange(win_length) / win_length)
        else:
            raise ValueError(f"unknown window {window!r}; use 'hann', 'hamming', 'boxcar' or an array")
    else:
        w = np.asarray(window, dtype=np.float64)
        if w.shape != (win_length,):
            raise ValueError(f"window has shape {w.shape}, expected ({win_length},)")
    if win_length > n_fft:
        raise ValueError(f"win_length {win_length} > n_fft {n_fft}")
    left = (n_fft - win_length) // 2
    return np.pad(w, (left, n_fft - win_length - left))


def num_frames(num_samples: int, n_fft: int, hop_length: int, center: bool = True) -> int:
    """Number of STFT frames for a signal of num_samples (the torch.stft count)."""
    padded = num_samples + (2 * (n_fft // 2) if center else 0)
    if padded < n_fft:
        return 0
    return 1 + (padded - n_fft) // hop_length


def frame_lengths(lengths, n_fft: int, hop_length: int, center: bool = True):
    """Per-example valid frame counts for sample `lengths` (jnp int array), as the reference masks them."""
    pad = 2 * (n_fft // 2) if center else 0
    return jnp.maximum(1 + (lengths + pad - n_fft) // hop_length, 0)


@functools.lru_cache(maxsize=128)
def _frame_index(num_padded: int, n_fft: int, hop_length: int) -> np.ndarray:
    count = 1 + (num_padded - n_fft) // hop_length
    return np.arange(count)[:, None] * hop_length + np.arange(n_fft)[None, :]


def frame(x, frame_length: int, hop_length: int):
    """Frames of x without padding: [..., T] -> [..., 1 + (T - frame_length) // hop, frame_length]."""
    x = jnp.asarray(x)
    if x.shape[-1] < frame_length:
        raise ValueError(f"signal of {x.shape[-1]} samples is shorter than one frame ({frame_length})")
    if frame_length % hop_length == 0:
        # Gather-free framing: split into hop-sized chunks and stack shifted views (a stack on a
        # new axis fuses into one loop with its consumers; a concatenate is a separate pass).
        r = frame_length // hop_length
        count = 1 + (x.shape[-1] - frame_length) // hop_length
        chunks = x[..., : (count + r - 1) * hop_length]
        chunks = chunks.reshape(*x.shape[:-1], count + r - 1, hop_length)
        parts = [chunks[..., i : i + count, :] for i in range(r)]
        return jnp.stack(parts, axis=-2).reshape(*x.shape[:-1], count, frame_length)
    return x[..., _frame_index(x.shape[-1], frame_length, hop_length)]


def stft(
    x,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    window: str | np.ndarray = "hann",
    center: bool = True,
    pad_mode: str = "reflect",
):
    """STFT of x [..., T] -> complex64 [..., frames, n_fft // 2 + 1].

    center=True pads n_fft // 2 samples on both sides with `pad_mode` ('reflect' as torch's default and
    the reference front-end, or 'constant' for zeros as librosa 0.9's default).
    """
    win_length = n_fft if win_length is None else win_length
    w = jnp.asarray(_window(window, win_length, n_fft), dtype=jnp.float32)
    x = jnp.asarray(x, dtype=jnp.float32)
    if center:
        pad = n_fft // 2
        if pad_mode == "reflect" and x.shape[-1] <= pad:
            raise ValueError(f"reflect padding of {pad} needs more than {pad} samples, got {x.shape[-1]}")
        widths = [(0, 0)] * (x.ndim - 1) + [(pad, pad)]
        x = jnp.pad(x, widths, mode=pad_mode)
    frames = frame(x, n_fft, hop_length)
    return jnp.fft.rfft(frames * w, n=n_fft, axis=-1)


@functools.lru_cache(maxsize=128)
def _ola_envelope(num_frames_: int, n_fft: int, hop_length: int, window_key: bytes) -> np.ndarray:
    w = np.frombuffer(window_key, dtype=np.float64)
    total = n_fft + hop_length * (num_frames_ - 1)
    env = np.zeros(total)
    np.add.at(env, _frame_index(total, n_fft, hop_length), np.broadcast_to(w**2, (num_frames_, n_fft)))
    return env


def overlap_add(frames, hop_length: int):
    """Overlap-add [..., F, N] frames with hop -> [..., N + hop * (F - 1)] (reshape-based, no scatter)."""
    n = frames.shape[-1]
    count = frames.shape[-2]
    r = -(-n // hop_length)  # chunks per frame
    frames = jnp.pad(frames, [(0, 0)] * (frames.ndim - 1) + [(0, r * hop_length - n)])
    chunks = frames.reshape(*frames.shape[:-1], r, hop_length)  # [..., F, r, hop]
    out = jnp.zeros((*frames.shape[:-2], count + r - 1, hop_length), frames.dtype)
    for i in range(r):  # r = ceil(n_fft / hop) is a small static number
        out = out.at[..., i : i + count, :].add(chunks[..., :, i, :])
    out = out.reshape(*out.shape[:-2], (count + r - 1) * hop_length)
    return out[..., : n + hop_length * (count - 1)]


def istft(
    spec,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    window: str | np.ndarray = "hann",
    center: bool = True,
    length: int | None = None,
):
    """Inverse of `stft`: complex [..., frames, n_fft // 2 + 1] -> float32 [..., length].

    Windowed overlap-add divided by the summed squared window (torch.istft semantics). Without `length`
    the output covers every frame minus the centre padding.
    """
    win_length = n_fft if win_length is None else win_length
    w = _window(window, win_length, n_fft)
    count = spec.shape[-2]
    frames = jnp.fft.irfft(spec, n=n_fft, axis=-1).astype(jnp.float32) * jnp.asarray(w, jnp.float32)
    y = overlap_add(frames, hop_length)
    env = _ola_envelope(count, n_fft, hop_length, w.astype(np.float64).tobytes())
    inv_env = np.where(env > 1e-11, 1.0 / np.maximum(env, 1e-11), 0.0).astype(np.float32)
    y = y * inv_env
    start = n_fft // 2 if center else 0
    if length is None:
        end = y.shape[-1] - (n_fft // 2 if center else 0)
        return y[..., start:end]
    y = y[..., start : start + length]
    short = length - y.shape[-1]
    if short > 0:
        y = jnp.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, short)])
    return y


def mask_frames(spec, valid_frames):
    """Zero frames at or beyond each example's valid frame count. spec [B, F, bins], valid_frames [B]."""
    keep = jnp.arange(spec.shape[-2])[None, :] < valid_frames[:, None]
    return spec * keep[..., None]
