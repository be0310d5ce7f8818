"""Scale-invariant SNR and its loss, with ESPnet `SISNRLoss` semantics (REFERENCE.md §3.4).

ESPnet's SISNRLoss calls fast_bss_eval `si_sdr_loss(zero_mean=True, clamp_db=None)`: remove each
signal's mean, normalise each by max(||.||, 1e-6), c = <r, e>^2 (clipped to [0, 1]) and
SI-SNR = 10 log10(c / (1 - c)) dB. The loss is -SI-SNR. The URGENT recipes log it with weight 0.

Written here from the formula rather than through `urgent_jax.metrics`, which has no SI-SDR yet;
the evaluation metric (bss_eval style, its own eps) may differ in the last digits anyway.

Per example over its first `lengths[b]` samples (means and norms over valid samples only).
Concrete lengths outside [1, T] raise a ValueError; traced lengths (under jit) cannot be checked
and are clipped to [0, T], so a length beyond T gives the value of length T.

Where the reference returns +-inf (a silent target or estimate gives c = 0, a perfect estimate
c = 1) and NaN gradients, both log arguments here are floored at 1e-30, so the value saturates at
-+300 dB with a zero (not NaN) gradient; `clamp_db` gives fast_bss_eval's symmetric clamp. 1 - c is
computed as a residual energy (same value, no cancellation), so float32 results match the
reference run in float64 to ~1e-6 relative, closer than the reference's own float32 run (1e-3 dB
off at 20 dB, 0.05 dB at 40 dB).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from urgent_jax.audio.levels import checked_lengths, length_mask

# Floor of both log arguments: saturates the value at +-300 dB; the cotangent of the floored log,
# 10 / (1e-30 ln 10), stays finite in float32, so the zero gradient there is 0, not inf * 0 = NaN.
_LOG_FLOOR = 1e-30


def _unit_norm(x, eps: float):
    """(x / max(||x||, eps), 1 - ||that||^2) along time; the gradient is finite for x = 0.

    The deficit 1 - ||x_hat||^2 is exactly 0 unless ||x|| < eps (then 1 - ||x||^2 / eps^2).
    """
    energy = jnp.sum(x**2, axis=-1, keepdims=True)
    floored = jnp.maximum(energy, eps**2)
    return x / jnp.sqrt(floored), 1.0 - energy[:, 0] / floored[:, 0]


def si_snr(ref, est, lengths=None, eps: float = 1e-6, zero_mean: bool = True, clamp_db=None):
    """Scale-invariant SNR in dB, float32 [B].

    ref, est: [B, T]; lengths: [B] valid samples (None: all T); concrete lengths must lie in [1, T]
    (ValueError), traced ones (under jit) are clipped to [0, T] (beyond T acts as T; a length of 0
    is a silent pair, -300 dB). eps: norm floor (fast_bss_eval's
    `_normalize`). clamp_db: if given, the result is clamped to [-clamp_db, clamp_db] as
    fast_bss_eval does.
    Jitted; zero_mean and clamp_db are static.
    """
    ref = jnp.asarray(ref, jnp.float32)
    est = jnp.asarray(est, jnp.float32)
    if ref.shape != est.shape or ref.ndim != 2:
        raise ValueError(f"ref and est must both be [batch, time], got {ref.shape} and {est.shape}")
    lengths = checked_lengths(lengths, ref.shape[0], ref.shape[-1])
    if lengths is None:
        lengths = jnp.full(ref.shape[:1], ref.shape[-1], jnp.int32)
    clamp_db = None if clamp_db is None else float(clamp_db)
    return _si_snr(ref, est, jnp.asarray(lengths), eps, bool(zero_mean), clamp_db)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _si_snr(ref, est, lengths, eps, zero_mean, clamp_db):
    mask = length_mask(lengths, ref.shape[-1])
    ref = jnp.where(mask, ref, 0.0)
    est = jnp.where(mask, est, 0.0)
    if zero_mean:
        num_valid = jnp.maximum(lengths, 1).astype(jnp.float32)[:, None]  # traced 0: no NaN
        ref = jnp.where(mask, ref - jnp.sum(ref, axis=-1, keepdims=True) / num_valid, 0.0)
        est = jnp.where(mask, est - jnp.sum(est, axis=-1, keepdims=True) / num_valid, 0.0)
    (ref, ref_deficit), (est, est_deficit) = _unit_norm(ref, eps), _unit_norm(est, eps)
    proj = jnp.sum(ref * est, axis=-1, keepdims=True)
    coherence = proj[:, 0] ** 2  # c = <r, e>^2
    # 1 - c = ||e - <r, e> r||^2 + (1 - ||e||^2) + c (1 - ||r||^2), computed through the residual
    # energy: no float32 cancellation in 1 - c at high SI-SNR; the deficits are exactly 0 unless a
    # norm is below eps (a silent signal), where they keep the reference's value.
    residual = jnp.sum((est - proj * ref) ** 2, axis=-1) + est_deficit + coherence * ref_deficit
    low, high = 0.0, 1.0
    if clamp_db is not None:
        low = 10.0 ** (-clamp_db / 10.0)
        low = low / (1.0 + low)
        high = 1.0 - low
    coherence = jnp.clip(coherence, low, high)
    residual = jnp.clip(residual, 1.0 - high, 1.0 - low)
    return 10.0 * (
        jnp.log10(jnp.maximum(coherence, _LOG_FLOOR)) - jnp.log10(jnp.maximum(residual, _LOG_FLOOR))
    )


def si_snr_loss(ref, est, lengths=None, eps: float = 1e-6, zero_mean: bool = True, clamp_db=None):
    """Negative SI-SNR in dB, float32 [B] (ESPnet `SISNRLoss`)."""
    return -si_snr(ref, est, lengths, eps=eps, zero_mean=zero_mean, clamp_db=clamp_db)
