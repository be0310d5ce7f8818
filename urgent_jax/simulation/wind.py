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

The generator runs once per source file, so it is plain numpy/scipy rather than a jitted function.

Render-time wind mixing (REFERENCE.md §2.6 "Mixing") is the jax half of this module:
`sidechain_compress` re-implements ffmpeg's `sidechaincompress` filter (downward, rms detection,
mono) and `mix_wind_noise` runs the whole official procedure (peak scaling, compression keyed by the
wind, `amix`, optional clipping) on padded batches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
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


# --------------------------------------------------------------------------------------------------
# Render-time mixing (jax)
# --------------------------------------------------------------------------------------------------

DEFAULT_KNEE = 2.82843  # ffmpeg sidechaincompress default knee (linear, ~9 dB wide)
MIX_PEAK = 0.9  # the official mixer scales speech and noise to this joint peak before ffmpeg


def _params(x, shape: tuple[int, ...]) -> jax.Array:
    """A scalar or array parameter -> float32 broadcast to `shape` (the signal's leading dims)."""
    return jnp.broadcast_to(jnp.asarray(x, jnp.float32), shape)


def _envelope(power: jax.Array, attack_coeff: jax.Array, release_coeff: jax.Array) -> jax.Array:
    """One-pole attack/release follower of the squared side chain [..., T] -> [..., T].

    e[n] = e[n-1] + (p[n] - e[n-1]) * (attack_coeff if p[n] > e[n-1] else release_coeff), e[-1] = 0.
    The only sequential part of the compressor: a scan over time whose carry holds all leading
    dims. A plain per-sample scan is the fastest form on XLA:CPU (an unrolled body is slower).
    """
    lead = power.shape[:-1]

    def step(env: jax.Array, p: jax.Array) -> tuple[jax.Array, jax.Array]:
        env = env + (p - env) * jnp.where(p > env, attack_coeff, release_coeff)
        return env, env

    init = jnp.zeros(lead, power.dtype)
    _, env = jax.lax.scan(step, init, jnp.moveaxis(power, -1, 0))  # over time: [T, ...]
    return jnp.moveaxis(env, 0, -1)


def _hermite(x, x0, x1, p0, p1, m0, m1) -> jax.Array:
    """Cubic Hermite spline on [x0, x1]: end values p0, p1, end slopes m0, m1 (per unit of x)."""
    width = x1 - x0
    t = (x - x0) / width
    t2 = t * t
    h01 = t2 * (3.0 - 2.0 * t)  # weight of p1 (that of p0 is 1 - h01)
    h10 = t * (1.0 - t) ** 2  # weight of width * m0
    h11 = t2 * (t - 1.0)  # weight of width * m1
    return p0 + h01 * (p1 - p0) + width * (h10 * m0 + h11 * m1)


def _compressor_gain(env: jax.Array, threshold, ratio, knee) -> jax.Array:
    """ffmpeg's downward soft-knee gain for an rms envelope (mean square) [..., T] -> [..., T].

    Works in natural-log amplitude: slope = ln(rms); above the knee the output level is
    (slope - ln thr) / ratio + ln thr; inside [thr / sqrt(knee), thr * sqrt(knee)] a Hermite
    spline joins the identity to that line. Gain 1 below the knee start.
    """
    thres = jnp.log(threshold)
    knee_start = jnp.log(threshold / jnp.sqrt(knee))
    knee_stop = jnp.log(threshold * jnp.sqrt(knee))
    compressed_knee_stop = (knee_stop - thres) / ratio + thres
    adj_knee_start = (threshold / jnp.sqrt(knee)) ** 2  # rms detection compares mean squares

    is_active = (env > 0.0) & (env > adj_knee_start)
    slope = 0.5 * jnp.log(jnp.where(is_active, env, 1.0))  # ln of the rms level
    level = (slope - thres) / ratio + thres
    use_knee = (knee > 1.0) & (slope < knee_stop)
    safe_stop = jnp.where(knee > 1.0, knee_stop, knee_start + 1.0)  # avoid 0 width at knee <= 1
    in_knee = _hermite(
        slope, knee_start, safe_stop, knee_start, compressed_knee_stop, 1.0, 1.0 / ratio
    )
    level = jnp.where(use_knee, in_knee, level)
    return jnp.where(is_active, jnp.exp(level - slope), 1.0)


