"""Power-based non-silence detection and active power (the reference SNR measure, REFERENCE.md §2.5).

Frames of 1024 samples with shift 512 (no centring, boxcar window), zero-padded so that frames tile the
signal; a frame is active when its mean power exceeds `threshold` times the mean over frames. Each frame's
decision covers its first `frame_shift` samples and the tail repeats the last decision. Signals shorter
than one frame, and all-zero signals, are active everywhere. With `lengths`, each example of a padded
batch is treated as if it had only its valid samples.
"""

from __future__ import annotations

import jax.numpy as jnp

from urgent_jax.audio.levels import length_mask


def non_silence_mask(x, lengths=None, threshold: float = 0.01, frame_length: int = 1024, frame_shift: int = 512):
    """Boolean activity mask [..., T] for x [..., T] (False beyond each example's length)."""
    x = jnp.asarray(x, jnp.float32)
    t = x.shape[-1]
    lengths = jnp.full(x.shape[:-1], t, jnp.int32) if lengths is None else jnp.asarray(lengths, jnp.int32)
    valid = length_mask(lengths, t)
    x = jnp.where(valid, x, 0.0)
    # Frames tiling the padded axis; example i uses its first num_frames_i of them.
    max_frames = max(1, -(-max(t - frame_length, 0) // frame_shift) + 1)
    total = frame_length + (max_frames - 1) * frame_shift
    xp = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, total - t)])
    chunks = xp.reshape(*x.shape[:-1], total // frame_shift, frame_shift) if frame_length == 2 * frame_shift else None
    if chunks is not None:
        chunk_pow = jnp.sum(chunks**2, axis=-1)  # [..., C]
        power = (chunk_pow[..., :-1] + chunk_pow[..., 1:])[..., :max_frames] / frame_length
    else:
        idx = jnp.arange(max_frames)[:, None] * frame_shift + jnp.arange(frame_length)[None, :]
        power = jnp.mean(xp[..., idx] ** 2, axis=-1)
    num_frames = jnp.maximum(-(-(lengths - frame_length) // frame_shift) + 1, 1)  # [...]
    frame_valid = jnp.arange(max_frames) < num_frames[..., None]
    mean_pow = jnp.sum(jnp.where(frame_valid, power, 0.0), axis=-1) / num_frames
    active_frames = power > threshold * mean_pow[..., None]
    # Sample s takes the decision of frame s // shift, clamped to the example's last covered frame.
    frame_of = jnp.minimum(jnp.arange(t) // frame_shift, num_frames[..., None] - 1)
    mask = jnp.take_along_axis(active_frames, frame_of, axis=-1)
    all_active = (lengths < frame_length) | (mean_pow == 0)
    mask = jnp.where(all_active[..., None], True, mask)
    return mask & valid


def active_power(x, lengths=None, **kwargs):
    """Mean square of x over its non-silent samples -> [...] (REFERENCE.md §2.5)."""
    x = jnp.asarray(x, jnp.float32)
    mask = non_silence_mask(x, lengths, **kwargs)
    return jnp.sum(jnp.where(mask, x**2, 0.0), axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1)
