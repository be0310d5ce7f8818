"""Shared test fixtures: paths to the real recordings in ../shared/data and small signal generators."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from urgent_jax import configure_cpu_kernels

configure_cpu_kernels()  # the suite runs on the CPU kernels the urgent_jax commands choose

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("URGENT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real NOIZEUS recordings); CI has shared/ beside the clone."""
    if not (SHARED_DATA / "noizeus" / "sp03.wav").exists():
        pytest.fail(f"shared test data not found at {SHARED_DATA} (set URGENT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def noizeus_pair(shared_data):
    """(clean, noisy, fs) float32 arrays of NOIZEUS sp04 at 0 dB SNR (16 kHz)."""
    import soundfile as sf

    clean, fs = sf.read(shared_data / "noizeus" / "sp04.wav", dtype="float32")
    noisy, fs2 = sf.read(shared_data / "noizeus" / "sp04_casino_sn0.wav", dtype="float32")
    assert fs == fs2 == 16000
    n = min(len(clean), len(noisy))
    return clean[:n], noisy[:n], fs


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """The small demo corpus (speech at all seven rates, noise/wind/RIR covering them), built once."""
    from urgent_jax.data.demo_corpus import build_demo_corpus

    root = tmp_path_factory.mktemp("demo_corpus")
    build_demo_corpus(root, seed=0, size="small", use_progress_bar=False)
    return root


@pytest.fixture(scope="session")
def demo_sources(demo_root) -> Path:
    return demo_root / "train_sources"
