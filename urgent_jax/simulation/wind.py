"""Procedural wind noise: the host-side generator used to build wind-noise source files.

This is the generator the official recipe runs offline to make `wind_noise_<fs>hz_<i>` sources
(REFERENCE.md §2.6, after the SC-Wind-Noise-Generator of Mirabilii & Habets), written in numpy:

1. a wind-speed profile v [N] (m/s): `int(gustiness)` Weibull(2) points times 2, FFT-resampled to N
   samples, plus 10 randn(N) smoothed by a causal unit-sum Hann FIR of 0.1 s;
2. an excitation: white noise shaped by a long-term gain g_LT(v) and a short-term GARCH(1,1) gain
   whose coefficients are polynomials in the local speed, overlap-added with Hann 128 / hop 64;
3. coloring: per Hann-2048 window (hop 1024) an order-5 all-pole filter 1/A(z), A from five line
   spectral frequencies that are polynomials in the local speed;
4. peak normalisation to 0.95.

Render-time wind mixing (side-chain compression, clipping) is not here. The generator runs once per
source file, so it is plain numpy/scipy rather than a jitted function.
"""

from __future__ import annotations

import numpy as np
import scipy.signal

from urgent_jax.audio.stft import hann_window

# GARCH(1,1) coefficients as polynomials in the wind speed s (m/s), highest power first (§2.6).
GARCH_ALPHA = (
    -2.73244444508231e-05,
    0.00141129711949206,
    -0.0274652794467908,
    0.257613241095714,
    -0.139824587447063,
)
GARCH_BETA = (-9.75160902595897e-05, 0.00464300106846736, -0.0871968755558256, 0.651013973757802)
GARCH_OMEGA = (9.69585296574741e-05, -0.00231853830578967, 0.0124681159197788)

# LSF k (radians) = sum_p LSF_POLY[p, k] * s**(4 - p); rows s^4 ... s^0, columns LSF1 ... LSF5.
# fmt: off
LSF_POLY = np.array([
    [-2.63412497797108e-06, 5.93162248595821e-05, 0.000215613938043173,
     -0.000149723789407121, -0.000213703084399375],
    [9.50240139044154e-05, -0.00271741166649528, -0.0103783584000284,
     0.00483963669507075, 0.00931864887930701],
    [-0.000699199223507821, 0.0428714179385289, 0.177250839818556,
     -0.0329542145779793, -0.129910107562929],
    [0.0106849674771013, -0.234688122194936, -1.21337646113093,
     -0.168053225019258, 0.568371362156217],
    [-0.000966851130291645, 0.541693139684727, 3.24796925730457,
     2.54984352038733, 1.86097523205089],
])
# fmt: on

# Long-term gain: g_LT = sqrt(|10 ** ((GAIN_SLOPE_DB * v + GAIN_OFFSET_DB) / 10)|), v in m/s.
GAIN_SLOPE_DB = 8.00071114414022
GAIN_OFFSET_DB = -220.332082908370

MIN_SPEED, MAX_SPEED = 2.0, 18.0  # m/s, range of validity of the polynomial fits
PEAK = 0.95  # output peak amplitude

_EXCITATION_WIN, _EXCITATION_HOP = 128, 64  # samples
_COLOR_WIN, _COLOR_HOP = 2048, 1024  # samples


def lsf_to_lpc(lsf) -> np.ndarray:
    """Line spectral frequencies (radians, increasing in (0, pi)) [p] -> LPC polynomial [p + 1].

    A(z) = 1 + a_1 z^-1 + ... + a_p z^-p is the mean of the symmetric polynomial
    P(z) = A(z) + z^-(p+1) A(1/z) and the antisymmetric Q(z) = A(z) - z^-(p+1) A(1/z). The LSFs
    are the angles of their unit-circle roots, interlaced: lsf[0], lsf[2], ... belong to P and
    lsf[1], lsf[3], ... to Q. The trivial roots are z = -1 for P and z = +1 for Q when p is even,
    and z = +1 and z = -1 for Q when p is odd.
    """
    lsf = np.asarray(lsf, dtype=np.float64)
    if lsf.ndim != 1 or lsf.size == 0:
        raise ValueError(f"lsf must be a non-empty 1-D array, got shape {lsf.shape}")
    order = lsf.size

    def from_pairs(angles: np.ndarray) -> np.ndarray:
        # prod_k (1 - 2 cos(w_k) z^-1 + z^-2), coefficients in powers of z^-1
        poly = np.ones(1)
        for w in angles:
            poly = np.convolve(poly, [1.0, -2.0 * np.cos(w), 1.0])
        return poly

    sym = from_pairs(lsf[0::2])
    anti = from_pairs(lsf[1::2])
    if order % 2 == 0:
        sym = np.convolve(sym, [1.0, 1.0])
        anti = np.convolve(anti, [1.0, -1.0])
    else:
        anti = np.convolve(anti, [1.0, 0.0, -1.0])
    return 0.5 * (sym + anti)[: order + 1]


def speed_to_lsf(speed) -> np.ndarray:
    """Wind speed(s) (m/s, clipped to [2, 18]) [...] -> the five coloring LSFs, radians [..., 5]."""
    s = np.clip(np.asarray(speed, dtype=np.float64), MIN_SPEED, MAX_SPEED)[..., None]
    powers = s ** np.arange(4, -1, -1)  # [..., 5]: s^4 ... s^0
    # an explicit sum rather than a BLAS matmul: the same bits whatever the thread count
    return np.sum(powers[..., :, None] * LSF_POLY, axis=-2)


