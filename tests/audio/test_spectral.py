"""Mel filterbanks vs librosa (Slaney and HTK), dB conversion vs librosa, spectral compression."""

import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from urgent_jax.audio import levels, spectral


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [(16000, 321, 120, 0, 8000), (16000, 512, 80, 20, 7600),
                                                        (48000, 2048, 128, 0, None), (8000, 256, 40, 0, 4000)])
@pytest.mark.parametrize("htk", [False, True])
@pytest.mark.parametrize("norm", ["slaney", None])
def test_mel_filterbank_matches_librosa(sr, n_fft, n_mels, fmin, fmax, htk, norm):
    ours = spectral.mel_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)


def test_mel_scale_round_trip():
    f = np.array([0.0, 100.0, 999.0, 1000.0, 4000.0, 22050.0])
    for htk in (False, True):
        np.testing.assert_allclose(spectral.mel_to_hz(spectral.hz_to_mel(f, htk), htk), f, rtol=1e-10, atol=1e-8)
        np.testing.assert_allclose(spectral.hz_to_mel(f, htk), librosa.hz_to_mel(f, htk=htk), rtol=1e-10)


def test_spectrogram_to_db_matches_librosa(rng):
    p = rng.random((50, 60)).astype(np.float32) ** 8
    ours = np.asarray(levels.spectrogram_to_db(jnp.asarray(p), ref="max", top_db=80.0))
    ref = librosa.power_to_db(p, ref=np.max, top_db=80.0)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_compression_round_trip(rng):
    spec = (rng.standard_normal((4, 30)) + 1j * rng.standard_normal((4, 30))).astype(np.complex64)
    spec[0, 0] = 0
    c = np.asarray(spectral.compress_spec(jnp.asarray(spec)))
    np.testing.assert_allclose(np.abs(c), 0.065 * np.abs(spec) ** 0.667, rtol=1e-5)
    np.testing.assert_allclose(np.angle(c[np.abs(spec) > 0]), np.angle(spec[np.abs(spec) > 0]), atol=1e-5)
    back = np.asarray(spectral.decompress_spec(jnp.asarray(c)))
    np.testing.assert_allclose(back, spec, atol=1e-4)


def test_db_helpers():
    x = jnp.array([1.0, 10.0, 0.0])
    np.testing.assert_allclose(levels.power_to_db(x), [0.0, 10.0, -100.0], atol=1e-5)
    np.testing.assert_allclose(levels.amplitude_to_db(x), [0.0, 20.0, -100.0], atol=1e-4)
    np.testing.assert_allclose(levels.db_to_power(jnp.array(20.0)), 100.0, rtol=1e-6)
    np.testing.assert_allclose(levels.db_to_amplitude(jnp.array(20.0)), 10.0, rtol=1e-6)
    np.testing.assert_allclose(levels.mean_power(jnp.array([[1.0, 3.0, 5.0]]), jnp.array([2])), [5.0])
    np.testing.assert_allclose(levels.peak(jnp.array([[1.0, -3.0, 5.0]]), jnp.array([2])), [3.0])
