"""Rational sample-rate conversion by windowed-sinc filters, as one polyphase strided convolution.

Two filters, one scheme. Conversion orig_sr -> new_sr with up/down = new_sr/orig_sr in lowest terms
computes output q * up + p (phase p) as a dot product of the input window starting at
q * down + i_min with the p-th phase of the filter.

`resample` (the house resampler): up-sampling by `up`, a Kaiser-windowed low-pass at the intermediate
rate orig_sr * up and keeping every `down`-th sample, exactly the scheme of
scipy.signal.resample_poly (zero padding outside the signal, output length ceil(n * up / down)). The
filter is designed for a fixed stop-band attenuation (default 85 dB) with the pass band ending at
`passband` and the stop band starting at `stopband` times the lower Nyquist frequency.

`resample_sinc_hann`: torchaudio's `Resample` / `functional.resample` with its defaults
(sinc_interp_hann, lowpass_filter_width 6, rolloff 0.99), for metrics whose reference resamples that
way (Distill-MOS). Its filter is a Hann-windowed sinc of a fixed number of zero crossings, evaluated
at the exact phase offsets; its output length is torchaudio's (see `sinc_hann_resampled_length`).

The phase dot products are regrouped into a stride-1 convolution over blocks of input samples with
dense channel mixing (see `_regroup`), which XLA runs as GEMM-shaped work on CPU and GPU alike.
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


def _regroup(up: int, down: int, phases: np.ndarray, i_min: int, min_block: int = 64):
    """Phase filters [up, width] (output q * up + p = sum_r x[q * down + i_min + r] * phases[p, r])
    regrouped as a stride-1 convolution over blocks of samples -> (g, j_min, kernel float32).

    `g` consecutive output groups (g * up samples) are computed from blocks of g * down input samples:
    Y[b] = sum_j X[b + j_min + j] @ K[j], K [J, g * down, g * up]. Dense channel mixing keeps the work in
    GEMM-shaped kernels, which is several times faster than a strided one-channel convolution.
    """
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


@functools.lru_cache(maxsize=64)
def _block_kernel(orig_sr, new_sr, passband, stopband, attenuation_db, min_block: int = 64):
    """The Kaiser polyphase filter of `resample` regrouped by `_regroup`."""
    up, down, phases, i_min = _polyphase_kernel(orig_sr, new_sr, passband, stopband, attenuation_db)
    return _regroup(up, down, phases, i_min, min_block)


def _apply_blocks(x, down: int, up: int, n_out: int, group: int, j_min: int, kernel):
    """x [..., T] -> [..., n_out] through a `_regroup` kernel (zeros outside the signal)."""
    b_in, b_out, num_j = group * down, group * up, kernel.shape[0]
    lead, n = x.shape[:-1], x.shape[-1]
    if n_out == 0:  # an empty signal: nothing to filter (the block reshape would divide by zero)
        return jnp.zeros((*lead, 0), jnp.float32)
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
    n_out = resampled_length(x.shape[-1], orig_sr, new_sr)
    return _apply_blocks(x, down, up, n_out, group, j_min, kernel)


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


# --- torchaudio's default resampler ------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def sinc_hann_phases(
    orig_sr: int, new_sr: int, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> tuple[int, int, int, np.ndarray]:
    """(up, down, half_width, phases [up, 2 half_width + down] float32) of torchaudio's
    sinc_interp_hann resampler.

    With down, up the gcd-reduced rates, the band edge is base = min(down, up) * rolloff (a fraction
    of the lower rate's Nyquist) and the filter spans half_width = ceil(lowpass_filter_width * down /
    base) input samples each side. Output phase p (time p / up of a frame) takes input sample
    q * down - half_width + r with weight h(t), t = base * ((r - half_width) / down - p / up) clipped
    to +-lowpass_filter_width zero crossings: h(t) = base / down * sinc(t) * cos^2(pi t / (2 width)).
    As in torch, p / up is rounded to float32 (an int64 division) and the taps are stored in float32.
    """
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    g = math.gcd(int(orig_sr), int(new_sr))
    up, down = int(new_sr) // g, int(orig_sr) // g
    base = min(down, up) * rolloff
    half_width = math.ceil(lowpass_filter_width * down / base)
    phase = (np.arange(up, dtype=np.float32) / np.float32(up)).astype(np.float64)  # [up]
    offset = np.arange(-half_width, half_width + down, dtype=np.float64) / down  # input times
    t = base * (offset[None, :] - phase[:, None])  # [up, 2 half_width + down], zero crossings
    t = np.clip(t, -lowpass_filter_width, lowpass_filter_width)
    window = np.cos(np.pi * t / (2 * lowpass_filter_width)) ** 2
    phases = (base / down) * np.sinc(t) * window  # [up, 2 half_width + down]
    return up, down, half_width, phases.astype(np.float32)


@functools.lru_cache(maxsize=64)
def _sinc_hann_block_kernel(orig_sr, new_sr, lowpass_filter_width, rolloff, min_block: int = 64):
    up, down, half_width, phases = sinc_hann_phases(orig_sr, new_sr, lowpass_filter_width, rolloff)
    return _regroup(up, down, phases.astype(np.float64), -half_width, min_block)


def sinc_hann_resampled_length(num_samples: int, orig_sr: int, new_sr: int) -> int:
    """torchaudio's output length for num_samples: ceil(up * num_samples / down) with the ratio
    rounded to float32 first (torch makes a float32 tensor of it). That is one sample short of the
    exact ceiling for some lengths once the output reaches the power of two above 2^24 / down: for
    44.1 / 22.05 kHz -> 16 kHz (down 441) from 2^16 outputs, ~4.1 s (180697 samples at 44.1 kHz give
    65559, not 65560); for 48 / 24 / 32 / 8 kHz -> 16 kHz only beyond 8 minutes."""
    g = math.gcd(int(orig_sr), int(new_sr))
    up, down = int(new_sr) // g, int(orig_sr) // g
    return math.ceil(float(np.float32(up * int(num_samples) / down)))


def sinc_hann_resampled_lengths(lengths, orig_sr: int, new_sr: int) -> jnp.ndarray:
    """`sinc_hann_resampled_length` of an int array of lengths, in int32 arithmetic (jit-friendly);
    exact for outputs below 2^24 samples (17 min at 16 kHz)."""
    g = math.gcd(int(orig_sr), int(new_sr))
    up, down = int(new_sr) // g, int(orig_sr) // g
    lengths = jnp.asarray(lengths, jnp.int32)
    # up * L / down = q + r / down, split to stay inside int32.
    a, b = lengths // down, lengths % down
    q, r = a * up + (b * up) // down, (b * up) % down
    # float32(q + r / down) rounds down to q iff r / down < half its spacing 2^(e - 23), 2^e <= q,
    # i.e. r * 2^24 < down * 2^e; both sides are exact in float32 (r < down < 2^24, e >= 0).
    _, exponent = jnp.frexp(q.astype(jnp.float32))  # q = m 2^exponent, m in [0.5, 1)
    pow2_e = jnp.ldexp(jnp.float32(1), exponent - 1)
    rounds_to_q = r.astype(jnp.float32) * np.float32(2**24) < down * pow2_e
    return q + ((r > 0) & ~rounds_to_q).astype(jnp.int32)


def resample_sinc_hann(
    x, orig_sr: int, new_sr: int, lowpass_filter_width: int = 6, rolloff: float = 0.99
):
    """torchaudio.transforms.Resample(orig_sr, new_sr) (defaults: sinc_interp_hann, width 6, rolloff
    0.99) of x [..., T] -> float32 [..., sinc_hann_resampled_length(T)]; rates and T static.

    Each signal is zero padded (half_width samples before it, half_width + down after it, as torchaudio
    does), so for a padded batch whose samples past an example's length n are zero, that example's
    first sinc_hann_resampled_length(n) outputs equal torchaudio's output for the example alone.
    """
    x = jnp.asarray(x, jnp.float32)
    if orig_sr == new_sr:
        return x
    g = math.gcd(int(orig_sr), int(new_sr))
    up, down = int(new_sr) // g, int(orig_sr) // g
    group, j_min, kernel = _sinc_hann_block_kernel(orig_sr, new_sr, lowpass_filter_width, rolloff)
    n_out = sinc_hann_resampled_length(x.shape[-1], orig_sr, new_sr)
    return _apply_blocks(x, down, up, n_out, group, j_min, kernel)


def resample_sinc_hann_numpy(
    x: np.ndarray, orig_sr: int, new_sr: int, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> np.ndarray:
    """Host-side twin of `resample_sinc_hann` (torchaudio's `functional.resample` defaults) for
    loaders that must not call into jax: x [..., T] -> float32 [..., sinc_hann_resampled_length(T)].

    The same phase filters (`sinc_hann_phases`) applied as one matmul over strided input windows:
    output q * up + p = sum_r xpad[q * down + r] * phases[p, r], xpad = x with half_width zeros
    before and half_width + down after it.
    """
    x = np.asarray(x, np.float32)
    if orig_sr == new_sr:
        return x
    up, down, half_width, phases = sinc_hann_phases(orig_sr, new_sr, lowpass_filter_width, rolloff)
    n_out = sinc_hann_resampled_length(x.shape[-1], orig_sr, new_sr)
    groups = -(-n_out // up)
    width = phases.shape[1]
    total = (groups - 1) * down + width  # input samples the groups read
    pad_after = max(half_width + down, total - half_width - x.shape[-1])
    xpad = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(half_width, pad_after)])
    windows = np.lib.stride_tricks.sliding_window_view(xpad, width, axis=-1)[..., ::down, :]
    y = windows[..., :groups, :] @ phases.T  # [..., groups, up]
    return y.reshape(*x.shape[:-1], groups * up)[..., :n_out]
