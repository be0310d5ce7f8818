"""Render-time wind mixing (REFERENCE.md §2.6 "Mixing"): the sidechaincompress port and the mixer.

The references are written here from the filter's definition: a per-sample float64 loop over
Python floats for ffmpeg's `sidechaincompress` (downward, rms detection, soft knee) and the full
mixing procedure (peak scaling, compression keyed by the wind, amix, clipping) on top of it.
"""

from __future__ import annotations

import functools
import math

import jax
import numpy as np
import pytest

from urgent_jax.simulation import wind

KNEE = 2.82843  # ffmpeg default

# jitted once per shape: eager dispatch of the time scan costs seconds per call
compress = jax.jit(wind.sidechain_compress, static_argnames="sample_rate")
mix = jax.jit(wind.mix_wind_noise, static_argnames="sample_rate")


def reference_compress(
    main: np.ndarray,
    sidechain: np.ndarray,
    sample_rate: int,
    threshold: float,
    ratio: float,
    attack_ms: float,
    release_ms: float,
    sc_gain: float = 1.0,
    knee: float = KNEE,
) -> np.ndarray:
    """ffmpeg sidechaincompress (downward, rms, mono, makeup = mix = level_in = 1), float64."""
    thres = math.log(threshold)
    lin_knee_start = threshold / math.sqrt(knee)
    lin_knee_stop = threshold * math.sqrt(knee)
    adj_knee_start = lin_knee_start**2
    knee_start = math.log(lin_knee_start)
    knee_stop = math.log(lin_knee_stop)
    compressed_knee_stop = (knee_stop - thres) / ratio + thres
    attack_coeff = min(1.0, 1.0 / (attack_ms * sample_rate / 4000.0))
    release_coeff = min(1.0, 1.0 / (release_ms * sample_rate / 4000.0))

    def output_gain(lin_slope: float) -> float:
        slope = 0.5 * math.log(lin_slope)
        gain = (slope - thres) / ratio + thres
        if knee > 1.0 and slope < knee_stop:
            # cubic Hermite, textbook basis: h00 p0 + h10 w m0 + h01 p1 + h11 w m1
            width = knee_stop - knee_start
            t = (slope - knee_start) / width
            h00 = 2 * t**3 - 3 * t**2 + 1
            h10 = t**3 - 2 * t**2 + t
            h01 = -2 * t**3 + 3 * t**2
            h11 = t**3 - t**2
            gain = (
                h00 * knee_start
                + h10 * width * 1.0
                + h01 * compressed_knee_stop
                + h11 * width / ratio
            )
        return math.exp(gain - slope)

    out = np.empty(len(main))
    lin_slope = 0.0
    for n in range(len(main)):
        a = abs(float(sidechain[n]) * sc_gain) ** 2
        lin_slope += (a - lin_slope) * (attack_coeff if a > lin_slope else release_coeff)
        gain = 1.0
        if lin_slope > 0 and lin_slope > adj_knee_start:
            gain = output_gain(lin_slope)
        out[n] = float(main[n]) * gain
    return out


def reference_mix(
    speech: np.ndarray,
    noise: np.ndarray,
    sample_rate: int,
    params: dict[str, float],
    use_clipping: bool,
    clipping_threshold: float,
    amix_gain: float = 1.0,
) -> np.ndarray:
    """The §2.6 procedure on one unpadded example, float64 (intended flag and amix gain)."""
    speech = speech.astype(np.float64)
    noise = noise.astype(np.float64)
    k = 0.9 / max(np.max(np.abs(speech)), np.max(np.abs(noise)))
    compressed = reference_compress(k * speech, k * noise, sample_rate, **params)
    mix = amix_gain * (compressed + k * noise) / k
    if use_clipping:
        mix = np.maximum(mix, clipping_threshold * np.min(mix))
        mix = np.minimum(mix, clipping_threshold * np.max(mix))
    return mix


def _speech_like(rng: np.random.Generator, num_samples: int, sample_rate: int) -> np.ndarray:
    """Syllable-rate bursts of a harmonic voice plus noise, with pauses; peak 1."""
    t = np.arange(num_samples) / sample_rate
    f0 = 120.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 10))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 2 * np.pi)), 0.0, None) ** 2
    envelope *= (np.sin(2 * np.pi * 0.5 * t) > -0.3).astype(float)  # pauses
    x = (voiced + 0.3 * rng.standard_normal(num_samples)) * envelope
    return (x / np.max(np.abs(x))).astype(np.float32)


@functools.cache
def _wind(duration_s: float, sample_rate: int, seed: int) -> np.ndarray:
    return wind.generate_wind_noise(duration_s, sample_rate, gustiness=3.0 + seed % 7, seed=seed)