def _valid_min_max(x: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(min, max) of x [..., T] over the valid samples, [..., 1] each; +-inf for an empty row.

    One variadic reduction: XLA:CPU fuses the masking into it instead of materialising masked
    copies of x (large fresh buffers, whose page faults cost more than the arithmetic here).
    """
    low, high = jax.lax.reduce(
        (jnp.where(valid, x, jnp.inf), jnp.where(valid, x, -jnp.inf)),
        (np.float32(np.inf), np.float32(-np.inf)),
        lambda a, b: (jnp.minimum(a[0], b[0]), jnp.maximum(a[1], b[1])),
        (x.ndim - 1,),
    )
    return low[..., None], high[..., None]


def sidechain_compress(
    main,
    sidechain,
    sample_rate: int,
    threshold,
    ratio,
    attack_ms,
    release_ms,
    sc_gain=1.0,
    knee=DEFAULT_KNEE,
    makeup=1.0,
    mix=1.0,
    level_in=1.0,
) -> jax.Array:
    """ffmpeg `sidechaincompress` (downward, rms detection, mono): main ducked by the side chain.

    main, sidechain: float32 [..., T] at sample_rate (Hz, static). threshold: linear amplitude;
    ratio >= 1; attack_ms, release_ms: envelope time constants (ffmpeg's coefficient
    min(1, 4000 / (ms * fs))); sc_gain: ffmpeg `level_sc`; knee: linear width (> 1 soft knee);
    makeup, mix, level_in: as in ffmpeg. Parameters are scalars or arrays broadcastable to the
    leading dims. Returns main * level_in * (gain * makeup * mix + 1 - mix) [..., T], float32.
    """
    main = jnp.asarray(main, jnp.float32)
    sidechain = jnp.asarray(sidechain, jnp.float32)
    if main.shape != sidechain.shape:
        raise ValueError(f"main {main.shape} and sidechain {sidechain.shape} must have one shape")
    lead = main.shape[:-1]
    # per-example parameters against the time axis: [..., 1]
    columns = (threshold, ratio, knee, makeup, mix, level_in, sc_gain)
    threshold, ratio, knee, makeup, mix, level_in, sc_gain = (
        _params(x, lead)[..., None] for x in columns
    )
    attack_coeff = jnp.minimum(1.0, 1.0 / (_params(attack_ms, lead) * (sample_rate / 4000.0)))
    release_coeff = jnp.minimum(1.0, 1.0 / (_params(release_ms, lead) * (sample_rate / 4000.0)))

    env = _envelope(jnp.square(sidechain * sc_gain), attack_coeff, release_coeff)
    gain = _compressor_gain(env, threshold, ratio, knee)
    return main * level_in * (gain * makeup * mix + (1.0 - mix))


def mix_wind_noise(
    speech,
    noise,
    lengths,
    sample_rate: int,
    threshold,
    ratio,
    attack_ms,
    release_ms,
    sc_gain,
    use_clipping,
    clipping_threshold,
    amix_gain=1.0,
) -> jax.Array:
    """The official wind mixing (REFERENCE.md §2.6 "Mixing" steps 2-5) on a padded batch.

    speech [B, T] (the noisy-speech branch, reverberant or not), noise [B, T] (wind, already
    cropped/wrap-padded and scaled to the drawn SNR), lengths [B] valid samples; the other
    parameters are [B] arrays (or scalars): threshold, ratio, attack_ms, release_ms, sc_gain as in
    `sidechain_compress`, use_clipping bool, clipping_threshold c. Returns noisy [B, T] float32,
    zero beyond lengths:

        k = 0.9 / max(max|speech|, max|noise|)       (1 when both rows are silent)
        noisy = amix_gain * (sidechain_compress(k speech, k noise) + k noise) / k
        if use_clipping: noisy = max(noisy, c min(noisy)); noisy = min(noisy, c max(noisy))

    with min/max over the valid samples. This is the intended behaviour, not the reference's bugs
    (§6.1, §6.3): the clipping flag is honoured (the reference always clips), and amix_gain = 1
    keeps noisy on the scale of the target (0.5 reproduces ffmpeg amix's halving). The noise to
    store with the example is `noise` itself (the reference divides its k-scaled copy back by k);
    the target is not touched here. The 16-bit WAV round trip through ffmpeg is not modelled.
    """
    speech = jnp.asarray(speech, jnp.float32)
    noise = jnp.asarray(noise, jnp.float32)
    lead, num_samples = speech.shape[:-1], speech.shape[-1]
    valid = jnp.arange(num_samples) < jnp.asarray(lengths)[..., None]  # [B, T]
    speech = jnp.where(valid, speech, 0.0)
    noise = jnp.where(valid, noise, 0.0)

    speech_min, speech_max = _valid_min_max(speech, valid)
    noise_min, noise_max = _valid_min_max(noise, valid)
    peak = jnp.maximum(jnp.maximum(speech_max, -speech_min), jnp.maximum(noise_max, -noise_min))
    k = jnp.where(peak > 0.0, MIX_PEAK / jnp.where(peak > 0.0, peak, 1.0), 1.0)  # [B, 1]
    compressed = sidechain_compress(
        k * speech, k * noise, sample_rate, threshold, ratio, attack_ms, release_ms, sc_gain
    )
    noisy = _params(amix_gain, lead)[..., None] * (compressed + k * noise) / k

    # Clipping: the lower bound c * min, then the upper bound c * max of the lower-clipped signal,
    # whose max is max(max(noisy), c * min): both bounds come from one pass over noisy.
    c = _params(clipping_threshold, lead)[..., None]
    low, high = _valid_min_max(noisy, valid)
    low = c * low
    high = c * jnp.maximum(high, low)
    is_empty = ~jnp.any(valid, axis=-1, keepdims=True)  # length 0: keep the bounds finite
    low, high = jnp.where(is_empty, 0.0, low), jnp.where(is_empty, 0.0, high)
    clipped = jnp.minimum(jnp.maximum(noisy, low), high)
    use_clipping = jnp.broadcast_to(jnp.asarray(use_clipping, bool), lead)[..., None]
    noisy = jnp.where(use_clipping, clipped, noisy)
    return jnp.where(valid, noisy, 0.0)
