"""Non-silence detection and active power against a direct numpy implementation of REFERENCE.md §2.5."""

import jax
import numpy as np
import pytest

from urgent_jax.audio.activity import active_power, non_silence_mask


def reference_mask(x, threshold=0.01, frame_length=1024, frame_shift=512):
    """Straightforward per-signal numpy version of the ESPnet detector (1-D input)."""
    n = len(x)
    if n < frame_length:
        return np.ones(n, bool)
    x = x.astype(np.float64)
    nadd = (-(n - frame_length) % frame_shift) % frame_length
    xp = np.concatenate([x, np.zeros(nadd)])
    count = (len(xp) - frame_length) // frame_shift + 1
    power = np.array([np.mean(xp[i * frame_shift : i * frame_shift + frame_length] ** 2) for i in range(count)])
    if power.mean() == 0:
        return np.ones(n, bool)
    det = np.repeat(power / power.mean() > threshold, frame_shift)
    return np.concatenate([det, np.full(n - len(det), det[-1])])


def _speechlike(rng, n):
    env = np.zeros(n)
    for start in rng.integers(0, n - 3000, 5):
        env[start : start + rng.integers(1000, 3000)] = 1.0
    return (rng.standard_normal(n) * (env + 0.001)).astype(np.float32)


@pytest.mark.parametrize("n", [500, 1024, 1025, 1536, 9999, 16000])
def test_mask_matches_reference(n, rng):
    x = _speechlike(rng, max(n, 4000))[:n]
    ours = np.asarray(non_silence_mask(x[None]))[0]
    np.testing.assert_array_equal(ours, reference_mask(x))


def test_padded_batch_equals_individual(rng):
    lengths = [16000, 9999, 700, 12000]
    x = np.zeros((4, 16000), np.float32)
    for i, n in enumerate(lengths):
        x[i, :n] = _speechlike(rng, 16000)[:n]
    x[3, :12000] = 0.0  # all-zero example -> everything active
    mask = np.asarray(jax.jit(non_silence_mask)(x, np.array(lengths)))
    powers = np.asarray(active_power(x, np.array(lengths)))
    for i, n in enumerate(lengths):
        ref = reference_mask(x[i, :n])
        np.testing.assert_array_equal(mask[i, :n], ref)
        assert not mask[i, n:].any()
        np.testing.assert_allclose(powers[i], np.mean(x[i, :n][ref].astype(np.float64) ** 2), rtol=1e-5, atol=1e-12)


def test_real_speech_active_power(noizeus_pair):
    clean, _, _ = noizeus_pair
    ref = reference_mask(clean)
    assert 0.3 < ref.mean() < 0.99  # real speech has pauses
    np.testing.assert_allclose(float(active_power(clean[None])[0]), np.mean(clean[ref].astype(np.float64) ** 2),
                               rtol=1e-5)