def _official_params(rng: np.random.Generator, num: int) -> dict[str, np.ndarray]:
    """Draws from the official ranges (§2.1), float32 [num]."""
    ranges = {
        "threshold": (0.1, 0.3),
        "ratio": (1.0, 20.0),
        "attack_ms": (5.0, 100.0),
        "release_ms": (5.0, 100.0),
        "sc_gain": (0.8, 1.2),
    }
    return {k: rng.uniform(lo, hi, num).astype(np.float32) for k, (lo, hi) in ranges.items()}


def _row(params: dict[str, np.ndarray], i: int) -> dict[str, float]:
    return {k: float(v[i]) for k, v in params.items()}


# --- sidechain_compress ---


@pytest.mark.parametrize(("sample_rate", "duration_s"), [(8000, 1.5), (16000, 1.0), (48000, 0.5)])
def test_compressor_matches_float64_reference(rng, sample_rate, duration_s):
    num_samples = int(duration_s * sample_rate)
    num = 4
    main = np.stack([_speech_like(rng, num_samples, sample_rate) for _ in range(num)])
    # wind at a few side-chain levels around the thresholds, including the extremes of the ranges
    levels = np.array([1.0, 0.6, 0.35, 0.2], np.float32)[:, None]
    sidechain = np.stack([_wind(duration_s, sample_rate, s) for s in range(num)]) * levels
    params = _official_params(rng, num)
    params.update(
        threshold=np.array([0.1, 0.3, *params["threshold"][2:]], np.float32),
        ratio=np.array([20.0, 1.5, *params["ratio"][2:]], np.float32),
        attack_ms=np.array([5.0, 100.0, *params["attack_ms"][2:]], np.float32),
        release_ms=np.array([100.0, 5.0, *params["release_ms"][2:]], np.float32),
    )
    out = np.asarray(compress(main, sidechain, sample_rate, **params))
    assert out.dtype == np.float32 and out.shape == main.shape
    for i in range(num):
        ref = reference_compress(main[i], sidechain[i], sample_rate, **_row(params, i))
        np.testing.assert_allclose(out[i], ref, rtol=0, atol=1e-4)
    # the reference check is not vacuous: the loudest side chain ducks the speech by > 6 dB
    loud = np.abs(main[0]) > 0.3
    assert np.min(out[0][loud] / main[0][loud]) < 0.5


def test_compressor_matches_reference_on_real_speech(noizeus_pair):
    clean, _, sample_rate = noizeus_pair
    clean = clean[:sample_rate] / np.max(np.abs(clean[:sample_rate]))
    sidechain = 0.5 * _wind(1.0, sample_rate, 3)
    params = {
        "threshold": 0.15,
        "ratio": 8.0,
        "attack_ms": 20.0,
        "release_ms": 60.0,
        "sc_gain": 1.1,
    }
    out = np.asarray(compress(clean, sidechain, sample_rate, **params))
    ref = reference_compress(clean, sidechain, sample_rate, **params)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)


def test_ratio_one_and_silent_side_chain_leave_the_input_unchanged(rng):
    sample_rate = 16000
    main = np.stack([_speech_like(rng, 8000, sample_rate) for _ in range(2)])
    sidechain = np.stack([_wind(0.5, sample_rate, s) for s in range(2)])
    out = compress(main, sidechain, sample_rate, 0.1, 1.0, 5.0, 50.0, 1.2)
    np.testing.assert_allclose(np.asarray(out), main, rtol=0, atol=1e-6)
    silent = compress(main, np.zeros_like(main), sample_rate, 0.1, 20.0, 5.0, 50.0)
    np.testing.assert_array_equal(np.asarray(silent), main)
    # a side chain below the knee start (threshold / sqrt(knee)) does nothing either
    quiet = 0.05 * np.ones_like(main)
    below = compress(main, quiet, sample_rate, 0.1, 20.0, 5.0, 50.0)
    np.testing.assert_array_equal(np.asarray(below), main)


def test_louder_side_chain_reduces_the_gain_more():
    sample_rate = 16000
    sidechain = _wind(1.0, sample_rate, 5)[None] * np.array([[0.1], [0.2], [0.4], [0.8], [1.6]])
    main = np.ones_like(sidechain)
    gain = np.asarray(compress(main, sidechain, sample_rate, 0.15, 6.0, 10.0, 40.0))
    assert np.all(gain <= 1.0 + 1e-6)
    assert np.all(np.diff(gain, axis=0) <= 1e-6)  # monotone in the side-chain level
    assert np.all(np.diff(gain.mean(axis=-1)) < 0)  # and strictly on average
    # a harder ratio also reduces the gain more
    ratios = np.array([1.5, 4.0, 20.0], np.float32)
    sc = np.broadcast_to(sidechain[3], (3, sidechain.shape[-1]))
    gains = np.asarray(compress(main[:3], sc, sample_rate, 0.15, ratios, 10.0, 40.0))
    assert np.all(np.diff(gains, axis=0) <= 1e-6)


