"""Multi-resolution L1 loss: time-domain L1 plus STFT-magnitude L1 at several window sizes.

ESPnet `MultiResL1SpecLoss` as the BSRNN and TF-GridNet baselines use it (REFERENCE.md §3.4), per
example:

1. r <- r / std(r), e <- e / std(e)        (unbiased std, as torch.std; `normalize_variance`)
2. alpha = sum(e r) / (sum(e^2) + eps)
3. L_time = sum_t |alpha e - r|
4. for each window w: rectangular-window STFT, n_fft = win = w, hop w // 2, centred with reflect
   padding of w // 2, one-sided; L_w = sum_{frames, bins} | |STFT(alpha e)| - |STFT(r)| |
5. loss = time_weight * L_time + (1 - time_weight) * mean_w L_w   (L_time alone without windows)

All terms are sums, not means, so the loss grows with the utterance length (reduction "sum").
Window sizes are in samples at every sampling rate.

Two deliberate differences from the reference:

- Lengths. The reference runs on the zero-padded batch, so its std includes the padding and the
  last frames see zeros instead of a reflection (§6.10). Here every example is computed over its
  first `lengths[b]` samples only: std, alpha and L_time over its valid samples; its STFT
  reflect-padded at its own end, with its own torch.stft frame count
  1 + (L + 2 (w // 2) - w) // hop.
  A padded batch thus gives exactly the values of each example alone; with equal lengths (or
  `lengths=None`) the values are the reference's. Like torch's reflect padding this needs
  L > w // 2 for each window (shorter examples get edge-clipped indices instead of an error).
  Concrete lengths outside [1, T] raise a ValueError; traced lengths (under jit) cannot be
  checked and are clipped to [0, T], so a length beyond T gives the value of length T.
- Silent signals. The reference divides by a zero std and returns NaN (the training step is then
  skipped). Here the std is floored at `std_floor`: a silent target gives alpha = 0, loss 0 and
  zero gradients (an uninformative example instead of a NaN batch); a silent estimate gives a
  finite loss. Magnitudes use a zero-safe |.| so gradients stay finite where a bin is exactly zero.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from urgent_jax.audio.levels import checked_lengths, length_mask
from urgent_jax.audio.stft import frame, frame_lengths


def _full_lengths(x, lengths):
    """Checked lengths [B] (audio.levels.checked_lengths), None -> all T."""
    lengths = checked_lengths(lengths, x.shape[0], x.shape[-1])
    if lengths is None:
        return jnp.full(x.shape[:1], x.shape[-1], jnp.int32)
    return lengths


def reflect_pad_to_lengths(x, lengths, pad: int):
    """Reflect-pad each row at both ends of its own length: [B, T] -> [B, T + 2 pad].

    Row b is x[b, :L_b] padded like torch 'reflect' (edge sample not repeated); positions past
    L_b + pad are filler (edge-clipped indices) read only by frames beyond the example's count.
    """
    num_samples = x.shape[-1]
    last = (lengths - 1)[:, None]  # [B, 1]
    j = jnp.abs(jnp.arange(num_samples + 2 * pad) - pad)[None, :]  # left reflection
    j = jnp.where(j > last, 2 * last - j, j)  # right reflection at the example's own end
    j = jnp.clip(j, 0, last)
    return jnp.take_along_axis(x, j, axis=-1)


def _magnitude(spec):
    """|spec| with a zero gradient (not NaN) where the bin is exactly zero."""
    power = spec.real**2 + spec.imag**2
    positive = power > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, power, 1.0)), 0.0)


def _normalize_variance(x, mask, num_valid, std_floor: float):
    """x / std(x) over the valid samples (unbiased, floored at std_floor); padding stays zero."""
    mean = jnp.sum(x, axis=-1, keepdims=True) / num_valid
    centred = jnp.where(mask, x - mean, 0.0)
    var = jnp.sum(centred**2, axis=-1, keepdims=True) / jnp.maximum(num_valid - 1.0, 1.0)
    std = jnp.sqrt(jnp.maximum(var, std_floor**2))  # sqrt(max(.)) keeps the gradient finite at 0
    return x / std


def multi_resolution_l1(
    ref,
    est,
    lengths=None,
    window_sizes: Sequence[int] = (256, 512, 768, 1024),
    time_weight: float = 0.5,
    eps: float = 1e-6,
    normalize_variance: bool = True,
    std_floor: float = 1e-8,
):
    """Multi-resolution L1 loss per example (float32 [B]); see the module docstring for the formula.

    ref, est: [B, T] float; lengths: [B] valid samples (None: all T); concrete lengths must lie in
    [1, T] (ValueError), traced ones (under jit) are clipped to [0, T] (beyond T acts as T; a length
    of 0 gives loss 0). window_sizes: STFT sizes in
    samples (even), hop = size // 2. eps: stabiliser of the scaling factor alpha (1e-6 in the URGENT
    2026 BSRNN config, 1e-8 in the TF-GridNet recipes). Jitted; window_sizes and normalize_variance
    are static.
    """
    ref = jnp.asarray(ref, jnp.float32)
    est = jnp.asarray(est, jnp.float32)
    if ref.shape != est.shape or ref.ndim != 2:
        raise ValueError(f"ref and est must both be [batch, time], got {ref.shape} and {est.shape}")
    window_sizes = tuple(int(w) for w in window_sizes)
    if any(w % 2 for w in window_sizes):
        raise ValueError(f"window sizes must be even, got {window_sizes}")
    return _multi_resolution_l1(
        ref,
        est,
        _full_lengths(ref, lengths),
        window_sizes=window_sizes,
        time_weight=time_weight,
        eps=eps,
        normalize_variance=bool(normalize_variance),
        std_floor=std_floor,
    )


@functools.partial(
    jax.jit,
    static_argnames=("window_sizes", "normalize_variance"),
)
def _multi_resolution_l1(
    ref, est, lengths, *, window_sizes, time_weight, eps, normalize_variance, std_floor
):
    mask = length_mask(lengths, ref.shape[-1])  # [B, T]
    num_valid = jnp.maximum(lengths, 1).astype(jnp.float32)[:, None]  # [B, 1]; traced 0: no NaN
    ref = jnp.where(mask, ref, 0.0)
    est = jnp.where(mask, est, 0.0)
    if normalize_variance:
        ref = _normalize_variance(ref, mask, num_valid, std_floor)
        est = _normalize_variance(est, mask, num_valid, std_floor)

    energy = jnp.sum(est**2, axis=-1, keepdims=True)
    alpha = jnp.sum(est * ref, axis=-1, keepdims=True) / (energy + eps)
    scaled = alpha * est  # [B, T], zero on padding
    time_loss = jnp.sum(jnp.abs(scaled - ref), axis=-1)  # [B]
    if not window_sizes:
        return time_loss  # the reference returns the unweighted time term when there is no STFT

    spectral_loss = jnp.zeros_like(time_loss)
    for window in window_sizes:
        hop = window // 2
        # [2, B, T + window]: one framing pass for estimate and target
        padded = jnp.stack([reflect_pad_to_lengths(x, lengths, window // 2) for x in (scaled, ref)])
        mag = _magnitude(jnp.fft.rfft(frame(padded, window, hop), axis=-1))  # [2, B, frames, bins]
        keep = jnp.arange(mag.shape[-2])[None, :] < frame_lengths(lengths, window, hop)[:, None]
        diff = jnp.where(keep[..., None], jnp.abs(mag[0] - mag[1]), 0.0)
        spectral_loss = spectral_loss + jnp.sum(diff, axis=(-2, -1))
    return time_weight * time_loss + (1.0 - time_weight) * spectral_loss / len(window_sizes)
