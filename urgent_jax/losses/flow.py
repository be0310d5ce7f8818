"""Generic conditional flow-matching pieces: the Gaussian path and the masked squared error.

Path of the FlowSE baseline (REFERENCE.md §3.3, `FLOWMATCHING`), from clean x0 at t = 0 to noisy
y at t = 1:
  mu_t = (1 - t) x0 + t y,  sigma_t = (1 - t) sigma_min + t sigma_max,
  x_t = mu_t + sigma_t z,   u = (sigma_max - sigma_min) z + (y - x0)   (conditional velocity),
with z complex standard normal (real and imaginary parts each of variance 1/2, as torch
`randn_like` on a complex tensor) and t = (1 - U[0, 1)) (t_max - t_eps) + t_eps in (t_eps, t_max].
The training objective is ½ sum |v_theta(x_t, t, y) - u|^2 per example (`masked_sq_error`),
averaged over the batch by the caller. The model, its vector field and the sampler live in
`urgent_jax.models.flowse`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _per_example(t, like):
    """[B] -> [B, 1, ..., 1] broadcastable against `like`."""
    return t.reshape(t.shape + (1,) * (like.ndim - 1))


@jax.jit
def flow_path(
    key,
    x0,
    y,
    sigma_min: float = 0.05,
    sigma_max: float = 0.5,
    t_eps: float = 0.03,
    t_max: float = 1.0,
):
    """Draw t and z and return (t [B] float32, x_t, u), x_t and u complex64 shaped like x0. Jitted.

    x0: clean (target) and y: noisy (conditioner) spectra, complex [B, ...] in any layout (padded
    entries of x0 and y are zero, those of z are not, as in the reference).
    """
    x0 = jnp.asarray(x0, jnp.complex64)
    y = jnp.asarray(y, jnp.complex64)
    if x0.shape != y.shape:
        raise ValueError(f"x0 and y must have the same shape, got {x0.shape} and {y.shape}")
    t_key, z_key = jax.random.split(key)
    uniform = jax.random.uniform(t_key, x0.shape[:1], jnp.float32)  # U[0, 1)
    t = (1.0 - uniform) * (t_max - t_eps) + t_eps  # (t_eps, t_max]
    parts = jnp.sqrt(jnp.float32(0.5)) * jax.random.normal(z_key, (2, *x0.shape), jnp.float32)
    z = jax.lax.complex(parts[0], parts[1])  # each part variance 1/2, so E|z|^2 = 1
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