def test_attack_and_release_time_constants():
    sample_rate = 16000
    onset, offset, num_samples = 1600, 9600, 16000  # a 0.8 level between 0.1 s and 0.6 s
    sidechain = np.zeros((2, num_samples), np.float32)
    sidechain[:, onset:offset] = 0.8
    main = np.ones_like(sidechain)
    times = np.array([5.0, 50.0], np.float32)
    fast_attack = np.asarray(compress(main, sidechain, sample_rate, 0.1, 10.0, times, 20.0))
    fast_release = np.asarray(compress(main, sidechain, sample_rate, 0.1, 10.0, 20.0, times))

    # attack: the shorter time constant ducks at least as much at every instant after the onset
    attack = fast_attack[:, onset:offset]
    assert np.all(attack[0] <= attack[1] + 1e-6)
    final = attack[:, -1]
    np.testing.assert_allclose(final[0], final[1], rtol=1e-4)  # same steady state
    settle = [int(np.argmax(np.abs(a / f - 1.0) < 0.01)) for a, f in zip(attack, final)]
    assert settle[0] < settle[1]
    # ffmpeg's coefficient 4000 / (ms * fs): the envelope settles in ~attack_ms (4 time constants)
    for ms, n in zip(times, settle):
        assert 0.5 * ms < 1000.0 * n / sample_rate <= 1.2 * ms

    # release: after the side chain stops, the shorter release recovers to unity gain sooner
    release = fast_release[:, offset:]
    assert np.all(release[0] >= release[1] - 1e-6)
    recovered = [int(np.argmax(r > 0.99)) for r in release]
    assert 0 < recovered[0] < recovered[1]
    np.testing.assert_array_equal(fast_release[:, :onset], 1.0)  # nothing before the onset


def test_compressor_vmap_and_eager_match_the_batched_jit(rng):
    sample_rate = 8000
    main = np.stack([_speech_like(rng, 2000, sample_rate) for _ in range(3)])
    sidechain = np.stack([_wind(0.25, sample_rate, s) for s in range(3)])
    params = _official_params(rng, 3)
    batched = np.asarray(compress(main, sidechain, sample_rate, **params))
    fn = functools.partial(wind.sidechain_compress, sample_rate=sample_rate)
    mapped = jax.jit(jax.vmap(fn))(main, sidechain, **params)
    eager = fn(main, sidechain, **params)
    np.testing.assert_allclose(np.asarray(mapped), batched, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(eager), batched, rtol=0, atol=1e-6)


# --- mix_wind_noise ---


def _mix_batch(rng: np.random.Generator, sample_rate: int, lengths: list[int]):
    """Padded speech/noise [B, T] with garbage beyond lengths, and per-example parameters."""
    num, width = len(lengths), max(lengths) + 500
    speech = rng.uniform(-5.0, 5.0, (num, width)).astype(np.float32)  # padding must not matter
    noise = rng.uniform(-5.0, 5.0, (num, width)).astype(np.float32)
    snr_gains = [0.3, 1.0, 2.0, 0.6, 1.5, 0.8]  # wind relative to the peak-1 speech
    for i, n in enumerate(lengths):
        if n > 0:
            speech[i, :n] = 0.7 * _speech_like(rng, n, sample_rate)
            noise[i, :n] = snr_gains[i % len(snr_gains)] * _wind(n / sample_rate, sample_rate, i)
    params = _official_params(rng, num)
    clipping_threshold = rng.uniform(0.85, 1.0, num).astype(np.float32)
    return speech, noise, np.array(lengths, np.int32), params, clipping_threshold


def _mix(speech, noise, lengths, sample_rate, params, use_clipping, clipping_threshold, **kw):
    return np.asarray(
        mix(
            speech,
            noise,
            lengths,
            sample_rate,
            **params,
            use_clipping=use_clipping,
            clipping_threshold=clipping_threshold,
            **kw,
        )
    )


def test_mixer_matches_float64_reference(rng):
    sample_rate = 16000
    speech, noise, lengths, params, c = _mix_batch(rng, sample_rate, [8000, 6000, 7000, 3000])
    use_clipping = np.array([True, False, True, False])
    out = _mix(speech, noise, lengths, sample_rate, params, use_clipping, c)
    assert out.dtype == np.float32 and out.shape == speech.shape
    for i, n in enumerate(lengths):
        ref = reference_mix(
            speech[i, :n], noise[i, :n], sample_rate, _row(params, i), bool(use_clipping[i]), c[i]
        )
        np.testing.assert_allclose(out[i, :n], ref, rtol=0, atol=1e-4 * np.max(np.abs(ref)))
        np.testing.assert_array_equal(out[i, n:], 0.0)


