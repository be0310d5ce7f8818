"""Level and decibel helpers (power, RMS, peak, dB conversions) and per-example valid lengths,
batched over leading axes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def power_to_db(power, amin: float = 1e-10):
    """10 log10(max(power, amin))."""
    return 10.0 * jnp.log10(jnp.maximum(power, amin))


def amplitude_to_db(amplitude, amin: float = 1e-5):
    """20 log10(max(|amplitude|, amin))."""
    return 20.0 * jnp.log10(jnp.maximum(jnp.abs(amplitude), amin))


def db_to_power(db):
    return 10.0 ** (db / 10.0)


def db_to_amplitude(db):
    return 10.0 ** (db / 20.0)


def spectrogram_to_db(power, ref: str | float = "max", amin: float = 1e-10, top_db: float | None = 80.0):
    """librosa.power_to_db semantics over the last two axes: ref 'max' uses each example's maximum."""
    log_spec = power_to_db(power, amin)
    if ref == "max":
        ref_val = jnp.max(power, axis=(-2, -1), keepdims=True)
    else:
        ref_val = jnp.asarray(ref, power.dtype)
    log_spec = log_spec - power_to_db(ref_val, amin)
    if top_db is not None:
        log_spec = jnp.maximum(log_spec, jnp.max(log_spec, axis=(-2, -1), keepdims=True) - top_db)
    return log_spec


def checked_lengths(lengths, batch_size: int, num_samples: int, name: str = "lengths"):
    """Validate per-example valid lengths of a [batch_size, num_samples] batch -> int32 [B] or None.

    None stays None (every sample valid). The shape must be [batch_size]. Concrete lengths must be
    whole numbers in [1, num_samples] (ValueError otherwise). Traced lengths (under jit) cannot be
    checked when tracing: they are clipped to [0, num_samples], so a length beyond the signal acts
    as num_samples (the result equals that of lengths = num_samples) and a negative one as 0.
    """
    if lengths is None:
        return None
    shape = tuple(jnp.shape(lengths))
    if shape != (batch_size,):
        raise ValueError(f"{name} must be [batch] = ({batch_size},), got shape {shape}")
    if isinstance(lengths, jax.core.Tracer):
        return jnp.clip(jnp.asarray(lengths, jnp.int32), 0, num_samples)
    values = np.asarray(lengths)
    if values.size and not np.array_equal(values, np.round(values)):
        raise ValueError(f"{name} must be whole numbers of samples, got {values.tolist()}")
    if values.size and (values.min() < 1 or values.max() > num_samples):
        raise ValueError(
            f"{name} must lie in [1, {num_samples}] (the batch's time axis), got {values.tolist()}"
        )
    return jnp.asarray(values, jnp.int32)


def length_mask(lengths, num_samples: int):
    """Boolean [..., num_samples] mask of the first `lengths` samples of each example."""
    return jnp.arange(num_samples) < jnp.asarray(lengths)[..., None]


def masked_signals(lengths, *signals):
    """(lengths [B] int32, *signals as float32 [B, T] zeroed beyond lengths); lengths None = full."""
    signals = [jnp.asarray(x, jnp.float32) for x in signals]
    num_samples = signals[0].shape[-1]
    if lengths is None:
        return (jnp.full(signals[0].shape[:-1], num_samples, jnp.int32), *signals)
    lengths = jnp.asarray(lengths, jnp.int32)
    mask = length_mask(lengths, num_samples)
    return (lengths, *(jnp.where(mask, x, 0.0) for x in signals))


def mean_power(x, lengths=None):
    """Mean square over the valid samples of x [..., T] -> [...]."""
    x = jnp.asarray(x, jnp.float32)
    if lengths is None:
        return jnp.mean(x**2, axis=-1)
    mask = length_mask(lengths, x.shape[-1])
    return jnp.sum(jnp.where(mask, x**2, 0.0), axis=-1) / jnp.maximum(jnp.asarray(lengths), 1)


def peak(x, lengths=None):
    """max |x| over the valid samples -> [...]."""
    x = jnp.abs(jnp.asarray(x, jnp.float32))
    if lengths is not None:
        x = jnp.where(length_mask(lengths, x.shape[-1]), x, 0.0)
    return jnp.max(x, axis=-1)
