"""SDR (bss_eval, 512 taps) against fast_bss_eval in float64, and SI-SDR against its closed form.

fast_bss_eval is run through its torch backend (its numpy backend fails under numpy 2) with float64
tensors: its float32 path is itself several dB off on band-limited 48 kHz signals (see sdr.py).
"""

import functools

import fast_bss_eval
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from tests.metrics.references import reference_sdr
from urgent_jax.metrics.sdr import map_in_chunks, sdr, si_sdr

SDR_TOL_DB = 0.05  # |ours - fast_bss_eval| on every pair (the tolerance)
SI_SDR_TOL_DB = 1e-3

sdr_jit = jax.jit(
    sdr, static_argnames=("sample_rate", "filter_length", "clamp_db", "max_iterations", "float64")
)
# Both solvers: float64 (the default off TPU) and the float32 scheme (TPU).
SOLVERS = pytest.mark.parametrize("float64", [True, False], ids=["f64", "f32"])
si_sdr_jit = jax.jit(si_sdr, static_argnames=("sample_rate", "zero_mean", "clamp_db"))


def si_sdr_numpy(ref, est, zero_mean=True):
    ref = np.asarray(ref, np.float64)
    est = np.asarray(est, np.float64)
    if zero_mean:
        ref, est = ref - ref.mean(), est - est.mean()
    ref = ref / max(np.linalg.norm(ref), 1e-6)
    est = est / max(np.linalg.norm(est), 1e-6)
    c = np.dot(ref, est) ** 2
    return 10 * np.log10(c / (1 - c))


def pad_batch(signals):
    """[(ref, est), ...] -> zero-padded float32 [B, T] arrays and lengths."""
    length = max(len(r) for r, _ in signals)
    refs = np.zeros((len(signals), length), np.float32)
    ests = np.zeros_like(refs)
    for i, (r, e) in enumerate(signals):
        refs[i, : len(r)] = r
        ests[i, : len(e)] = e
    return refs, ests, np.array([len(r) for r, _ in signals], np.int32)


def resample(x, sample_rate):
    if sample_rate == 16000:
        return np.asarray(x, np.float32)
    return scipy.signal.resample_poly(x, sample_rate, 16000).astype(np.float32)


def rir(sample_rate, t60, rng):
    """Exponentially decaying noise RIR with a direct path."""
    t = np.arange(int(t60 * sample_rate)) / sample_rate
    h = rng.standard_normal(t.size) * np.exp(-6.9 * t / t60) * 0.3
    h[0] = 1.0
    return h


@pytest.fixture(scope="module")
def speech(shared_data):
    """Three NOIZEUS (clean, noisy) pairs at 16 kHz, 2 s each (0, 5 and -5 dB casino noise)."""
    pairs = []
    names = [("sp04", "sp04_casino_sn0"), ("sp03", "sp03_casino_sn5"), ("sp05", "sp05_casino_sn-5")]
    for name, noisy in names:
        c, fs = sf.read(shared_data / "noizeus" / f"{name}.wav", dtype="float32")
        n, _ = sf.read(shared_data / "noizeus" / f"{noisy}.wav", dtype="float32")
        assert fs == 16000
        pairs.append((c[8000:40000], n[8000:40000]))
    return pairs


def simulated_pairs(clean, sample_rate, rng):
    """Clean speech with white noise at several SNRs, a short FIR, reverberation (+ noise)."""
    out = []
    for snr_db in (-5.0, 10.0, 25.0, 40.0):
        noise = rng.standard_normal(clean.size)
        noise *= np.linalg.norm(clean) / np.linalg.norm(noise) * 10 ** (-snr_db / 20)
        out.append((clean, clean + noise))
    fir = rng.standard_normal(64) * np.exp(-np.arange(64) / 10.0)
    out.append((clean, scipy.signal.lfilter(fir, 1, clean)))
    for t60 in (0.05, 0.4):
        wet = scipy.signal.fftconvolve(clean, rir(sample_rate, t60, rng))[: clean.size]
        out.append((clean, wet))
        out.append((clean, wet + 0.05 * np.std(wet) * rng.standard_normal(clean.size)))
    return [(r.astype(np.float32), e.astype(np.float32)) for r, e in out]


def check_against_reference(pairs, sample_rate, float64):
    refs, ests, lengths = pad_batch(pairs)
    ours = np.asarray(sdr_jit(refs, ests, lengths, sample_rate, float64=float64))
    expected = np.array([reference_sdr(r, e) for r, e in pairs])
    # float64 follows the reference's own arithmetic; float32 converges towards it (module doc).
    np.testing.assert_allclose(ours, expected, atol=1e-4 if float64 else SDR_TOL_DB, rtol=0)
    return ours, expected


