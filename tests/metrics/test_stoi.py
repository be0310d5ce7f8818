"""STOI / ESTOI: equal to pystoi 0.4.1 on real speech at 8/16/48 kHz, padded batches equal single
examples, short signals give 1e-5, identical signals give 1; host constants equal pystoi's."""

import warnings

import jax
import numpy as np
import pytest
import scipy.signal
import soundfile as sf
from pystoi import stoi as pystoi
from pystoi import utils as pystoi_utils

from urgent_jax.audio.resample import SAMPLE_RATES
from urgent_jax.metrics.stoi import (
    estoi,
    octave_resampler,
    resample_to_10k,
    stoi,
    third_octave_bands,
)

TOL = 1e-3  # |ours - pystoi|, fixed
PAIRS = [("sp03", "sp03_casino_sn5"), ("sp04", "sp04_casino_sn0"), ("sp05", "sp05_casino_sn-5")]


def _pad(signals):
    lengths = np.array([len(s) for s in signals])
    out = np.zeros((len(signals), lengths.max()), np.float32)
    for i, s in enumerate(signals):
        out[i, : len(s)] = s
    return out, lengths


def _pystoi(ref, est, fs, extended):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return pystoi(ref.astype(np.float64), est.astype(np.float64), fs, extended=extended)


@pytest.fixture(scope="module")
def speech_cases(shared_data):
    """[(name, clean, est)] at 16 kHz: three NOIZEUS noisy pairs, a little noise, delayed + filtered."""
    rng = np.random.default_rng(0)
    cases = []
    for clean_name, noisy_name in PAIRS:
        clean, fs = sf.read(shared_data / "noizeus" / f"{clean_name}.wav", dtype="float32")
        noisy, _ = sf.read(shared_data / "noizeus" / f"{noisy_name}.wav", dtype="float32")
        assert fs == 16000
        n = min(len(clean), len(noisy), 6 * fs + len(cases) * 4321)  # 6-7 s: pystoi stays quick
        cases.append((noisy_name, clean[:n], noisy[:n]))
    clean = cases[1][1]
    little = clean + 0.003 * rng.standard_normal(len(clean)).astype(np.float32)
    cases.append(("little_noise", clean, little))
    clean = cases[0][1][: 5 * 16000]
    delayed = np.concatenate([np.zeros(40, np.float32), clean[:-40]])  # 2.5 ms
    b, a = scipy.signal.butter(4, 3000, fs=16000)
    cases.append(("delayed_lowpass", clean, scipy.signal.lfilter(b, a, delayed).astype(np.float32)))
    return cases


