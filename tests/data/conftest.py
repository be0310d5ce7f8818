"""Shared data fixtures: the demo corpus (built once per session), tiny pre-simulated sets and
bad audio files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from urgent_jax.data.sources import REASONS

PRESIM_RATES = {8000: 7, 16000: 6, 24000: 5}  # rate -> number of pairs in the fake set


@pytest.fixture
def sources_copy(demo_sources, tmp_path) -> Path:
    """A writable copy of the demo source lists (audio paths still point at the shared corpus)."""
    out = tmp_path / "train_sources"
    shutil.copytree(demo_sources, out)
    return out


def write_presimulated_set(out_dir: Path, seed: int = 0, with_lengths: bool = True) -> Path:
    """A fake pre-simulated set (§1.2 layout) at the PRESIM_RATES: target = a tone burst,
    noisy = target + noise; wav.scp / spk1.scp / utt2fs (+ speech_length.scp)."""
    rng = np.random.default_rng(seed)
    lines = {"wav.scp": [], "spk1.scp": [], "utt2fs": [], "speech_length.scp": []}
    count = 0
    for fs, num in PRESIM_RATES.items():
        for _ in range(num):
            count += 1
            uid = f"fileid_{count}"
            n = int(rng.uniform(0.2, 1.2) * fs)
            t = np.arange(n) / fs
            target = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t) * np.hanning(n)
            noisy = target + 0.05 * rng.standard_normal(n)
            for kind, audio, name in (("noisy", noisy, "wav.scp"), ("clean", target, "spk1.scp")):
                path = out_dir / kind / f"{uid}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, audio.astype(np.float32), fs, subtype="PCM_16")
                lines[name].append(f"{uid} {path}")
            lines["utt2fs"].append(f"{uid} {fs}")
            lines["speech_length.scp"].append(f"{uid} {n}")
    if not with_lengths:
        del lines["speech_length.scp"]
    for name, rows in lines.items():
        (out_dir / name).write_text("\n".join(rows) + "\n")
    return out_dir


@pytest.fixture(scope="session")
def presim_set(tmp_path_factory) -> Path:
    """A clean fake pre-simulated set with speech_length.scp (shared, read-only)."""
    return write_presimulated_set(tmp_path_factory.mktemp("presim"))


def write_bad_files(out_dir: Path, fs: int) -> dict[str, Path]:
    """One file per bad-file reason, all meant to be listed at rate fs: reason -> path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    good = (0.1 * rng.standard_normal(fs)).astype(np.float32)  # 1 s
    # "duration_mismatch" is the SQA loader's (audio longer than its data.jsonl duration):
    # no Track 1 source list states a duration that a file could contradict.
    paths = {reason: out_dir / f"bad_{reason}.wav" for reason in REASONS
             if reason != "duration_mismatch"}  # fmt: skip
    paths["unreadable"].write_bytes(b"RIFF\x00\x00not really a wave file" + rng.bytes(200))
    sf.write(paths["empty"], np.zeros(0, np.float32), fs)
    sf.write(paths["silent"], np.zeros(fs, np.float32), fs)
    nan = good.copy()
    nan[::400] = np.nan  # in every window of 400 samples or more
    sf.write(paths["non_finite"], nan, fs, subtype="FLOAT")
    sf.write(paths["too_short"], good[: fs // 100], fs)
    sf.write(paths["wrong_rate"], good, fs // 2 if fs > 8000 else 16000)
    return paths


def append_lines(path: Path, lines: list[str]) -> None:
    with open(path, "a") as f:
        f.write("".join(line + "\n" for line in lines))