def test_clipping_flag_and_amix_gain(rng):
    sample_rate = 8000
    speech, noise, lengths, params, _ = _mix_batch(rng, sample_rate, [4000, 3000, 2500])
    c = np.full(3, 0.85, np.float32)
    off = _mix(speech, noise, lengths, sample_rate, params, np.zeros(3, bool), c)
    on = _mix(speech, noise, lengths, sample_rate, params, np.ones(3, bool), c)
    for i, n in enumerate(lengths):
        ref = reference_mix(speech[i, :n], noise[i, :n], sample_rate, _row(params, i), False, 1.0)
        np.testing.assert_allclose(off[i, :n], ref, rtol=0, atol=1e-4 * np.max(np.abs(ref)))
        # with the flag: both peaks shrink to c of the unclipped ones, the rest is untouched
        lo = 0.85 * off[i, :n].min()
        hi = 0.85 * np.maximum(off[i, :n], lo).max()
        np.testing.assert_allclose(on[i, :n], np.clip(off[i, :n], lo, hi), rtol=0, atol=1e-6)
        assert on[i, :n].max() < off[i, :n].max() and on[i, :n].min() > off[i, :n].min()
    # amix_gain = 0.5 (the official ffmpeg amix) halves the mix, clipped or not
    for flag, full in ((False, off), (True, on)):
        half = _mix(speech, noise, lengths, sample_rate, params, flag, c, amix_gain=0.5)
        np.testing.assert_allclose(half, 0.5 * full, rtol=1e-6, atol=1e-7)


def test_padded_batch_equals_unpadded_examples(rng):
    sample_rate = 16000
    speech, noise, lengths, params, c = _mix_batch(rng, sample_rate, [5000, 1200, 3333])
    use_clipping = np.array([True, False, True])
    batched = _mix(speech, noise, lengths, sample_rate, params, use_clipping, c)
    for i, n in enumerate(lengths):
        row = slice(i, i + 1)
        row_params = {k: v[row] for k, v in params.items()}
        alone = _mix(
            speech[row, :n],
            noise[row, :n],
            lengths[row],
            sample_rate,
            row_params,
            use_clipping[row],
            c[row],
        )
        np.testing.assert_allclose(batched[i, :n], alone[0], rtol=0, atol=1e-6)


def test_mixer_vmap_matches_the_batched_jit(rng):
    sample_rate = 8000
    speech, noise, lengths, params, c = _mix_batch(rng, sample_rate, [2000, 1500, 1800, 1000])
    use_clipping = np.array([True, False, True, True])
    jitted = _mix(speech, noise, lengths, sample_rate, params, use_clipping, c)
    fn = functools.partial(wind.mix_wind_noise, sample_rate=sample_rate)
    kwargs = dict(params, use_clipping=use_clipping, clipping_threshold=c)

    def split(x: np.ndarray) -> np.ndarray:  # [4, ...] -> [2, 2, ...]: an outer axis to map over
        return x.reshape(2, 2, *x.shape[1:])

    mapped = jax.jit(jax.vmap(fn))(
        split(speech), split(noise), split(lengths), **jax.tree.map(split, kwargs)
    )
    np.testing.assert_allclose(np.asarray(mapped).reshape(jitted.shape), jitted, rtol=0, atol=1e-6)


def test_silent_rows_stay_finite(rng):
    sample_rate = 8000
    speech, noise, lengths, params, c = _mix_batch(rng, sample_rate, [2000, 2000, 2000, 0])
    speech[0, :2000] = 0.0  # no speech: the mix is the noise
    noise[1, :2000] = 0.0  # no wind: the speech passes unchanged
    speech[2, :2000] = 0.0  # nothing at all
    noise[2, :2000] = 0.0
    for flag in (False, True):
        out = _mix(speech, noise, lengths, sample_rate, params, np.full(4, flag), c)
        assert np.all(np.isfinite(out))
        np.testing.assert_array_equal(out[2:], 0.0)  # silent row and empty row (length 0)
        if not flag:
            np.testing.assert_allclose(out[0, :2000], noise[0, :2000], rtol=0, atol=1e-6)
            np.testing.assert_allclose(out[1, :2000], speech[1, :2000], rtol=0, atol=1e-6)
    amixed = _mix(speech, noise, lengths, sample_rate, params, False, c, amix_gain=0.5)
    np.testing.assert_allclose(amixed[0, :2000], 0.5 * noise[0, :2000], rtol=0, atol=1e-6)