@pytest.mark.parametrize("fs", [16000, 8000, 48000])
def test_equals_pystoi_on_speech(speech_cases, fs):
    """Every case in one padded batch (different lengths), ESTOI and STOI against pystoi."""

    def to_fs(x):
        if fs == 16000:
            return x
        g = np.gcd(fs, 16000)
        y = scipy.signal.resample_poly(x.astype(np.float64), fs // g, 16000 // g)
        return y.astype(np.float32)

    refs = [to_fs(c) for _, c, _ in speech_cases]
    ests = [to_fs(e) for _, _, e in speech_cases]
    ref, lengths = _pad(refs)
    est, _ = _pad(ests)
    both = jax.jit(lambda *a: (estoi(*a, sample_rate=fs), stoi(*a, sample_rate=fs)))  # one compile
    ours_e, ours_s = map(np.asarray, both(ref, est, lengths))
    for i, (name, _, _) in enumerate(speech_cases):
        want_e = _pystoi(refs[i], ests[i], fs, extended=True)
        want_s = _pystoi(refs[i], ests[i], fs, extended=False)
        assert abs(ours_e[i] - want_e) <= TOL, (name, fs, ours_e[i], want_e)
        assert abs(ours_s[i] - want_s) <= TOL, (name, fs, ours_s[i], want_s)
    assert 0.2 < ours_e[2] < ours_e[1] < ours_e[0] < ours_e[3] < 1.0  # -5 < 0 < 5 dB < little noise


def test_padded_batch_equals_single_examples_and_padding_is_ignored(noizeus_pair):
    clean, noisy, fs = noizeus_pair
    rng = np.random.default_rng(1)
    lengths = np.array([3 * fs, 2 * fs + 777, 4 * fs])
    ref = rng.standard_normal((3, 4 * fs)).astype(np.float32)  # garbage beyond each length
    est = rng.standard_normal((3, 4 * fs)).astype(np.float32)
    for i, (n, start) in enumerate(zip(lengths, [0, fs, 2 * fs])):
        ref[i, :n], est[i, :n] = clean[start : start + n], noisy[start : start + n]
    batch = np.asarray(estoi(ref, est, lengths, sample_rate=fs))
    for i, n in enumerate(lengths):
        assert abs(batch[i] - _pystoi(ref[i, :n], est[i, :n], fs, extended=True)) <= TOL
    n = lengths[1]  # the padded example alone, unpadded
    single = estoi(ref[1:2, :n], est[1:2, :n], None, sample_rate=fs)
    np.testing.assert_allclose(batch[1], single[0], atol=1e-6)


def test_jit_inside_a_caller_and_identical_signals_score_one(noizeus_pair):
    clean, noisy, fs = noizeus_pair
    ref = np.stack([clean[: 3 * fs], clean[: 3 * fs]])
    est = np.stack([clean[: 3 * fs], noisy[: 3 * fs]])
    lengths = np.array([3 * fs, 3 * fs])

    @jax.jit
    def both(ref, est, lengths):
        return estoi(ref, est, lengths, fs), stoi(ref, est, lengths, sample_rate=fs)

    e, s = both(ref, est, lengths)
    np.testing.assert_allclose([e[0], s[0]], [1.0, 1.0], atol=1e-5)
    assert e[1] < 0.9 and s[1] < 0.9


def test_all_zero_estimate_scores_zero_where_pystoi_dithers(noizeus_pair):
    """README deliberate difference: pystoi's unseeded 2.2e-16 dither turns an all-zero estimate's
    constant bands into a random score of a few 1e-3; ours is exactly 0 (its expectation)."""
    clean, _, fs = noizeus_pair
    ref = clean[None, : 2 * fs]
    assert float(estoi(ref, np.zeros_like(ref), None, fs)[0]) == 0.0
    assert abs(_pystoi(ref[0], np.zeros_like(ref[0]), fs, extended=True)) < 2e-2

def test_short_or_mostly_silent_signals_give_1e5_as_pystoi(noizeus_pair):
    clean, noisy, fs = noizeus_pair
    # One burst of speech in silence: under 30 STFT frames survive the 40 dB silence removal.
    burst = np.zeros(2 * fs, np.float32)
    burst[fs : fs + 3000] = clean[fs : fs + 3000]
    assert _pystoi(burst, burst, fs, extended=True) == 1e-5
    ref, lengths = _pad([burst, clean[: 2 * fs], clean[:300]])  # 300 samples: < 1 frame at 10 kHz
    est, _ = _pad([burst, noisy[: 2 * fs], noisy[:300]])
    out = np.asarray(estoi(ref, est, lengths, sample_rate=fs))
    assert out[0] == out[2] == np.float32(1e-5)
    assert abs(out[1] - _pystoi(clean[: 2 * fs], noisy[: 2 * fs], fs, extended=True)) <= TOL
    tiny = stoi(clean[None, :4000], noisy[None, :4000], None, sample_rate=fs)  # 0.25 s: static path
    assert float(tiny[0]) == np.float32(1e-5)


def test_host_constants_and_resampler_equal_pystoi():
    obm, _ = pystoi_utils.thirdoct(10000, 512, 15, 150)
    np.testing.assert_array_equal(third_octave_bands(), obm)
    x = np.random.default_rng(2).standard_normal(12345)
    for fs in SAMPLE_RATES:
        up, down, taps = octave_resampler(fs)
        assert up / down == 10000 / fs
        want_taps = pystoi_utils._resample_window_oct(10000, fs)
        np.testing.assert_allclose(taps, want_taps / want_taps.sum(), rtol=1e-12, atol=1e-15)
        want = pystoi_utils.resample_oct(x, 10000, fs)
        got = np.asarray(resample_to_10k(x[None].astype(np.float32), fs))[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5)