def wind_speed_profile(
    num_samples: int, sample_rate: int, gustiness: float, rng: np.random.Generator
) -> np.ndarray:
    """Step 1: wind speed (m/s) per sample [num_samples]."""
    num_points = max(int(gustiness), 1)
    points = 2.0 * rng.weibull(2.0, num_points)
    if num_points > 1:
        profile = scipy.signal.resample(points, num_samples)  # FFT (periodic) interpolation
    else:
        profile = np.full(num_samples, points[0])
    smoother = hann_window(max(int(0.1 * sample_rate), 1), periodic=False)
    smoother = smoother / smoother.sum()
    # causal FIR filtering (lfilter(smoother, 1, x)), computed by FFT
    jitter = scipy.signal.fftconvolve(10.0 * rng.standard_normal(num_samples), smoother)
    return profile + jitter[:num_samples]


def _frames(x: np.ndarray, win: int, hop: int, num_frames: int) -> np.ndarray:
    """[num_frames, win] views of x at hop spacing."""
    return np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:num_frames]


def _overlap_add_half(frames: np.ndarray, hop: int, length: int) -> np.ndarray:
    """Overlap-add frames [W, 2 * hop] at hop spacing into [length] (length >= (W + 1) * hop)."""
    num_frames = frames.shape[0]
    out = np.zeros(length)
    halves = out[: (num_frames + 1) * hop].reshape(num_frames + 1, hop)
    halves[:-1] += frames[:, :hop]
    halves[1:] += frames[:, hop:]
    return out


def _excitation(speed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Step 2: white noise with long-term and GARCH short-term gains [N] (arbitrary scale)."""
    n = speed.size
    win, hop = _EXCITATION_WIN, _EXCITATION_HOP
    noise = np.pad(rng.standard_normal(n), win)
    gain_db = GAIN_SLOPE_DB * np.pad(speed, win) + GAIN_OFFSET_DB
    long_term_gain = np.sqrt(np.abs(10.0 ** (gain_db / 10.0)))
    padded_speed = np.pad(speed, win, constant_values=MIN_SPEED)
    num_frames = (n + win) // hop + 1
    s = np.clip(_frames(padded_speed, win, hop, num_frames).mean(axis=-1), MIN_SPEED, MAX_SPEED)
    alpha = np.polyval(GARCH_ALPHA, s)
    beta = np.polyval(GARCH_BETA, s)
    beta = np.where(alpha + beta > 1.0, 0.0, beta)  # keep the variance recursion stationary
    omega = np.polyval(GARCH_OMEGA, s)
    # GARCH(1,1) per window from zero state, all windows at once: c_n = w + a e_{n-1}^2 + b c_{n-1}.
    draws = rng.standard_normal((win, num_frames))
    garch = np.empty((win, num_frames))
    c_prev = np.zeros(num_frames)
    e_prev = np.zeros(num_frames)
    for k in range(win):
        c_prev = omega + alpha * e_prev**2 + beta * c_prev
        e_prev = np.sqrt(np.abs(c_prev)) * draws[k]
        garch[k] = e_prev
    garch = garch.T  # [W, win]
    garch = garch / np.max(np.abs(garch), axis=-1, keepdims=True)
    # The reference overlap-adds windows 0 .. W - 2.
    used = num_frames - 1
    frames = (
        _frames(long_term_gain, win, hop, used)
        * np.sqrt(np.abs(garch[:used]))
        * _frames(noise, win, hop, used)
        * hann_window(win, periodic=False)
    )
    out = _overlap_add_half(frames, hop, n + 2 * win)
    return out[win : win + n]


def _color(excitation: np.ndarray, speed: np.ndarray) -> np.ndarray:
    """Step 3: speed-dependent all-pole coloring, Hann 2048 / hop 1024 overlap-add [N]."""
    n = excitation.size
    win, hop = _COLOR_WIN, _COLOR_HOP
    x = np.pad(excitation, win)
    padded_speed = np.pad(speed, win, constant_values=MIN_SPEED)
    num_frames = (n + 2 * win - win) // hop + 1
    lsf = speed_to_lsf(_frames(padded_speed, win, hop, num_frames).mean(axis=-1))  # [W, 5]
    segments = _frames(x, win, hop, num_frames) * hann_window(win, periodic=False)
    colored = np.empty_like(segments)
    for i in range(num_frames):
        colored[i] = scipy.signal.lfilter([1.0], lsf_to_lpc(lsf[i]), segments[i])
    out = _overlap_add_half(colored, hop, n + 2 * win)
    return out[win : win + n]


def generate_wind_noise(
    duration_s: float, sample_rate: int, gustiness: float, seed: int
) -> np.ndarray:
    """Wind noise float32 [round(duration_s * sample_rate)] with peak 0.95; deterministic per seed.

    gustiness (the official recipe draws it from U[3, 10]) sets the number of points of the slow
    speed profile, i.e. how many gusts the clip has.
    """
    num_samples = int(round(duration_s * sample_rate))
    if num_samples <= 0:
        raise ValueError(f"need a positive length, got {duration_s} s at {sample_rate} Hz")
    rng = np.random.default_rng(seed)
    speed = wind_speed_profile(num_samples, sample_rate, gustiness, rng)
    wind = _color(_excitation(speed, rng), speed)
    peak = np.max(np.abs(wind))
    if not np.isfinite(peak) or peak == 0:
        raise FloatingPointError("wind generator produced a silent or non-finite signal")
    return (PEAK / peak * wind).astype(np.float32)
