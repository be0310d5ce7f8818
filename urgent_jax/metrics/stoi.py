"""STOI and extended STOI (ESTOI) on padded batches, equal to pystoi 0.4.1 (REFERENCE.md §4.1).

Pipeline, per example on its valid samples only (Taal et al. 2011; Jensen & Taal 2016):

1. Resample to 10 kHz with pystoi's Octave-compatible `resample_oct` filter: a Kaiser-windowed sinc
   with cut-off 1 / (2 max(up, down)), 60 dB rejection and a roll-off of a tenth of the cut-off,
   normalised to unit sum. The taps are designed on the host (`octave_resampler`, our own code from
   those published facts) and applied in jax as a block polyphase convolution with the zero padding
   and alignment of scipy.signal.resample_poly, so the 10 kHz signal equals pystoi's to float32
   rounding. (`audio.resample` is a different filter: with it ESTOI on NOIZEUS at 8/16/48 kHz is off
   from pystoi by up to 4e-3, too much for parity; with this one by < 1e-6.)
2. Silent-frame removal: 256-sample frames, hop 128, window `np.hanning(258)[1:-1]`; frames more than
   40 dB below the loudest reference frame are dropped, the kept windowed frames are compacted to the
   front (stable argsort of the drop mask) and overlap-added. With fixed shapes the result is a padded
   signal plus the kept-frame count K per example.
3. STFT of the compacted signal: the same frames and window, 512-point FFT, K - 1 frames (pystoi's
   range(0, len - 256, 128)); 15 one-third-octave bands from 150 Hz (`third_octave_bands`).
4. 30-frame segments (K - 30 of them). ESTOI: row- then column-normalised segments, mean correlation.
   STOI: per-band normalisation, clipping at -15 dB SDR, mean correlation over segments and bands.
   Fewer than 30 STFT frames gives 1e-5, as pystoi (which also warns).

pystoi adds 2.2e-16 Gaussian noise before ESTOI's normalisations; here a constant row or column is
left at zero instead (the two differ only for digitally constant bands, by a random amount pystoi
itself does not reproduce between calls).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from urgent_jax.audio.levels import length_mask
from urgent_jax.audio.resample import block_conv
from urgent_jax.audio.stft import frame, hann_window, overlap_add

STOI_SAMPLE_RATE = 10000  # Hz, the rate every signal is resampled to
FRAME_LENGTH = 256  # samples at 10 kHz, for silence detection and the STFT
HOP_LENGTH = 128  # samples
N_FFT = 512
NUM_BANDS = 15  # one-third-octave bands
MIN_FREQ = 150.0  # Hz, centre of the lowest band
SEGMENT_FRAMES = 30  # N, frames per intermediate-intelligibility segment
DYN_RANGE_DB = 40.0  # frames this far below the loudest reference frame are silent
BETA_DB = -15.0  # lower SDR bound of classic STOI's clipping
SHORT_SCORE = 1e-5  # pystoi's value when fewer than SEGMENT_FRAMES STFT frames remain
_EPS = float(np.finfo(np.float64).eps)  # pystoi's EPS


# --- host-side constants (numpy, built once) ---


@functools.lru_cache(maxsize=64)
def third_octave_bands(
    sample_rate: int = STOI_SAMPLE_RATE,
    n_fft: int = N_FFT,
    num_bands: int = NUM_BANDS,
    min_freq: float = MIN_FREQ,
) -> np.ndarray:
    """One-third-octave band matrix [num_bands, n_fft // 2 + 1] of 0/1 (float32).

    Band k spans min_freq * 2^((2k -+ 1) / 6); each edge snaps to the nearest FFT bin (the lower one on
    a tie) and the band covers bins [low, high), as pystoi's `thirdoct`.
    """
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    k = np.arange(num_bands, dtype=np.float64)
    lows = min_freq * 2.0 ** ((2 * k - 1) / 6)
    highs = min_freq * 2.0 ** ((2 * k + 1) / 6)
    bands = np.zeros((num_bands, len(freqs)), np.float32)
    for i, (lo, hi) in enumerate(zip(lows, highs)):
        lo_bin = int(np.argmin((freqs - lo) ** 2))
        hi_bin = int(np.argmin((freqs - hi) ** 2))
        bands[i, lo_bin:hi_bin] = 1.0
    return bands


@functools.lru_cache(maxsize=64)
def analysis_window() -> np.ndarray:
    """pystoi's (MATLAB's) 256-point Hann window: the symmetric 258-point one without its end zeros."""
    return hann_window(FRAME_LENGTH + 2, periodic=False)[1:-1]


@functools.lru_cache(maxsize=64)
def octave_resampler(orig_sr: int, new_sr: int = STOI_SAMPLE_RATE) -> tuple[int, int, np.ndarray]:
    """(up, down, taps) of pystoi's Octave-compatible resampler, taps with unit sum (float64).

    Kaiser-windowed ideal low-pass: cut-off fc = 1 / (2 max(up, down)) cycles/sample at the
    intermediate rate, 60 dB rejection (beta = 0.1102 (60 - 8.7)), half length
    L = ceil((60 - 8) / (28.714 fc / 10)), 2L + 1 taps.
    """
    g = math.gcd(int(orig_sr), int(new_sr))
    up, down = int(new_sr) // g, int(orig_sr) // g
    rejection_db = 60.0
    cutoff = 1.0 / (2 * max(up, down))
    half = math.ceil((rejection_db - 8.0) / (28.714 * cutoff / 10.0))
    t = np.arange(-half, half + 1, dtype=np.float64)
    ideal = 2 * up * cutoff * np.sinc(2 * cutoff * t)
    taps = ideal * np.kaiser(2 * half + 1, 0.1102 * (rejection_db - 8.7))
    return up, down, taps / taps.sum()


@functools.lru_cache(maxsize=64)
def _resampler_kernel(orig_sr: int, min_block: int = 64) -> tuple[int, int, int, int, np.ndarray]:
    """The resampler as a stride-1 convolution over blocks of input samples.

    resample_poly computes y[m] = sum_j x[j] g[m down + H - j up], g = up * taps, H = (len(g) - 1) / 2.
    With m = q up + p: y[q up + p] = sum_i x[q down + i] g[p down + H - i up], i in [i_min, i_max].
    Grouping `group` consecutive q into one block of group * down inputs and group * up outputs turns it
    into Y[b] = sum_j X[b + j] @ K[j] over blocks of the input shifted by i_min, K [J, b_in, b_out].
    Returns (up, down, group, i_min, K float32).
    """
    up, down, taps = octave_resampler(orig_sr)
    g = taps * up
    half = (len(g) - 1) // 2
    p = np.arange(up)
    i_min = int(np.min(-(-(p * down + half - len(g) + 1) // up)))
    i_max = int(np.max((p * down + half) // up))
    width = i_max - i_min + 1
    group = max(1, -(-min_block // down))
    b_in, b_out = group * down, group * up
    num_j = -(-((group - 1) * down + width) // b_in)
    j, c, o = np.meshgrid(np.arange(num_j), np.arange(b_in), np.arange(b_out), indexing="ij")
    sub, phase = o // up, o % up
    i = j * b_in + c - sub * down + i_min  # input offset from q down for output (q, phase)
    tap = phase * down + half - i * up
    valid = (i >= i_min) & (i <= i_max) & (tap >= 0) & (tap < len(g))
    kernel = np.where(valid, g[np.clip(tap, 0, len(g) - 1)], 0.0)
    return up, down, group, i_min, kernel.astype(np.float32)


def resampled_length(num_samples, orig_sr: int):
    """ceil(num_samples * 10 kHz / orig_sr), the resample_poly output length (int or jnp array)."""
    up, down, _ = octave_resampler(orig_sr)
    return -(-num_samples * up // down)


# --- device-side pipeline ---


def resample_to_10k(x, orig_sr: int):
    """pystoi's resample_oct of x [B, T] (zero outside) -> float32 [B, ceil(T * 10 kHz / orig_sr)]."""
    x = jnp.asarray(x, jnp.float32)
    if orig_sr == STOI_SAMPLE_RATE:
        return x
    up, down, group, i_min, kernel = _resampler_kernel(orig_sr)
    b_in, b_out, num_j = group * down, group * up, kernel.shape[0]
    n = x.shape[-1]
    n_out = resampled_length(n, orig_sr)
    num_blocks = -(-n_out // b_out)
    total = (num_blocks + num_j - 1) * b_in
    # Block 0 starts at input sample i_min (< 0: zeros before the signal).
    x = jnp.pad(x, [(0, 0), (-i_min, max(0, total + i_min - n))])[:, :total]
    blocks = x.reshape(x.shape[0], -1, b_in)  # [B, blocks, b_in]
    y = block_conv(blocks, kernel)  # [B, num_blocks, b_out]
    return y.reshape(y.shape[0], -1)[:, :n_out]


def _num_frames(num_samples):
    """len(range(0, num_samples - 256, 128)): pystoi never takes the frame ending at the last sample."""
    return jnp.maximum(-(-(num_samples - FRAME_LENGTH) // HOP_LENGTH), 0)


def remove_silent_frames(ref, est, lengths):
    """Drop frames of ref and est where ref is 40 dB below its loudest frame; overlap-add the rest.

    ref, est float32 [B, T] at 10 kHz, lengths [B]. Returns (ref_sil, est_sil) [B, 128 (F + 1)] with the
    kept windowed frames compacted to the front, and the kept-frame count K [B] (valid length
    128 (K + 1)); F = 1 + (T - 256) // 128.
    """
    w = jnp.asarray(analysis_window(), jnp.float32)
    ref_frames = frame(ref, FRAME_LENGTH, HOP_LENGTH) * w  # [B, F, 256]
    est_frames = frame(est, FRAME_LENGTH, HOP_LENGTH) * w
    count = ref_frames.shape[1]
    is_valid = jnp.arange(count)[None, :] < _num_frames(lengths)[:, None]
    # 20 log10(|f| + eps) > max - 40 dB, compared as amplitudes.
    norm = jnp.sqrt(jnp.sum(ref_frames**2, axis=-1)) + _EPS
    loudest = jnp.max(jnp.where(is_valid, norm, 0.0), axis=-1, keepdims=True)
    keep = is_valid & (norm > loudest * 10.0 ** (-DYN_RANGE_DB / 20.0))
    num_kept = jnp.sum(keep, axis=-1)
    # Kept frames first, in order (stable sort of the drop flag), dropped ones zeroed.
    order = jnp.argsort(jnp.where(keep, 0, 1), axis=-1, stable=True)[..., None]  # [B, F, 1]
    is_kept = (jnp.arange(count)[None, :] < num_kept[:, None])[..., None]
    ref_kept = jnp.where(is_kept, jnp.take_along_axis(ref_frames, order, axis=1), 0.0)
    est_kept = jnp.where(is_kept, jnp.take_along_axis(est_frames, order, axis=1), 0.0)
    return overlap_add(ref_kept, HOP_LENGTH), overlap_add(est_kept, HOP_LENGTH), num_kept


def band_envelopes(x):
    """One-third-octave band amplitudes of x [B, T] at 10 kHz -> [B, frames, 15] (pystoi's X_tob)."""
    w = jnp.asarray(analysis_window(), jnp.float32)
    spec = jnp.fft.rfft(frame(x, FRAME_LENGTH, HOP_LENGTH) * w, n=N_FFT, axis=-1)
    power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2  # [B, frames, 257]
    bands = jnp.asarray(third_octave_bands().T)  # [257, 15]
    return jnp.sqrt(jnp.matmul(power, bands, precision=lax.Precision.HIGHEST))


def _inv_norm(sum_sq):
    """1 / sqrt(sum_sq), and 0 where sum_sq is 0 (a constant vector has no direction)."""
    is_pos = sum_sq > 0
    return jnp.where(is_pos, lax.rsqrt(jnp.where(is_pos, sum_sq, 1.0)), 0.0)


def _segment_scores(ref_tob, est_tob, extended: bool):
    """Per-segment intelligibility [B, S] of band envelopes [B, bands, frames], S = frames - N + 1.

    Segment s holds frames s .. s + N - 1. Instead of materialising the [B, S, bands, N] segments, a
    loop over the frame offset t works on [B, bands, S] slices (frame s + t of every segment), with the
    per-(segment, band) statistics carried as [B, bands, S] arrays.
    """
    num_segments = ref_tob.shape[-1] - SEGMENT_FRAMES + 1

    def at(x, t):  # [B, bands, S]: frame t of every segment
        return lax.dynamic_slice_in_dim(x, t, num_segments, axis=-1)

    def frame_sum(fn, *init):
        """sum_t fn(t) over the N frames of every segment (fn returns a tuple of arrays)."""
        return lax.fori_loop(
            0, SEGMENT_FRAMES, lambda t, acc: tuple(a + b for a, b in zip(acc, fn(t))), init
        )

    zeros = jnp.zeros((*ref_tob.shape[:-1], num_segments), jnp.float32)
    ref_mean, est_mean = frame_sum(lambda t: (at(ref_tob, t), at(est_tob, t)), zeros, zeros)
    ref_mean, est_mean = ref_mean / SEGMENT_FRAMES, est_mean / SEGMENT_FRAMES
    ref_ss, est_ss = frame_sum(
        lambda t: ((at(ref_tob, t) - ref_mean) ** 2, (at(est_tob, t) - est_mean) ** 2), zeros, zeros
    )
    if extended:
        # ESTOI (Jensen & Taal 2016): each band's trajectory zero-mean and unit-norm (rows), then each
        # frame's band vector zero-mean and unit-norm (columns); score = sum of products / N.
        ref_inv, est_inv = _inv_norm(ref_ss), _inv_norm(est_ss)

        def column_corr(t):
            ref_t = (at(ref_tob, t) - ref_mean) * ref_inv
            est_t = (at(est_tob, t) - est_mean) * est_inv
            ref_t = ref_t - jnp.mean(ref_t, axis=1, keepdims=True)
            est_t = est_t - jnp.mean(est_t, axis=1, keepdims=True)
            corr = jnp.sum(ref_t * est_t, axis=1)
            ref_norm = _inv_norm(jnp.sum(ref_t**2, axis=1))
            return (corr * ref_norm * _inv_norm(jnp.sum(est_t**2, axis=1)),)

        (total,) = frame_sum(column_corr, jnp.zeros((ref_tob.shape[0], num_segments), jnp.float32))
        return total / SEGMENT_FRAMES

    # Classic STOI (Taal et al. 2011): est scaled to the reference's energy per band, clipped at
    # -15 dB SDR, then the correlation of each band's trajectory, averaged over bands.
    ref_norm = jnp.sqrt(ref_ss + SEGMENT_FRAMES * ref_mean**2)  # |ref| over the segment
    est_norm = jnp.sqrt(est_ss + SEGMENT_FRAMES * est_mean**2)
    gain = ref_norm / (est_norm + _EPS)
    clip = 1.0 + 10.0 ** (-BETA_DB / 20.0)

    def est_clipped(t):
        return jnp.minimum(at(est_tob, t) * gain, at(ref_tob, t) * clip)

    (clipped_mean,) = frame_sum(lambda t: (est_clipped(t),), zeros)
    clipped_mean = clipped_mean / SEGMENT_FRAMES

    def centred_products(t):
        est_t = est_clipped(t) - clipped_mean
        return (est_t * (at(ref_tob, t) - ref_mean), est_t**2)

    cross, clipped_ss = frame_sum(centred_products, zeros, zeros)
    corr = cross / ((jnp.sqrt(ref_ss) + _EPS) * (jnp.sqrt(clipped_ss) + _EPS))
    return jnp.mean(corr, axis=1)


@functools.partial(jax.jit, static_argnames=("sample_rate", "extended"))
def stoi(ref, est, lengths, sample_rate: int, extended: bool = False):
    """STOI (or ESTOI with extended=True) of est against ref -> float32 [B]; pystoi.stoi to ~1e-6.

    ref, est: float32 [B, T] at sample_rate Hz (static), padded; lengths: int [B] valid samples (None:
    all T). Returns float32 [B]; examples with fewer than 30 STFT frames after silent-frame removal
    (or under 256 samples at 10 kHz, where pystoi fails) get 1e-5.
    """
    ref = jnp.asarray(ref, jnp.float32)
    est = jnp.asarray(est, jnp.float32)
    batch, num_samples = ref.shape
    if lengths is None:
        lengths = jnp.full((batch,), num_samples, jnp.int32)
    lengths = jnp.asarray(lengths, jnp.int32)
    short = jnp.full((batch,), SHORT_SCORE, jnp.float32)
    num_samples_10k = resampled_length(num_samples, sample_rate)
    max_frames = max(-(-(num_samples_10k - FRAME_LENGTH) // HOP_LENGTH), 0)  # static _num_frames
    if max_frames <= SEGMENT_FRAMES:  # no example can reach 30 STFT frames
        return short
    mask = length_mask(lengths, num_samples)
    ref_10k = resample_to_10k(jnp.where(mask, ref, 0.0), sample_rate)
    est_10k = resample_to_10k(jnp.where(mask, est, 0.0), sample_rate)
    lengths_10k = resampled_length(lengths, sample_rate)

    ref_sil, est_sil, num_kept = remove_silent_frames(ref_10k, est_10k, lengths_10k)
    # The compacted signal holds num_kept + 1 hops, i.e. num_kept - 1 pystoi STFT frames.
    # [B, F, 15] -> [B, 15, F - 1]: frame F - 1 is never valid.
    ref_tob = jnp.swapaxes(band_envelopes(ref_sil)[:, :-1], 1, 2)
    est_tob = jnp.swapaxes(band_envelopes(est_sil)[:, :-1], 1, 2)
    per_segment = _segment_scores(ref_tob, est_tob, extended)  # [B, S]
    num_segments = num_kept - SEGMENT_FRAMES  # (num_kept - 1) - N + 1
    is_valid = jnp.arange(per_segment.shape[1])[None, :] < num_segments[:, None]
    total = jnp.sum(jnp.where(is_valid, per_segment, 0.0), axis=-1)
    score = total / jnp.maximum(num_segments, 1)
    return jnp.where(num_segments >= 1, score, short)


def estoi(ref, est, lengths, sample_rate: int):
    """Extended STOI of est against ref -> float32 [B]; pystoi.stoi(ref, est, fs, extended=True).

    ref, est: float32 [B, T] at sample_rate Hz (static), padded; lengths: int [B] (None: all T).
    """
    return stoi(ref, est, lengths, sample_rate=sample_rate, extended=True)