@SOLVERS
def test_sdr_real_speech_16k(noizeus_pair, speech, float64):
    clean, noisy, fs = noizeus_pair
    pairs = [(clean[:48000], noisy[:48000])] + speech
    _, expected = check_against_reference(pairs, fs, float64)
    assert expected.min() < 0 < expected.max()  # the -5 and +5 dB pairs straddle 0 dB


@SOLVERS
@pytest.mark.parametrize("sample_rate", [8000, 48000])
def test_sdr_real_speech_resampled(speech, sample_rate, float64):
    pairs = [(resample(c, sample_rate), resample(n, sample_rate)) for c, n in speech]
    check_against_reference(pairs, sample_rate, float64)


@SOLVERS
@pytest.mark.parametrize("sample_rate", [16000, 48000])
def test_sdr_simulated(speech, sample_rate, float64):
    rng = np.random.default_rng(7)
    clean = resample(speech[0][0], sample_rate)
    pairs = simulated_pairs(clean, sample_rate, rng)
    _, expected = check_against_reference(pairs, sample_rate, float64)
    # The SNR ladder is visible in the metric.
    assert np.all(np.diff(expected[:4]) > 5)


@SOLVERS
def test_sdr_clamp_and_invariances(speech, float64):
    clean = speech[0][0]
    rng = np.random.default_rng(3)
    silence = np.zeros(100, np.float32)
    # The filtered ref is the full (T + 511)-sample convolution, so a delay only scores +50 when the
    # delayed signal fits in T samples; cutting its tail at T leaves a residual (~21 dB here).
    tail_free = np.concatenate([clean[:-100], silence])
    delayed = np.concatenate([silence, clean[:-100]])
    noise = rng.standard_normal(clean.size).astype(np.float32)
    pairs = [
        (clean, clean),  # identical -> +50 (clamped)
        (clean, -0.3 * clean),  # a gain is a 1-tap filter -> +50
        (tail_free, delayed),  # a delay within the 512 taps -> +50
        (clean, np.zeros_like(clean)),  # silent estimate -> -50
        (clean, noise),  # unrelated: only the L/T share of noise is explained
        (clean, delayed),  # delayed and cut at T: finite
    ]
    refs, ests, lengths = pad_batch(pairs)
    ours = np.asarray(sdr_jit(refs, ests, lengths, float64=float64))
    np.testing.assert_allclose(ours[:3], 50.0, atol=1e-4)
    assert ours[3] == -50.0
    for i in (4, 5):
        assert abs(ours[i] - reference_sdr(*pairs[i])) < SDR_TOL_DB
    assert -25 < ours[4] < -15  # ~10 log10(512 / 32000)
    assert 10 < ours[5] < 40
    unclamped = np.asarray(sdr_jit(refs, ests, lengths, clamp_db=None, float64=float64))
    assert np.all(unclamped[:3] > 50.0) and unclamped[3] == -np.inf
    np.testing.assert_allclose(unclamped[4:], ours[4:], atol=1e-4)


@SOLVERS
def test_sdr_padded_batch_matches_per_example(speech, float64):
    pairs = [(c[: 20000 + 3000 * i], n[: 20000 + 3000 * i]) for i, (c, n) in enumerate(speech)]
    refs, ests, lengths = pad_batch(pairs)
    run = functools.partial(sdr_jit, float64=float64)
    batched = np.asarray(run(refs, ests, lengths))
    alone = [float(run(refs[i : i + 1], ests[i : i + 1], lengths[i : i + 1])[0]) for i in range(3)]
    np.testing.assert_allclose(batched, alone, atol=1e-4)
    unpadded = float(run(pairs[0][0][None], pairs[0][1][None])[0])  # its own FFT size
    assert abs(unpadded - batched[0]) < 2e-3
    # Garbage beyond `lengths` is ignored.
    noisy_pad = refs + (np.arange(refs.shape[1]) >= lengths[:, None]) * 5.0
    again = np.asarray(run(noisy_pad.astype(np.float32), ests, lengths))
    np.testing.assert_allclose(again, batched, atol=2e-3)


