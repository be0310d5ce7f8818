"""Multi-resolution L1 loss vs a float64 numpy transcription of REFERENCE.md §3.4 and vs ESPnet's
MultiResL1SpecLoss (torch), plus length masking and finite gradients."""

from __future__ import annotations

import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from urgent_jax.losses.spectral import multi_resolution_l1

WINDOWS = (256, 512, 768, 1024)


def _numpy_mr_l1(ref, est, windows=WINDOWS, time_weight=0.5, eps=1e-6, normalize_variance=True):
    """§3.4 for one example in float64: std-normalise, alpha, time L1, rectangular-STFT L1."""
    r = np.asarray(ref, np.float64)
    e = np.asarray(est, np.float64)
    if normalize_variance:
        r = r / np.std(r, ddof=1)
        e = e / np.std(e, ddof=1)
    alpha = np.sum(e * r) / (np.sum(e**2) + eps)
    time_loss = np.sum(np.abs(alpha * e - r))
    spec_losses = []
    for w in windows:
        hop = w // 2

        def mag(x):
            x = np.pad(x, w // 2, mode="reflect")
            count = 1 + (len(x) - w) // hop
            frames = np.stack([x[i * hop : i * hop + w] for i in range(count)])
            return np.abs(np.fft.rfft(frames, axis=-1))

        spec_losses.append(np.sum(np.abs(mag(alpha * e) - mag(r))))
    return time_weight * time_loss + (1 - time_weight) * np.mean(spec_losses)


def _espnet_loss(**kwargs):
    # espnet2's time_domain module imports ci_sdr (only CISDRLoss uses it; not installed here).
    sys.modules.setdefault("ci_sdr", types.ModuleType("ci_sdr"))
    from espnet2.enh.loss.criterions.time_domain import MultiResL1SpecLoss

    return MultiResL1SpecLoss(**kwargs)


def _signals(rng, batch, num_samples):
    ref = rng.standard_normal((batch, num_samples)).astype(np.float32) * 0.1
    est = (0.7 * ref + 0.05 * rng.standard_normal((batch, num_samples))).astype(np.float32)
    return ref, est


def test_matches_numpy_reference(rng):
    ref, est = _signals(rng, 3, 4000)
    got = np.asarray(multi_resolution_l1(ref, est, None))
    want = np.array([_numpy_mr_l1(r, e) for r, e in zip(ref, est)])
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_matches_espnet_equal_lengths(rng, noizeus_pair):
    import torch

    clean, noisy, _ = noizeus_pair
    n = 16000
    white_ref, white_est = _signals(rng, 1, n)
    ref = np.stack([clean[:n], clean[n : 2 * n], white_ref[0]])
    est = np.stack([noisy[:n], 0.5 * clean[n : 2 * n] + noisy[n : 2 * n], white_est[0]])
    for eps, weight in ((1e-6, 0.5), (1e-8, 0.3)):
        loss = _espnet_loss(
            window_sz=list(WINDOWS), eps=eps, time_domain_weight=weight, normalize_variance=True
        )
        want = loss(torch.from_numpy(ref), torch.from_numpy(est)).numpy()
        lengths = jnp.array([n] * 3)
        got = np.asarray(multi_resolution_l1(ref, est, lengths, eps=eps, time_weight=weight))
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_matches_espnet_without_variance_normalisation(rng):
    import torch

    ref, est = _signals(rng, 2, 3000)
    loss = _espnet_loss(window_sz=[256, 512], eps=1e-6, normalize_variance=False)
    want = loss(torch.from_numpy(ref), torch.from_numpy(est)).numpy()
    got = multi_resolution_l1(ref, est, None, window_sizes=(256, 512), normalize_variance=False)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_padded_batch_equals_each_example_alone(rng):
    lengths = [4000, 2600, 1531]
    ref, est = _signals(rng, 3, 4000)
    garbage = rng.standard_normal((3, 4000)).astype(np.float32)
    for b, n in enumerate(lengths):  # padding content must not matter
        ref[b, n:] = garbage[b, n:]
        est[b, n:] = -garbage[b, n:]
    batched = np.asarray(multi_resolution_l1(ref, est, jnp.array(lengths)))
    alone = [_numpy_mr_l1(ref[b, :n], est[b, :n]) for b, n in enumerate(lengths)]
    np.testing.assert_allclose(batched, alone, rtol=1e-5)
    n = lengths[-1]  # and our own unpadded call on one of them (one more compile only)
    own = multi_resolution_l1(ref[-1:, :n], est[-1:, :n], None)
    np.testing.assert_allclose(batched[-1], np.asarray(own)[0], rtol=1e-5)


def test_gradients_finite_including_silent_target(rng):
    ref, est = _signals(rng, 3, 2048)
    ref[1] = 0.0  # silent target: the reference gives NaN (std 0); we give loss 0 and zero gradient
    est[2] = 0.0  # silent estimate
    lengths = jnp.array([2048, 2048, 1500])

    def total(est_):
        per_example = multi_resolution_l1(ref, est_, lengths)
        return jnp.sum(per_example), per_example

    (_, per_example), grad = jax.jit(jax.value_and_grad(total, has_aux=True))(jnp.asarray(est))
    per_example = np.asarray(per_example)
    assert np.all(np.isfinite(per_example))
    assert per_example[1] == 0.0
    assert np.all(np.isfinite(np.asarray(grad)))
    assert np.all(np.asarray(grad)[1] == 0.0)
    assert np.all(np.asarray(grad)[2, 1500:] == 0.0)  # padding gets no gradient
    assert np.any(np.asarray(grad)[0] != 0.0)


def test_rejects_odd_windows():
    with pytest.raises(ValueError, match="even"):
        multi_resolution_l1(np.zeros((1, 512)), np.zeros((1, 512)), None, window_sizes=(255,))


@pytest.mark.parametrize(
    "lengths,match",
    [
        ([0, 1000], r"lengths must lie in \[1, 1000\]"),
        ([-5, 1000], r"lengths must lie in \[1, 1000\]"),
        ([1001, 1000], r"lengths must lie in \[1, 1000\]"),
        ([1000], r"lengths must be \[batch\] = \(2,\), got shape \(1,\)"),
    ],
)
def test_concrete_lengths_outside_the_signal_raise(rng, lengths, match):
    ref, est = _signals(rng, 2, 1000)
    with pytest.raises(ValueError, match=match):
        multi_resolution_l1(ref, est, np.array(lengths))


def test_traced_lengths_are_clipped_to_the_signal(rng):
    """Under jit lengths cannot be checked: beyond T they act as T, negative ones as 0 (loss 0)."""
    ref, est = _signals(rng, 2, 1000)
    loss = jax.jit(multi_resolution_l1)
    got = np.asarray(loss(ref, est, jnp.array([2500, -3])))
    np.testing.assert_allclose(got[0], _numpy_mr_l1(ref[0], est[0]), rtol=1e-5)
    assert got[1] == 0.0  # a length of 0 selects nothing
