"""A tiny corpus of good and bad files, and a cheap stand-in for the jitted scorer."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from urgent_jax.curation.score import COLUMNS

BAD = {  # uid -> errors.tsv reason kind
    "bad_missing": "missing",
    "bad_nan": "non_finite",
    "bad_silent": "silent",
    "bad_rate": "wrong_rate",
    "bad_garbage": "unreadable",
}


class FakeScorer:
    """Numpy features per row (no compiles): every column of scores.tsv, from the samples."""

    def __init__(self):
        self.shapes = set()
        self.calls = 0

    def __call__(self, audio, lengths, sample_rate):
        self.calls += 1
        self.shapes.add((sample_rate,) + audio.shape)
        rms = np.array([np.sqrt(np.mean(a[:n] ** 2)) for a, n in zip(audio, lengths)])
        out = {c: rms for c in COLUMNS[3:-1] if c != "target_fs"}
        out["target_fs"] = np.full(len(rms), sample_rate)
        return out


@pytest.fixture
def fake_scorer():
    return FakeScorer()


@pytest.fixture
def tiny_corpus(tmp_path):
    """speech.scp (uid fs path) with 12 good files at 2 rates and one of each BAD kind."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(12):
        fs = 8000 if i % 3 == 0 else 16000
        n = int(fs * (0.3 + 0.05 * i))
        x = 0.1 * np.sin(2 * np.pi * 300 * np.arange(n) / fs) + 0.01 * rng.standard_normal(n)
        path = tmp_path / "audio" / f"good_{i:02d}.flac"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, x.astype(np.float32), fs)
        lines.append(f"good_{i:02d} {fs} {path}")
    audio = tmp_path / "audio"
    nan = np.full(4000, 0.1, np.float32)
    nan[100] = np.nan
    sf.write(audio / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(audio / "silent.wav", np.zeros(4000, np.float32), 16000)
    sf.write(audio / "rate.wav", 0.1 * rng.standard_normal(4000).astype(np.float32), 8000)
    (audio / "garbage.wav").write_bytes(b"RIFF not really audio")
    lines += [
        f"bad_missing 16000 {audio / 'missing.wav'}",
        f"bad_nan 16000 {audio / 'nan.wav'}",
        f"bad_silent 16000 {audio / 'silent.wav'}",
        f"bad_rate 16000 {audio / 'rate.wav'}",
        f"bad_garbage 16000 {audio / 'garbage.wav'}",
    ]
    scp = tmp_path / "speech.scp"
    scp.write_text("\n".join(lines) + "\n")
    return scp
