"""LSD against an independent numpy + librosa implementation of REFERENCE.md §4.1 on real speech.

The reference follows §4.1 on float32 signals (as they are read): the gain and the scaled estimate
are float32, librosa's STFT (float64 inside, complex64 out) is centred with zero padding.

Parity runs on NOIZEUS at 16 kHz and resampled with scipy's polyphase filter, whose image band keeps
real content ~60 dB down. A steep resampler (soxr) instead leaves only the float32 rounding noise of
the samples above the original Nyquist; there LSD depends on the last bits of the float32 gain (the
reference itself moves by ~1e-3 when the gain changes by one ulp, and our gain sums in another
order), so that case is checked at the magnitude level and with gains that are exact powers of two.
"""

import math

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import soxr

from tests.metrics.references import pad_batch, reference_lsd
from urgent_jax.metrics.lsd import _magnitude_compensated, _magnitude_float64, lsd, lsd_settings

REL_TOL = 1e-3  # |ours / reference - 1| per example

lsd_jit = jax.jit(lsd, static_argnames=("sample_rate", "float64"))
# Both STFTs: float64 (the default on CPU and GPU) and compensated float32 (TPU).
STFTS = pytest.mark.parametrize("float64", [True, False], ids=["stft64", "stft32c"])


@pytest.fixture(scope="module")
def speech(shared_data):
    """NOIZEUS (clean, noisy) at 0 / 5 / -5 dB and clean + white noise at 30 dB, 16 kHz, 2-3 s."""
    pairs = []
    for i, (name, noisy) in enumerate(
        [("sp04", "sp04_casino_sn0"), ("sp03", "sp03_casino_sn5"), ("sp05", "sp05_casino_sn-5")]
    ):
        c, fs = sf.read(shared_data / "noizeus" / f"{name}.wav", dtype="float32")
        n, _ = sf.read(shared_data / "noizeus" / f"{noisy}.wav", dtype="float32")
        assert fs == 16000
        start, stop = 4000, 4000 + 32000 + 7919 * i  # different lengths for the padded batch
        pairs.append((c[start:stop], n[start:stop]))
    clean = pairs[0][0]
    noise = np.random.default_rng(5).standard_normal(clean.size).astype(np.float32)
    pairs.append((clean, clean + 10 ** (-30 / 20) * np.std(clean) * noise))
    return pairs


