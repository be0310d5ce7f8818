"""Rational sample-rate conversion with a Kaiser-windowed sinc, as one polyphase strided convolution.

Conversion orig_sr -> new_sr is up-sampling by `up`, low-pass filtering at the intermediate rate
orig_sr * up and keeping every `down`-th sample (up/down = new_sr/orig_sr in lowest terms), exactly the
scheme of scipy.signal.resample_poly (zero padding outside the signal, output length ceil(n * up / down)).
The filter differs: it is designed for a fixed stop-band attenuation (default 85 dB) with the pass band
ending at `passband` and the stop band starting at `stopband` times the lower Nyquist frequency.

The polyphase form computes only the kept outputs: output q * up + p is a dot product of the input
window starting at q * down with the p-th phase of the filter. Those dot products are regrouped into a
stride-1 convolution over blocks of input samples with dense channel mixing (see `_block_kernel`), which
XLA runs as GEMM-shaped work on CPU and GPU alike.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np
from jax import lax

SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)  # the seven URGENT rates, Hz



def block_conv(blocks, kernel):
    """Blocks [N, blocks + taps - 1, b_in] x polyphase kernel [taps, b_in, b_out] -> [N, blocks, b_out]
    (a VALID 1-D convolution over the block axis, full float32 precision)."""
    return lax.conv_general_dilated(
        blocks,
        jnp.asarray(kernel),
        window_strides=(1,),
        padding="VALID",
        dimension_numbers=("NHC", "HIO", "NHC"),
        precision=lax.Precision.HIGHEST,
    )

def kaiser_beta(attenuation_db: float) -> float:
    """Kaiser's empirical beta for a given stop-band attenuation (dB)."""
    a = float(attenuation_db)
    if a > 50:
        return 0.1102 * (a - 8.7)
    if a >= 21:
        return 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21)
    return 0.0


def kaiser_lowpass(num_taps: int, cutoff: float, beta: float) -> np.ndarray:
    """Windowed-sinc low-pass with unit DC gain; cutoff in cycles/sample (0 < cutoff < 0.5)."""
    n = np.arange(num_taps) - (num_taps - 1) / 2.0
    h = 2.0 * cutoff * np.sinc(2.0 * cutoff * n) * np.kaiser(num_taps, beta)
    return h / h.sum()


@functools.lru_cache(maxsize=64)
def design_resampler(
    orig_sr: int,
    new_sr: int,
    passband: float = 0.9,
    stopband: float = 1.0,
    attenuation_db: float = 85.0,
) -> tuple[int, int, np.ndarray]:
    """(up, down, taps) for orig_sr -> new_sr. taps run at orig_sr * up and carry the gain `up`.

    passband / stopband are fractions of the lower Nyquist frequency min(orig_sr, new_sr) / 2.
    """
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    if not 0 < passband < stopband:
        raise ValueError(f"need 0 < passband < stopband, got {passband}, {stopband}")
    g = math.gcd(int(orig_sr), int(new_sr))
    up, down = int(new_sr) // g, int(orig_sr) // g
    rate = float(orig_sr) * up  # intermediate rate, Hz
    nyquist = min(orig_sr, new_sr) / 2.0
    f_pass, f_stop = passband * nyquist, stopband * nyquist
    width = (f_stop - f_pass) / rate  # transition width, cycles/sample at the intermediate rate
    num_taps = int(math.ceil((attenuation_db - 7.95) / (2.285 * 2.0 * math.pi * width))) + 1
    num_taps += 1 - num_taps % 2  # odd: integer group delay
    cutoff = 0.5 * (f_pass + f_stop) / rate
    taps = kaiser_lowpass(num_taps, cutoff, kaiser_beta(attenuation_db)) * up
    return up, down, taps


@functools.lru_cache(maxsize=64)
def _polyphase_kernel(orig_sr, new_sr, passband, stopband, attenuation_db):
    """Phase filters W [up, width] and the input offset i_min of their first tap.

    Output q * up + p is sum_r x[q * down + i_min + r] * W[p, r] (see the module docstring).
    """
    up, down, h = design_resampler(orig_sr, new_sr, passband, stopband, attenuation_db)
    k = len(h)
    t = np.arange(up) * down + (k - 1) // 2  # filter index of input q*down for output q*up + p
    i_min = int(np.min(np.ceil((t - k + 1) / up)))
    i_max = int(np.max(np.floor(t / up)))
    width = i_max - i_min + 1
    taps = t[:, None] - (i_min + np.arange(width))[None, :] * up  # [up, width]
    phases = np.where((taps >= 0) & (taps < k), h[np.clip(taps, 0, k - 1)], 0.0)
    return up, down, phases, i_min


