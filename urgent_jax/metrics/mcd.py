"""Mel-cepstral distortion (URGENT 2025 intrusive metric, REFERENCE.md §4.1).

est is scaled by the least-squares gain <ref, est> / (||est||^2 + 1e-8); both signals are cut into
non-padded 1024-sample frames with a 256-sample hop (at every rate), windowed by SPTK's Hamming window
(symmetric, scaled to unit power) and analysed into mel-cepstra of the rate's order and all-pass
constant (`MCEP_PARAMS`) exactly as SPTK / pysptk `mcep(frame, order, alpha, eps=1e-6, etype=1)`. The
two sequences are aligned by dynamic time warping with a Euclidean local distance, and
MCD = mean over the path of (10 / ln 10) sqrt(2 sum_k (c_k - c'_k)^2), c_0 included.

Mel-cepstral analysis (Fukada, Tokuda, Kobayashi, Imai 1992). With the periodogram I (|FFT|^2 + eps)
and the model log |D(w)|^2 = 2 sum_m c_m cos(m b(w)), b the all-pass warped frequency, the criterion
E(c) = mean_w [I / |D|^2 - log(I / |D|^2) - 1] is convex in c. Its gradient is 2 ((-a)^k - r_k) and
its Hessian 2 [r_|k-l| + r_(k+l)], where r_k = mean_w (I / |D|^2) cos(k b(w)) are warped
autocorrelations of the residual spectrum; SPTK takes Newton steps from the frequency-warped
cepstrum of log I and stops once r_0 changes by less than `threshold` (relative) between iterations,
after at least `min_iter` iterations, or after `max_iter`. All frames of the batch iterate together
in one while-loop; a converged frame is frozen, so each frame follows SPTK's own iteration count.

DTW is exact (the reference's fastdtw with radius 1 approximates it; its cost is never lower), run
as a lax.scan over anti-diagonals with the path length carried alongside the cumulative cost; ties
between predecessors resolve as fastdtw's (i-1, j), (i, j-1), (i-1, j-1) order.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import cho_solve

from urgent_jax.audio.levels import masked_signals
from urgent_jax.audio.stft import frame
from urgent_jax.metrics.sdr import map_in_chunks

FRAME_LENGTH = 1024  # samples, at every rate
HOP_LENGTH = 256
# (order, all-pass constant) by sample rate, as the reference script.
MCEP_PARAMS = {
    8000: (13, 0.31),
    16000: (23, 0.42),
    22050: (34, 0.45),
    24000: (34, 0.46),
    32000: (36, 0.50),
    44100: (39, 0.53),
    48000: (39, 0.55),
}
_GAIN_EPS = 1e-8
_MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)


def mcep_params(sample_rate: int) -> tuple[int, float]:
    if sample_rate not in MCEP_PARAMS:
        raise ValueError(f"no mel-cepstrum settings for {sample_rate} Hz; known: {sorted(MCEP_PARAMS)}")
    return MCEP_PARAMS[sample_rate]


@functools.lru_cache(maxsize=4)
def sptk_hamming(length: int) -> np.ndarray:
    """SPTK's Hamming window: 0.54 - 0.46 cos(2 pi n / (N - 1)), scaled to unit energy (float64)."""
    n = np.arange(length)
    w = 0.54 - 0.46 * np.cos(2.0 * np.pi * n / (length - 1))
    return w / np.sqrt(np.sum(w * w))


def freqt_matrix(num_in: int, order: int, alpha: float) -> np.ndarray:
    """Linear map [num_in, order + 1] of the all-pass frequency warping of a cepstrum (SPTK freqt).

    Row n is the warped cepstrum of the unit cepstrum e_n, from the recursion over the input
    coefficients (last first) through a chain of first-order all-pass sections.
    """
    out = np.zeros((order + 1, num_in))  # state per input unit vector (columns)
    prev = np.zeros_like(out)
    eye = np.eye(num_in)
    for i in range(num_in - 1, -1, -1):
        prev, out = out, np.empty_like(out)
        out[0] = eye[i] + alpha * prev[0]
        if order >= 1:
            out[1] = (1.0 - alpha * alpha) * prev[0] + alpha * prev[1]
        for k in range(2, order + 1):
            out[k] = prev[k - 1] + alpha * (prev[k] - out[k - 1])
    return out.T


