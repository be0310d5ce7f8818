"""Curation signal features: the jax VAD against WebRTC VAD mode 2 (py-webrtcvad) on the real
NOIZEUS recordings, clipping ratio / DC offset against numpy, and the SNR estimate's direction."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import webrtcvad  # test dependency (the webrtcvad-wheels package)

from urgent_jax.audio import quality

NOIZEUS = ("sp03", "sp04", "sp05", "sp03_casino_sn5", "sp04_casino_sn0", "sp05_casino_sn-5")
FRAME_AGREEMENT = 0.85  # fraction of 10 ms frames with the same decision, per file
RATIO_TOLERANCE = 0.12  # |speech ratio - WebRTC speech ratio|, per file


def webrtc_decisions(x: np.ndarray, fs: int) -> np.ndarray:
    vad = webrtcvad.Vad(2)
    hop = fs // 100
    pcm = (x * 32768).astype(np.int16)  # the 2025 filter's float -> int16 conversion
    return np.array(
        [vad.is_speech(pcm[k * hop : (k + 1) * hop].tobytes(), fs) for k in range(len(x) // hop)]
    )


@pytest.fixture(scope="module")
def noizeus_batch(shared_data):
    signals = [sf.read(shared_data / "noizeus" / f"{n}.wav", dtype="float32")[0] for n in NOIZEUS]
    lengths = np.array([len(s) for s in signals])
    batch = np.zeros((len(signals), lengths.max()), np.float32)
    for i, s in enumerate(signals):
        batch[i, : len(s)] = s
    return signals, batch, lengths


def test_vad_agrees_with_webrtc_mode2(noizeus_batch):
    signals, batch, lengths = noizeus_batch
    speech, valid = quality.vad_frames(batch, lengths, 16000)
    speech, valid = np.asarray(speech), np.asarray(valid)
    ratios = np.asarray(quality.speech_ratio(batch, lengths, 16000))
    for i, x in enumerate(signals):
        ref = webrtc_decisions(x, 16000)
        ours = speech[i][valid[i]]
        assert len(ours) == len(ref)
        assert np.mean(ours == ref) >= FRAME_AGREEMENT, NOIZEUS[i]
        assert abs(ratios[i] - ref.mean()) <= RATIO_TOLERANCE, NOIZEUS[i]


def test_vad_silence_and_noise_only():
    rng = np.random.default_rng(0)
    fs = 16000
    x = np.stack([np.zeros(fs), 0.01 * rng.standard_normal(fs)]).astype(np.float32)
    ratios = np.asarray(quality.speech_ratio(x, np.array([fs, fs]), fs))
    assert ratios[0] == 0.0
    assert ratios[1] < 0.2  # stationary noise is mostly below floor + margin


def test_clipping_and_dc_against_numpy():
    rng = np.random.default_rng(1)
    n = 8000
    clean = 0.5 * np.sin(2 * np.pi * 220 * np.arange(n) / 16000) + 0.003 * rng.standard_normal(n)
    clipped = np.clip(2.0 * clean, -0.8, 0.8)
    x = np.stack([clean, clipped + 0.05]).astype(np.float32)
    lengths = np.array([n, n - 1000])
    ratio = np.asarray(quality.clipping_ratio(x, lengths))
    dc = np.asarray(quality.dc_offset(x, lengths))
    for i, length in enumerate(lengths):
        v = np.abs(x[i, :length].astype(np.float64))
        expected = np.mean(v >= v.max() - 1 / 32768)
        assert ratio[i] == pytest.approx(expected, abs=1 / length)
        assert dc[i] == pytest.approx(np.mean(x[i, :length].astype(np.float64)), abs=1e-6)
    assert ratio[0] < 1e-3 < 0.1 < ratio[1]


def test_snr_estimate_orders_noise_levels(noizeus_batch):
    signals, _, _ = noizeus_batch
    clean = signals[0]
    rng = np.random.default_rng(2)
    noise = rng.standard_normal(len(clean)).astype(np.float32)
    power = np.mean(clean**2)
    x = np.stack(
        [clean + np.sqrt(power / 10 ** (snr / 10)) * noise for snr in (30.0, 15.0, 0.0)]
    ).astype(np.float32)
    snr = np.asarray(quality.quality_features(x, np.full(3, len(clean)), 16000)["snr_db"])
    assert snr[0] > snr[1] > snr[2]
    assert abs(snr[1] - 15.0) < 6.0  # a blind estimate: right to within a few dB