@functools.lru_cache(maxsize=64)
def _block_kernel(orig_sr, new_sr, passband, stopband, attenuation_db, min_block: int = 64):
    """The polyphase filter regrouped as a stride-1 convolution over blocks of samples.

    `g` consecutive output groups (g * up samples) are computed from blocks of g * down input samples:
    Y[b] = sum_j X[b + j_min + j] @ K[j], K [J, g * down, g * up]. Dense channel mixing keeps the work in
    GEMM-shaped kernels, which is several times faster than a strided one-channel convolution.
    """
    up, down, phases, i_min = _polyphase_kernel(orig_sr, new_sr, passband, stopband, attenuation_db)
    width = phases.shape[1]
    g = max(1, -(-min_block // down))
    b_in, b_out = g * down, g * up
    s_min, s_max = i_min, (g - 1) * down + i_min + width - 1
    j_min, j_max = s_min // b_in, s_max // b_in
    num_j = j_max - j_min + 1
    jj, c, o = np.meshgrid(np.arange(num_j), np.arange(b_in), np.arange(b_out), indexing="ij")
    sub, p = o // up, o % up  # output group within the block, phase
    r = (jj + j_min) * b_in + c - sub * down - i_min
    kernel = np.where((r >= 0) & (r < width), phases[p, np.clip(r, 0, width - 1)], 0.0)
    return g, j_min, kernel.astype(np.float32)


def resampled_length(num_samples: int, orig_sr: int, new_sr: int) -> int:
    """Output length of `resample`: ceil(num_samples * new_sr / orig_sr)."""
    g = math.gcd(int(orig_sr), int(new_sr))
    up, down = int(new_sr) // g, int(orig_sr) // g
    return -(-num_samples * up // down)


def resample(
    x,
    orig_sr: int,
    new_sr: int,
    passband: float = 0.9,
    stopband: float = 1.0,
    attenuation_db: float = 85.0,
):
    """Resample x [..., T] from orig_sr to new_sr -> float32 [..., ceil(T * new_sr / orig_sr)].

    Rates and T are static. For padded batches the padding stays (approximately) zero, and the valid
    length of an example of n samples becomes resampled_length(n, orig_sr, new_sr).
    """
    x = jnp.asarray(x, jnp.float32)
    if orig_sr == new_sr:
        return x
    g = math.gcd(int(orig_sr), int(new_sr))
    up, down = int(new_sr) // g, int(orig_sr) // g
    group, j_min, kernel = _block_kernel(orig_sr, new_sr, passband, stopband, attenuation_db)
    b_in, b_out, num_j = group * down, group * up, kernel.shape[0]
    lead, n = x.shape[:-1], x.shape[-1]
    n_out = resampled_length(n, orig_sr, new_sr)
    num_blocks = -(-n_out // b_out)
    xs = x.reshape(-1, n)
    # Extended input whose block 0 is input block j_min; num_blocks + num_j - 1 blocks in total.
    if j_min < 0:
        xs = jnp.pad(xs, [(0, 0), (-j_min * b_in, 0)])
    else:
        xs = xs[:, j_min * b_in :]
    total = (num_blocks + num_j - 1) * b_in
    xs = jnp.pad(xs, [(0, 0), (0, max(0, total - xs.shape[1]))])[:, :total]
    blocks = xs.reshape(-1, num_blocks + num_j - 1, b_in)  # [N, blocks, b_in]
    y = block_conv(blocks, kernel)  # [N, num_blocks, b_out]
    y = y.reshape(-1, num_blocks * b_out)[:, :n_out]
    return y.reshape(*lead, n_out)


def resample_numpy(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Host-side twin of `resample` (same filter, scheme and output length) in float64 -> float32.

    For code that must not call into jax (host callbacks, data-building scripts) or must be
    bit-reproducible across thread counts: scipy's single-threaded polyphase filter (scipy ships
    with jax) instead of the multi-threaded XLA convolution; the two agree to ~1e-7.
    """
    import scipy.signal  # scipy is a dependency of jax

    x = np.asarray(x)
    if orig_sr == new_sr:
        return x.astype(np.float32)
    up, down, taps = design_resampler(orig_sr, new_sr)
    # resample_poly multiplies the window by `up`; design_resampler's taps already carry that gain.
    y = scipy.signal.resample_poly(x.astype(np.float64), up, down, axis=-1, window=taps / up)
    return y.astype(np.float32)