@functools.lru_cache(maxsize=8)
def _analysis_constants(n_fft: int, order: int, alpha: float):
    """float32 tables on the rfft bins: initial-cepstrum map, cos(m b) for the model and for r_k."""
    bins = n_fft // 2 + 1
    omega = 2.0 * np.pi * np.arange(bins) / n_fft
    warped = omega + 2.0 * np.arctan2(alpha * np.sin(omega), 1.0 - alpha * np.cos(omega))
    model = 2.0 * np.cos(np.outer(warped, np.arange(order + 1)))  # log|D|^2 = model @ c
    # r_k = (1/N) sum over all N bins; the one-sided sum weights interior bins twice.
    weight = np.full(bins, 2.0)
    weight[0] = 1.0
    if n_fft % 2 == 0:
        weight[-1] = 1.0
    autocorr = np.cos(np.outer(warped, np.arange(2 * order + 1))) * (weight / n_fft)[:, None]
    # Initial value: the real cepstrum of log I (first half, c_0 and c_{N/2} halved), warped.
    init = freqt_matrix(bins, order, alpha)
    init[0] *= 0.5
    if n_fft % 2 == 0:
        init[-1] *= 0.5
    gradient_const = (-alpha) ** np.arange(order + 1)
    return tuple(
        np.asarray(a, np.float32) for a in (init, model.T, autocorr, gradient_const)
    )


