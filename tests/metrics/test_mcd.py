"""MCD against pysptk + fastdtw (REFERENCE.md §4.1) on real speech; the jitted DTW against a
plain numpy dynamic programme."""


import jax
import numpy as np
import pytest
import soundfile as sf
import soxr

import pysptk  # pysptk 1.0.1 needs pkg_resources: setuptools < 81 (pinned by the Makefile)

from tests.metrics.references import MCEP_PARAMS, pad_batch, reference_mcd
from urgent_jax.metrics.mcd import dtw, mcd, mcep_params, mel_cepstrum, sptk_hamming


MCD_REL_TOL = 1e-2  # |ours / reference - 1| per example (the tolerance)

mcd_jit = jax.jit(mcd, static_argnames="sample_rate")


@pytest.fixture(scope="module")
def speech(shared_data):
    """NOIZEUS (clean, noisy) at 0 / 5 / -5 dB casino noise, 16 kHz, 1.5 .. 2 s (different lengths)."""
    pairs = []
    for i, (name, noisy) in enumerate(
        [("sp04", "sp04_casino_sn0"), ("sp03", "sp03_casino_sn5"), ("sp05", "sp05_casino_sn-5")]
    ):
        c, fs = sf.read(shared_data / "noizeus" / f"{name}.wav", dtype="float32")
        n, _ = sf.read(shared_data / "noizeus" / f"{noisy}.wav", dtype="float32")
        assert fs == 16000
        stop = 8000 + 32000 - 4111 * i
        pairs.append((c[8000:stop], n[8000:stop]))
    return pairs


@pytest.mark.parametrize("sample_rate", [16000, 8000, 48000])
def test_padded_batch_matches_reference(speech, sample_rate):
    pairs = speech
    if sample_rate != 16000:
        pairs = [tuple(soxr.resample(x, 16000, sample_rate) for x in pair) for pair in pairs]
    if sample_rate == 48000:
        pairs = pairs[:2]  # the reference takes ~1 s per second of 48 kHz audio
    refs, ests, lengths = pad_batch(pairs, fill=0.5)  # non-zero tails must be ignored
    ours = np.asarray(mcd_jit(refs, ests, lengths, sample_rate=sample_rate))
    expected = np.array([reference_mcd(r, e, sample_rate) for r, e in pairs])
    np.testing.assert_allclose(ours, expected, rtol=MCD_REL_TOL)
    assert np.all(expected > 3.0)  # noisy speech: several dB


def test_mcep_settings_are_the_reference_table():
    """(order, alpha) per rate as REFERENCE.md §4.1 lists them (the table in references.py)."""
    assert {fs: mcep_params(fs) for fs in MCEP_PARAMS} == MCEP_PARAMS


def test_mel_cepstrum_matches_pysptk(speech):
    """Per-frame analysis at every rate's (order, alpha): speech, noise and a near-silent frame."""
    rng = np.random.default_rng(0)
    clean = speech[0][0]
    noise = rng.standard_normal(1024) * 0.1
    frames = [clean[6000:7024], clean[12000:13024], noise, 1e-7 * clean[:1024]]
    frames = np.stack(frames).astype(np.float64) * sptk_hamming(1024)
    np.testing.assert_allclose(sptk_hamming(1024), pysptk.hamming(1024), rtol=1e-12)
    for sample_rate, (order, alpha) in MCEP_PARAMS.items():
        ours = np.asarray(mel_cepstrum(frames.astype(np.float32), order, alpha))
        expected = [pysptk.mcep(f, order=order, alpha=alpha, eps=1e-6, etype=1) for f in frames]
        np.testing.assert_allclose(ours, expected, atol=2e-4, err_msg=str(sample_rate))


def numpy_dtw(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Plain O(NM) DTW in float64: steps (i-1, j), (i, j-1), (i-1, j-1), ties in that order."""
    dist = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
    n, m = dist.shape
    cost = np.full((n, m), np.inf)
    steps = np.zeros((n, m), np.int64)
    for i in range(n):
        for j in range(m):
            if i == 0 and j == 0:
                cost[i, j], steps[i, j] = dist[0, 0], 1
                continue
            options = [(i - 1, j), (i, j - 1), (i - 1, j - 1)]
            options = [(cost[a, b], steps[a, b]) for a, b in options if a >= 0 and b >= 0]
            best = min(c for c, _ in options)
            cost[i, j] = dist[i, j] + best
            steps[i, j] = 1 + next(s for c, s in options if c == best)
    return float(cost[-1, -1]), int(steps[-1, -1])


def test_dtw_matches_numpy_dp():
    rng = np.random.default_rng(1)
    shapes = [(37, 41), (50, 23), (12, 60), (1, 9), (44, 1)]
    dim, n_max, m_max = 6, 50, 60
    x = np.zeros((len(shapes), n_max, dim), np.float32)
    y = np.full((len(shapes), m_max, dim), 9.0, np.float32)  # junk beyond the lengths
    expected = []
    for b, (n, m) in enumerate(shapes):
        xs = rng.standard_normal((n, dim)).astype(np.float32)
        ys = (rng.standard_normal((m, dim)) + 0.3).astype(np.float32)
        x[b, :n], y[b, :m] = xs, ys
        expected.append(numpy_dtw(xs.astype(np.float64), ys.astype(np.float64)))
    cost, steps = jax.jit(dtw)(x, y, np.array([s[0] for s in shapes]), np.array([s[1] for s in shapes]))
    np.testing.assert_allclose(np.asarray(cost), [c for c, _ in expected], rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(steps), [s for _, s in expected])
    # A sequence against itself: the diagonal, cost 0.
    cost, steps = dtw(x[:1], x[:1], np.array([37]), np.array([37]))
    assert abs(float(cost[0])) < 1e-3 and int(steps[0]) == 37


def test_short_and_silent_inputs(speech):
    """Shorter than one frame (1024 samples) -> NaN; silent signals score as the reference."""
    clean, noisy = speech[0]
    clean, noisy = soxr.resample(clean, 16000, 8000), soxr.resample(noisy, 16000, 8000)
    silent = np.zeros_like(clean)
    pairs = [(clean, noisy), (clean[:1000], noisy[:1000]), (silent, noisy), (clean, silent)]
    refs, ests, lengths = pad_batch(pairs)
    ours = np.asarray(mcd_jit(refs, ests, lengths, sample_rate=8000))
    assert np.isnan(ours[1]) and np.all(np.isfinite(ours[[0, 2, 3]]))
    for i in (0, 2, 3):
        assert abs(ours[i] - reference_mcd(*pairs[i], 8000)) <= MCD_REL_TOL * max(ours[i], 1.0), i
    assert ours[2] == 0.0  # silent ref: the gain silences est too
    with pytest.raises(ValueError, match="at least 1024 samples"):
        mcd(clean[None, :1000], noisy[None, :1000], sample_rate=8000)
    with pytest.raises(ValueError, match="no mel-cepstrum settings"):
        mcd(clean[None], noisy[None], sample_rate=12000)