@pytest.mark.parametrize("zero_mean", [True, False])
def test_si_sdr_matches_closed_form(speech, zero_mean):
    rng = np.random.default_rng(11)
    clean = speech[0][0]
    pairs = [(c, n) for c, n in speech]
    pairs += [(clean, clean + 0.3 + 10 ** (-k / 20) * rng.standard_normal(clean.size)) for k in (0, 30)]
    tiny = 10 ** (-70 / 20) * np.std(clean) * rng.standard_normal(9000)
    pairs += [(clean[:9000], (0.5 * clean[:9000] + tiny).astype(np.float32))]  # 1 - c ~ 1e-7
    refs, ests, lengths = pad_batch([(r, np.asarray(e, np.float32)) for r, e in pairs])
    ours = np.asarray(si_sdr_jit(refs, ests, lengths, zero_mean=zero_mean))
    expected = [si_sdr_numpy(r, e, zero_mean) for r, e in pairs]
    np.testing.assert_allclose(ours[:-1], expected[:-1], atol=SI_SDR_TOL_DB)
    # Near-perfect estimates stay accurate in float32 (residual computed directly, not as 1 - c).
    assert expected[-1] > 65
    assert abs(ours[-1] - expected[-1]) < 0.05


def test_si_sdr_matches_fast_bss_eval(speech):
    refs, ests, lengths = pad_batch(speech)
    ours = np.asarray(si_sdr_jit(refs, ests, lengths, zero_mean=False))
    def as_torch(x):
        return torch.from_numpy(x.astype(np.float64))[None]

    expected = [float(fast_bss_eval.si_sdr(as_torch(r), as_torch(e))[0]) for r, e in speech]
    np.testing.assert_allclose(ours, expected, atol=SI_SDR_TOL_DB)


def test_si_sdr_edge_cases_and_jit():
    x = np.sin(np.arange(4000) / 7.0).astype(np.float32)
    refs = np.stack([x, x, np.zeros_like(x)])
    ests = np.stack([2 * x, np.zeros_like(x), x])
    eager = np.asarray(si_sdr(refs, ests, jnp.array([4000, 4000, 4000])))
    jitted = np.asarray(si_sdr_jit(refs, ests, jnp.array([4000, 4000, 4000])))
    np.testing.assert_array_equal(eager, jitted)
    assert eager[0] == np.inf  # c = 1 exactly; fast_bss_eval gives +inf without a clamp
    assert eager[1] == -np.inf and eager[2] == -np.inf
    clamped = np.asarray(si_sdr(refs, ests, None, clamp_db=50.0))
    np.testing.assert_array_equal(clamped, [50.0, -50.0, -50.0])


def test_map_in_chunks_balances_steps_and_keeps_results():
    # 16 examples, at most 12 per step: two steps of 8 (not 12 + 4 with 8 padded rows), same output.
    seen = []

    def fn(a, b):
        seen.append(a.shape[0])
        return jnp.sum(a * b, -1) + jnp.arange(a.shape[0]) * 0.0

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((16, 5)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((16, 5)), jnp.float32)
    out = np.asarray(map_in_chunks(fn, 12, a, b))
    assert seen == [8]
    np.testing.assert_allclose(out, np.sum(np.asarray(a) * np.asarray(b), -1), rtol=1e-6)
    seen.clear()
    out = np.asarray(map_in_chunks(fn, 4, a[:7], b[:7]))  # 7 examples -> 2 steps of 4, 1 pad row
    assert seen == [4] and out.shape == (7,)
    np.testing.assert_allclose(out, np.sum(np.asarray(a[:7]) * np.asarray(b[:7]), -1), rtol=1e-6)


@SOLVERS
def test_sdr_clips_shorter_than_the_filter(float64):
    """Under 257 samples fast_bss_eval's FFT size 2^ceil(log2(2n - 1)) <= 512 wraps its correlations
    around (any estimate scores +50 dB; under 129 samples it raises); ours keeps the linear
    correlations at every length: equal to the reference on the clip zero-padded to 300 samples
    (padding changes no linear correlation), and to the reference itself from 257 samples on."""
    rng = np.random.default_rng(3)
    lengths = [64, 200, 256, 257, 300, 511]
    pairs = []
    for n in lengths:
        r = rng.standard_normal(n).astype(np.float32)
        pairs.append((r, (r + rng.standard_normal(n)).astype(np.float32)))
    refs = np.zeros((len(pairs), 600), np.float32)
    ests = np.zeros_like(refs)
    for i, (r, e) in enumerate(pairs):
        refs[i, : len(r)], ests[i, : len(e)] = r, e
    ours = np.asarray(sdr_jit(refs, ests, jnp.array(lengths), float64=float64))
    for i, n in enumerate(lengths):
        if n < 257:
            expected = reference_sdr(refs[i, :300], ests[i, :300])
        else:
            expected = reference_sdr(*pairs[i])
        assert abs(ours[i] - expected) <= SDR_TOL_DB, (n, ours[i], expected)
        assert ours[i] < 20.0  # a noisy copy at ~0 dB SNR, never the wrapped-around +50 dB
    assert reference_sdr(*pairs[1]) == pytest.approx(50.0)  # the reference's wrap-around at 200