def mel_cepstrum(
    frames,
    order: int,
    alpha: float,
    eps: float = 1e-6,
    min_iter: int = 2,
    max_iter: int = 30,
    threshold: float = 1e-3,
    active=None,
):
    """Mel-cepstra of windowed frames [..., N] -> [..., order + 1] (SPTK mcep, etype=1, itype=0).

    `active` (bool [...]) marks the frames to analyse; others are returned after no Newton step.
    """
    frames = jnp.asarray(frames, jnp.float32)
    lead = frames.shape[:-1]
    n_fft = frames.shape[-1]
    init, model, autocorr, gradient_const = _analysis_constants(n_fft, order, float(alpha))
    frames = frames.reshape(-1, n_fft)
    spec = jnp.fft.rfft(frames, axis=-1)
    periodogram = spec.real**2 + spec.imag**2 + eps  # [F, bins]
    cepstrum = jnp.fft.irfft(jnp.log(periodogram), n_fft, axis=-1)[:, : n_fft // 2 + 1]
    mc = cepstrum @ init  # [F, order + 1]
    if active is None:
        active = jnp.ones(mc.shape[:1], bool)
    else:
        active = jnp.asarray(active, bool).reshape(-1)
    idx = np.arange(order + 1)
    toeplitz_idx = np.abs(idx[:, None] - idx[None, :])
    hankel_idx = idx[:, None] + idx[None, :]

    def cond(state):
        it, _, _, _, active = state
        return (it <= max_iter) & jnp.any(active)

    def body(state):
        it, mc, prev_r0, has_prev, active = state
        residual = periodogram * jnp.exp(-(mc @ model))  # I / |D|^2
        r = residual @ autocorr  # [F, 2 order + 1]
        r0 = r[:, 0]
        check = it >= min_iter
        converged = check & has_prev & (jnp.abs((r0 - prev_r0) / r0) < threshold)
        active = active & ~converged
        prev_r0 = jnp.where(check, r0, prev_r0)
        has_prev = has_prev | check
        hessian = r[:, toeplitz_idx] + r[:, hankel_idx]  # halved; so is the gradient below
        gradient = (r[:, : order + 1] - gradient_const)[..., None]
        step = cho_solve((jnp.linalg.cholesky(hessian), True), gradient)[..., 0]  # SPD Gram matrix
        mc = jnp.where(active[:, None], mc + step, mc)
        return it + 1, mc, prev_r0, has_prev, active

    zeros = jnp.zeros(mc.shape[:1], jnp.float32)
    state = (1, mc, zeros, jnp.zeros(mc.shape[:1], bool), active)
    mc = lax.while_loop(cond, body, state)[1]
    return mc.reshape(*lead, order + 1)


def num_frames(lengths):
    """Frames per example (non-padded framing): 1 + (len - 1024) // 256, 0 below one frame."""
    return jnp.maximum(1 + (jnp.asarray(lengths) - FRAME_LENGTH) // HOP_LENGTH, 0)


def mel_cepstrogram(x, lengths, sample_rate: int):
    """Mel-cepstra of x [B, T] -> ([B, frames, order + 1], valid frame counts [B])."""
    order, alpha = mcep_params(sample_rate)
    x = jnp.asarray(x, jnp.float32)
    if x.shape[-1] < FRAME_LENGTH:
        raise ValueError(f"signals need at least {FRAME_LENGTH} samples, got {x.shape[-1]}")
    frames = frame(x, FRAME_LENGTH, HOP_LENGTH) * jnp.asarray(sptk_hamming(FRAME_LENGTH), jnp.float32)
    count = num_frames(lengths)
    active = jnp.arange(frames.shape[1])[None, :] < count[:, None]
    return mel_cepstrum(frames, order, alpha, active=active), count


def dtw(x, y, x_lengths, y_lengths):
    """Exact DTW of x [B, N, D] against y [B, M, D] with Euclidean local distance.

    Steps (i-1, j), (i, j-1), (i-1, j-1), each adding the distance of the cell entered; ties pick
    them in that order (fastdtw's). Returns (total cost [B], path length in cells [B]) of the best
    path from (0, 0) to (x_lengths - 1, y_lengths - 1).
    """
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    batch, n, _ = x.shape
    m = y.shape[1]
    num_diag = n + m - 1
    rows = jnp.arange(n)
    # y reversed and zero-padded by n - 1 on both sides: cells (i, s - i), i = 0 .. n - 1, read the
    # contiguous window starting at m + n - 2 - s.
    y_rev = jnp.pad(y, ((0, 0), (n - 1, n - 1), (0, 0)))[:, ::-1]

    def distances(s):
        """Local distances on anti-diagonal s, cells (i, s - i) indexed by i -> [B, N] (inf outside).

        Taken from the differences, not |a|^2 + |b|^2 - 2ab: that form loses the small distances of
        similar frames to cancellation (and to reduced-precision matmuls on accelerators).
        """
        y_cells = lax.dynamic_slice_in_dim(y_rev, m + n - 2 - s, n, axis=1)  # [B, N, D]
        d = jnp.sqrt(jnp.sum((x - y_cells) ** 2, -1))
        cols = s - rows
        return jnp.where(((cols >= 0) & (cols < m))[None], d, jnp.inf)

    end_diag = x_lengths + y_lengths - 2
    end_i = x_lengths - 1
    inf_col = jnp.full((batch, 1), jnp.inf, jnp.float32)
    zero_col = jnp.zeros((batch, 1), jnp.float32)

    def shift(v, fill):  # v[i - 1] at i
        return jnp.concatenate([fill, v[:, :-1]], 1)

    def step(carry, s):
        cost1, len1, cost2, len2, out_cost, out_len = carry
        d = distances(s)
        up, up_len = shift(cost1, inf_col), shift(len1, zero_col)  # (i - 1, j)
        left, left_len = cost1, len1  # (i, j - 1)
        diag, diag_len = shift(cost2, inf_col), shift(len2, zero_col)  # (i - 1, j - 1)
        best = jnp.minimum(jnp.minimum(up, left), diag)
        best_len = jnp.where(up == best, up_len, jnp.where(left == best, left_len, diag_len))
        start = (s == 0) & (jnp.arange(n) == 0)[None, :]
        cost = d + jnp.where(start, 0.0, best)
        length = jnp.where(start, 1.0, best_len + 1.0)
        here = s == end_diag
        out_cost = jnp.where(here, jnp.take_along_axis(cost, end_i[:, None], 1)[:, 0], out_cost)
        out_len = jnp.where(here, jnp.take_along_axis(length, end_i[:, None], 1)[:, 0], out_len)
        return (cost, length, cost1, len1, out_cost, out_len), None

    inf_row = jnp.full((batch, n), jnp.inf, jnp.float32)
    zero_row = jnp.zeros((batch, n), jnp.float32)
    init = (inf_row, zero_row, inf_row, zero_row, jnp.full((batch,), jnp.nan), jnp.zeros((batch,)))
    carry, _ = lax.scan(step, init, jnp.arange(num_diag))
    return carry[4], carry[5]


def _mcd_chunk(ref, est, lengths, sample_rate: int):
    gain = jnp.sum(ref * est, -1) / (jnp.sum(est * est, -1) + _GAIN_EPS)
    est = est * gain[:, None]
    batch = ref.shape[0]
    both = jnp.concatenate([ref, est], 0)
    mc, count = mel_cepstrogram(both, jnp.concatenate([lengths, lengths]), sample_rate)
    cost, path_len = dtw(mc[:batch], mc[batch:], count[:batch], count[batch:])
    valid = count[:batch] > 0
    return jnp.where(valid, _MCD_SCALE * cost / jnp.maximum(path_len, 1.0), jnp.nan)


def mcd(ref, est, lengths=None, sample_rate: int = 16000):
    """Mel-cepstral distortion in dB. ref, est [B, T] float32, lengths [B] -> [B] float32.

    `sample_rate` must be static under jit. Examples shorter than one frame give NaN. A silent ref
    makes the gain 0, which silences est too: MCD 0, as the reference.
    """
    lengths, ref, est = masked_signals(lengths, ref, est)
    num_samples = ref.shape[-1]
    if num_samples < FRAME_LENGTH:
        raise ValueError(f"signals need at least {FRAME_LENGTH} samples, got {num_samples}")
    frames = 1 + (num_samples - FRAME_LENGTH) // HOP_LENGTH
    chunk = max(1, (1 << 22) // (2 * FRAME_LENGTH * frames))  # examples per step, ~16 MB of frames
    return map_in_chunks(
        lambda r, e, n: _mcd_chunk(r, e, n, sample_rate), chunk, ref, est, lengths
    )
