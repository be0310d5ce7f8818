"""Audio I/O: read/write round trips, channel selection, resample on read, clear errors."""

import numpy as np
import pytest
import soundfile as sf
import soxr

from urgent_jax.audio import io
from urgent_jax.audio.resample import resample


def test_write_read_round_trip(tmp_path, rng):
    x = (rng.standard_normal((2, 4000)) * 0.2).astype(np.float32)
    for ext, subtype, tol in (("wav", "FLOAT", 0), ("flac", None, 1 / 32768), ("wav", None, 1 / 32768)):
        p = tmp_path / f"a_{subtype}.{ext}"
        io.write_audio(p, x, 16000, subtype=subtype)
        y, sr = io.read_audio(p)
        assert sr == 16000 and y.shape == (2, 4000) and y.dtype == np.float32
        assert np.abs(y - x).max() <= tol
    y0, _ = io.read_audio(tmp_path / "a_FLOAT.wav", first_channel=True)
    np.testing.assert_array_equal(y0, x[:1])
    seg, _ = io.read_audio(tmp_path / "a_FLOAT.wav", start=100, num_samples=50)
    np.testing.assert_array_equal(seg, x[:, 100:150])
    assert io.audio_info(tmp_path / "a_None.flac") == (16000, 4000, 2)


def test_resample_on_read(shared_data):
    path = shared_data / "noizeus" / "sp03.wav"
    ref, fs = sf.read(path, dtype="float32")
    y, sr = io.read_audio(path, sample_rate=8000)
    assert sr == 8000 and y.shape == (1, -(-len(ref) // 2))
    # Bucket padding must not change the result of the resampler itself.
    np.testing.assert_allclose(y[0], np.asarray(resample(ref, fs, 8000)), atol=1e-6)
    # Against soxr HQ the two filters differ only near the new Nyquist: > 40 dB agreement.
    expected = soxr.resample(ref, fs, 8000, "HQ")
    inner = slice(800, -800)
    err = np.sum((y[0][inner] - expected[inner]) ** 2) / np.sum(expected[inner] ** 2)
    assert 10 * np.log10(err) < -40


def test_errors_name_the_file(tmp_path):
    with pytest.raises(io.AudioFileError, match="missing.wav"):
        io.read_audio(tmp_path / "missing.wav")
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF0000WAVEnot really audio")
    with pytest.raises(io.AudioFileError, match="corrupt.wav"):
        io.read_audio(bad)
    with pytest.raises(io.AudioFileError, match="corrupt.wav"):
        io.audio_info(bad)
    with pytest.raises(io.AudioFileError, match="bad.wav"):
        io.write_audio(tmp_path / "bad.wav", np.zeros((2, 2, 2)), 16000)


def test_write_integer_pcm_as_soundfile_does(tmp_path, rng):
    # int16 input used to be cast to float32 and clipped to full scale (a square wave).
    x16 = (rng.standard_normal((2, 1000)) * 3000).astype(np.int16)
    x32 = x16.astype(np.int32) << 16
    for name, x, subtype in (("a.wav", x16, None), ("b.flac", x16, "PCM_24"), ("c.wav", x32, "PCM_32")):
        io.write_audio(tmp_path / name, x, 8000, subtype=subtype)
        y, sr = sf.read(tmp_path / name, dtype=x.dtype.name, always_2d=True)
        assert sr == 8000
        np.testing.assert_array_equal(y.T, x)
        z, _ = io.read_audio(tmp_path / name)
        np.testing.assert_allclose(z, x16 / 32768.0, atol=0)
    for dtype in (np.uint8, np.int64):
        with pytest.raises(io.AudioFileError, match="bad_int.wav"):
            io.write_audio(tmp_path / "bad_int.wav", np.zeros(10, dtype), 8000)
