"""`simulate` end to end: reference order, determinism for a key, padding invariance, no NaN."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from urgent_jax.simulation import distortions as D
from urgent_jax.simulation.mixer import Sources, simulate, simulate_batch
from urgent_jax.simulation.params import (
    AugmentationChain,
    ClippingSpec,
    PacketLossSpec,
    chain_to_params,
    sample_batch_params,
)
from urgent_jax.simulation.wind import generate_wind_noise

FS = 16000


def _sources(rng, lengths, width, noise_len=40000, rir=True):
    b = len(lengths)
    speech = np.zeros((b, width), np.float32)
    t = np.arange(width) / FS
    for i, n in enumerate(lengths):
        speech[i, :n] = (np.sin(2 * np.pi * 150 * t[:n]) * (np.sin(2 * np.pi * 2 * t[:n]) > 0)
                         + 0.05 * rng.standard_normal(n))
    noise = rng.standard_normal((b, noise_len)).astype(np.float32)
    rir_len = 4000
    h = rng.standard_normal((b, rir_len)) * np.exp(-np.arange(rir_len) / 600.0) * 0.2
    h[:, 40] = 1.0
    return Sources(speech, np.asarray(lengths, np.int32), noise, np.full(b, noise_len, np.int32),
                   h.astype(np.float32), np.full(b, rir_len if rir else 0, np.int32))


def _stack(params):
    return jax.tree.map(lambda *a: np.stack(a), *params)


@pytest.fixture(scope="module")
def sim():
    return jax.jit(functools.partial(simulate, sample_rate=FS))


def test_plain_additive_mixture_matches_manual(sim, rng):
    src = _sources(rng, [16000, 12000], 16000, rir=False)
    prm = _stack([chain_to_params(AugmentationChain(), snr_db=5.0, use_rir=False, sample_rate=FS,
                                  max_num_samples=16000)] * 2)
    key = jax.random.PRNGKey(0)
    mix = sim(key, src, prm)
    speech = D.highpass(src.speech, src.lengths, FS)
    noise = D.align_noise(key, src.noise, src.noise_lengths, src.lengths, 16000)
    noise = noise * D.snr_scale(speech, noise, src.lengths, jnp.array([5.0, 5.0]))[:, None]
    (t, n, _), _ = D.peak_normalize((speech, speech + noise, noise), src.lengths)
    np.testing.assert_allclose(np.asarray(mix.target), np.asarray(t), atol=1e-5)
    np.testing.assert_allclose(np.asarray(mix.noisy), np.asarray(n), atol=1e-5)
    peaks = np.maximum(np.abs(np.asarray(mix.noisy)).max(1), np.abs(np.asarray(mix.target)).max(1))
    np.testing.assert_allclose(np.maximum(peaks, np.abs(np.asarray(mix.noise)).max(1)), 0.9, rtol=1e-5)
    assert not np.asarray(mix.noisy)[1, 12000:].any()


def test_augmentations_apply_in_drawn_order(sim, rng):
    src = _sources(rng, [16000], 16000, rir=False)
    clip = ClippingSpec(0.05, 0.95)
    loss = PacketLossSpec((3, 4, 10))
    a = _stack([chain_to_params(AugmentationChain(None, (clip, loss)), snr_db=10.0, use_rir=False,
                                sample_rate=FS, max_num_samples=16000)])
    b = _stack([chain_to_params(AugmentationChain(None, (loss, clip)), snr_db=10.0, use_rir=False,
                                sample_rate=FS, max_num_samples=16000)])
    key = jax.random.PRNGKey(1)
    ya, yb = np.asarray(sim(key, src, a).noisy[0]), np.asarray(sim(key, src, b).noisy[0])
    # Clipping first: the lost packets are exact zeros; loss first, the zeros move the quantiles and
    # the later clip maps them to a bound (0 is inside it), so both zero the spans but differ elsewhere.
    for p in (3, 4, 10):
        assert not ya[p * 320 : (p + 1) * 320].any() and not yb[p * 320 : (p + 1) * 320].any()
    assert not np.allclose(ya, yb)


def test_reverberant_target_is_early_reverb(sim, rng):
    src = _sources(rng, [16000], 16000, rir=True)
    prm = _stack([chain_to_params(AugmentationChain(), snr_db=20.0, use_rir=True, sample_rate=FS,
                                  max_num_samples=16000)])
    mix = sim(jax.random.PRNGKey(0), src, prm)
    speech = D.highpass(src.speech, src.lengths, FS)
    _, early = D.reverberate(speech, src.lengths, src.rir, src.rir_lengths, FS)
    ratio = np.asarray(mix.target)[0] / np.where(np.abs(early[0]) > 1e-3, np.asarray(early[0]), np.nan)
    assert np.nanstd(ratio) < 1e-3 * np.nanmean(ratio)  # target = gain * early-reverberant speech


def test_same_key_same_mixture_different_key_different(rng):
    src = _sources(rng, [16000, 9000, 16000, 4000], 16000)
    fn = jax.jit(functools.partial(simulate_batch, sample_rate=FS))
    a, _ = fn(jax.random.PRNGKey(7), src)
    b, _ = fn(jax.random.PRNGKey(7), src)
    c, _ = fn(jax.random.PRNGKey(8), src)
    np.testing.assert_array_equal(np.asarray(a.noisy), np.asarray(b.noisy))
    assert not np.allclose(np.asarray(a.noisy), np.asarray(c.noisy))
    for m in (a, c):
        assert np.all(np.isfinite(np.asarray(m.noisy))) and np.all(np.isfinite(np.asarray(m.target)))


def test_padding_does_not_change_valid_output(sim, rng):
    src = _sources(rng, [9000], 9000)
    wide = Sources(np.pad(src.speech, ((0, 0), (0, 7000))), src.lengths, src.noise, src.noise_lengths,
                   src.rir, src.rir_lengths)
    chain = AugmentationChain(None, (ClippingSpec(0.02, 0.97),))
    p1 = _stack([chain_to_params(chain, snr_db=3.0, use_rir=True, sample_rate=FS, max_num_samples=9000)])
    p2 = _stack([chain_to_params(chain, snr_db=3.0, use_rir=True, sample_rate=FS, max_num_samples=16000)])
    key = jax.random.PRNGKey(3)
    narrow_mix = sim(key, src, p1)
    wide_mix = sim(key, wide, p2)
    np.testing.assert_allclose(np.asarray(wide_mix.noisy)[0, :9000], np.asarray(narrow_mix.noisy)[0],
                               atol=2e-5)
    assert not np.asarray(wide_mix.noisy)[0, 9000:].any()


def test_wind_examples_and_silent_sources_are_finite(sim, rng):
    src = _sources(rng, [16000, 16000, 16000], 16000)
    wind = generate_wind_noise(3.0, FS, 5.0, 1)
    noise = np.stack([wind[:40000]] * 3).astype(np.float32)
    speech = src.speech.copy()
    speech[2] = 0.0  # silent speech
    noise[1] = 0.0  # silent noise
    src = src._replace(speech=speech, noise=noise, is_wind=np.array([True, True, True]))
    prm = jax.jit(functools.partial(sample_batch_params, sample_rate=FS, max_num_samples=16000))(
        jax.random.PRNGKey(0), src.lengths, use_wind=np.array([True] * 3), use_rir=np.array([False] * 3))
    mix = sim(jax.random.PRNGKey(0), src, prm)
    for x in (mix.noisy, mix.target, mix.noise):
        assert np.all(np.isfinite(np.asarray(x)))
    assert np.abs(np.asarray(mix.noisy)[0]).max() > 0.1