def resampled(pairs, sample_rate):
    """Polyphase resampling (scipy's default Kaiser window) from 16 kHz."""
    if sample_rate == 16000:
        return pairs
    g = math.gcd(sample_rate, 16000)

    def convert(x):
        y = scipy.signal.resample_poly(x.astype(np.float64), sample_rate // g, 16000 // g)
        return y.astype(np.float32)

    return [(convert(r), convert(e)) for r, e in pairs]


@STFTS
@pytest.mark.parametrize("sample_rate", [16000, 8000, 22050, 48000])
def test_padded_batch_matches_reference(speech, sample_rate, float64):
    pairs = resampled(speech, sample_rate)
    refs, ests, lengths = pad_batch(pairs, fill=0.7)  # non-zero tails must be ignored
    ours = np.asarray(lsd_jit(refs, ests, lengths, sample_rate=sample_rate, float64=float64))
    expected = np.array([reference_lsd(r, e, sample_rate) for r, e in pairs])
    np.testing.assert_allclose(ours, expected, rtol=REL_TOL, atol=0)
    assert expected[3] < expected[0]  # clean + 30 dB noise vs the same clean at 0 dB


@pytest.mark.parametrize("sample_rate", [22050, 48000])  # gather and reshape framing
def test_padding_does_not_change_results(speech, sample_rate):
    pairs = resampled(speech[:2], sample_rate)
    refs, ests, lengths = pad_batch(pairs)
    batched = np.asarray(lsd_jit(refs, ests, lengths, sample_rate=sample_rate))
    alone = [float(lsd_jit(r[None], e[None], sample_rate=sample_rate)[0]) for r, e in pairs]
    # Equal up to float32 summation order in the gain (its rounding reaches the scaled estimate).
    np.testing.assert_allclose(batched, alone, rtol=1e-4)
    full = np.full_like(lengths, refs.shape[1])
    unmasked = np.asarray(lsd_jit(refs, ests, full, sample_rate=sample_rate))  # zero tail scored
    assert abs(unmasked[0] / batched[0] - 1) > 1e-2 and unmasked[1] == batched[1]


def test_silent_signals(speech):
    clean, noisy = speech[0]
    silent = np.zeros_like(clean)
    pairs = [(silent, noisy), (clean, silent), (silent, silent)]
    refs, ests, lengths = pad_batch(pairs)
    ours = np.asarray(lsd_jit(refs, ests, lengths, sample_rate=16000))
    expected = [reference_lsd(r, e, 16000) for r, e in pairs]
    np.testing.assert_allclose(ours, expected, rtol=REL_TOL)
    assert abs(ours[2] - 8 * math.log(10)) < 1e-4  # every bin ln(1e-8)


def test_settings_and_gain_invariance(speech):
    assert [lsd_settings(fs) for fs in (8000, 22050, 44100, 48000)] == [
        (256, 128), (705, 352), (1411, 705), (1536, 768)
    ]  # fmt: skip
    clean, noisy = speech[1]
    scaled = np.stack([noisy, -4.0 * noisy, 2.0**-4 * noisy, 1e-3 * noisy])
    ours = np.asarray(lsd_jit(np.stack([clean] * 4), scaled, sample_rate=16000))
    # The least-squares gain absorbs scale: exactly for powers of two, else up to the rounding of
    # the rescaled estimate.
    np.testing.assert_array_equal(ours[1:3], ours[0])
    np.testing.assert_allclose(ours[3], ours[0], rtol=REL_TOL)


@pytest.fixture(scope="module")
def soxr_speech(speech):
    """NOIZEUS clean speech (3 s) resampled with soxr HQ to 48 kHz: nothing above 8 kHz but the
    rounding noise of the float32 samples, ~180 dB below the loudest bin."""
    return soxr.resample(speech[0][0][:48000], 16000, 48000, "HQ")


@pytest.mark.parametrize("magnitude", [_magnitude_float64, _magnitude_compensated])
def test_stft_resolves_float32_rounding_noise(soxr_speech, magnitude):
    n_fft, hop = lsd_settings(48000)
    x = soxr_speech
    spec = librosa.stft(x.astype(np.float64), n_fft=n_fft, hop_length=hop, pad_mode="constant")
    expected = np.abs(spec).T  # [frames, bins], float64
    ours = np.asarray(jax.jit(magnitude, static_argnums=(1, 2))(x[None], n_fft, hop))[0]
    empty = slice(int(8500 / 48000 * n_fft), None)  # bins above 8.5 kHz
    assert np.median(expected[:, empty]) < 1e-8 * expected.max()
    rel = np.abs(ours[:, empty] - expected[:, empty]) / expected[:, empty]
    assert np.median(rel) < 1e-4 and np.percentile(rel, 99) < 1e-2
    if magnitude is _magnitude_float64:  # the reference's own arithmetic, rounded to float32
        assert rel.max() < 1e-6
    # A plain float32 STFT errs by as much as the content there.
    frames = librosa.util.frame(np.pad(x, n_fft // 2), frame_length=n_fft, hop_length=hop).T
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    plain = np.abs(np.asarray(jnp.fft.rfft(jnp.asarray(frames * window))))
    assert np.median(np.abs(plain[:, empty] - expected[:, empty]) / expected[:, empty]) > 1e-2


@STFTS
@pytest.mark.parametrize("sample_rate", [22050, 48000])
def test_empty_band_with_exact_gains(speech, sample_rate, float64):
    """est = ref and est = ref / 2 (gains 1 and 2, exact in any summation order): the distance comes
    from the bins where S ~ 1e-8, i.e. the empty band, and needs no rounding of the estimate."""
    x = soxr.resample(speech[1][0], 16000, sample_rate, "HQ")
    ests = np.stack([x, 0.5 * x])
    ours = np.asarray(lsd_jit(np.stack([x, x]), ests, sample_rate=sample_rate, float64=float64))
    expected = [reference_lsd(x, e, sample_rate) for e in ests]
    np.testing.assert_allclose(ours, expected, rtol=REL_TOL)
    assert expected[0] > 0.1  # far from 0: the empty band dominates


def test_default_stft_follows_backend(speech):
    """float64=None takes the float64 STFT off TPU (this suite runs on CPU)."""
    assert jax.default_backend() != "tpu"
    clean, noisy = speech[0]
    x = soxr.resample(clean, 16000, 48000, "HQ")
    ests = np.stack([x, soxr.resample(noisy, 16000, 48000, "HQ")])
    default = np.asarray(lsd_jit(np.stack([x, x]), ests, sample_rate=48000))
    f64 = np.asarray(lsd_jit(np.stack([x, x]), ests, sample_rate=48000, float64=True))
    compensated = np.asarray(lsd_jit(np.stack([x, x]), ests, sample_rate=48000, float64=False))
    np.testing.assert_array_equal(default, f64)
    assert not np.array_equal(default, compensated)  # the two STFTs round differently
