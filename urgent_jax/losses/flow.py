"""The FlowSE conditional flow-matching objective (REFERENCE.md §3.3): path, masked error, loss.

Path of the FlowSE baseline (`FLOWMATCHING`), from clean x0 at t = 0 to noisy y at t = 1:
  mu_t = (1 - t) x0 + t y,  sigma_t = (1 - t) sigma_min + t sigma_max,
  x_t = mu_t + sigma_t z,   u = (sigma_max - sigma_min) z + (y - x0)   (conditional velocity),
with z complex standard normal (real and imaginary parts each of variance 1/2, as torch
`randn_like` on a complex tensor) and t = (1 - U[0, 1)) (t_max - t_eps) + t_eps in (t_eps, t_max].
The training objective is the batch mean of ½ sum |v_theta(x_t, t, y) - u|^2 per example.

This module owns the objective; the network, its front-end, the t and z draws
(`flowse.sample_time`, `flowse.complex_normal`, shared with the sampler) and the Euler sampler live
in `urgent_jax.models.flowse`.

Masked by lengths (a deliberate difference, README "Deliberate differences"): the reference gives
padded frames pure-noise targets (z is drawn there too, REFERENCE.md §6.12); here padded frames
get z = 0 and zero weight, so an utterance's loss does not depend on the batch's padding. With
equal lengths both agree.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from urgent_jax.models.flowse import FlowSE, complex_normal, sample_time


def _per_example(t, like):
    """[B] -> [B, 1, ..., 1] broadcastable against `like`."""
    return t.reshape(t.shape + (1,) * (like.ndim - 1))


def frame_mask(frame_counts, like):
    """Valid frames, bool [B, T, 1, ..., 1] for spectra `like` [B, T, ...] (time on axis 1)."""
    valid = jnp.arange(like.shape[1])[None, :] < jnp.asarray(frame_counts)[:, None]  # [B, T]
    return valid.reshape(valid.shape + (1,) * (like.ndim - 2))


@jax.jit
def flow_path(
    key,
    x0,
    y,
    frame_counts=None,
    sigma_min: float = 0.05,
    sigma_max: float = 0.5,
    t_eps: float = 0.03,
    t_max: float = 1.0,
):
    """Draw t and z and return (t [B] float32, x_t, u), x_t and u complex64 shaped like x0. Jitted.

    x0: clean (target) and y: noisy (conditioner) spectra, complex [B, T, ...] with time on axis 1,
    zero on padded frames. frame_counts: valid frames [B]; z is zero on the frames beyond them (so
    are x_t and u). None: every frame valid (the reference, which also draws z on padding).
    """
    x0 = jnp.asarray(x0, jnp.complex64)
    y = jnp.asarray(y, jnp.complex64)
    if x0.shape != y.shape:
        raise ValueError(f"x0 and y must have the same shape, got {x0.shape} and {y.shape}")
    t_key, z_key = jax.random.split(key)
    t = sample_time(t_key, x0.shape[0], t_eps, t_max)  # (t_eps, t_max]
    z = complex_normal(z_key, x0.shape)  # each part variance 1/2, so E|z|^2 = 1
    if frame_counts is not None:
        z = z * frame_mask(frame_counts, x0)
    tb = _per_example(t, x0)
    mean = (1.0 - tb) * x0 + tb * y
    sigma = (1.0 - tb) * sigma_min + tb * sigma_max
    x_t = mean + sigma * z
    u = (sigma_max - sigma_min) * z + (y - x0)
    return t, x_t, u


@jax.jit
def masked_sq_error(v, u, mask=None):
    """½ sum over valid entries of |v - u|^2 per example, float32 [B]. Jitted.

    v, u: real or complex [B, ...]; mask: bool or 0/1 array broadcastable to v (e.g. [B, T, 1] for
    [B, T, F] spectra), None for all entries (the reference FlowSE loss, which also counts padding).
    """
    diff = jnp.asarray(v) - jnp.asarray(u)
    err = jnp.real(diff * jnp.conj(diff)).astype(jnp.float32)
    if mask is not None:
        err = jnp.where(jnp.broadcast_to(jnp.asarray(mask), err.shape).astype(bool), err, 0.0)
    return 0.5 * jnp.sum(err.reshape(err.shape[0], -1), axis=-1)


def flow_matching_loss(model: FlowSE, variables, clean, noisy, lengths, sample_rate: int, key):
    """Conditional flow-matching loss of a FlowSE model (REFERENCE.md §3.3), a float32 scalar.

    clean, noisy float [B, T] waveforms; lengths int [B] or None (checked as the front-end does:
    concrete in [1, T], traced clipped to [0, T]); sample_rate a static int; key draws t and z.
    Padded frames are excluded: zero noise, zero weight. Both the trainer (`enhance.task`) and the
    tests call this function.
    """
    x0, counts = model.encode(clean, lengths, sample_rate)  # compressed [B, frames, bins], [B]
    y, _ = model.encode(noisy, lengths, sample_rate)
    t, x_t, u = flow_path(
        key, x0, y, counts, model.sigma_min, model.sigma_max, model.t_eps, model.t_max
    )
    v = model.apply(variables, x_t, y, t, counts)
    return jnp.mean(masked_sq_error(v, u, frame_mask(counts, x0)))
