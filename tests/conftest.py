"""Shared test fixtures: paths to the real recordings in ../shared/data and small signal generators."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from urgent_jax import configure_cpu_kernels

# The suite is compile-bound: it compiles with LLVM's optimisations off (XLA backend optimisation
# level 0), which cut its CPU time by about a third (tests/models: 163 -> 97 s; every tolerance
# holds). URGENT_JAX_TEST_XLA_OPT=default runs it on the optimised code the commands use.
TEST_XLA_FLAGS = (
    "" if os.environ.get("URGENT_JAX_TEST_XLA_OPT") == "default" else "--xla_backend_optimization_level=0"
)
if TEST_XLA_FLAGS and TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()
configure_cpu_kernels()  # the suite runs on the CPU kernels the urgent_jax commands choose

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent

# The slowest modules, slowest first (seconds on 2 cores, 2026-11-27). `make test` runs pytest with
# `--dist loadfile --no-loadscope-reorder`: each module runs whole on one worker, so its module-scoped
# fixtures (a training run, loaded networks, a built dataset) are built once, and the long modules
# start first instead of leaving one worker busy at the end.
SLOW_MODULES = (
    "train/test_train_cli.py",  # 150 s: training subprocesses
    "metrics/test_dnsmos.py",  # 67 s
    "models/test_sqa.py",  # 43 s
    "metrics/test_distillmos.py",  # 39 s
    "curation/test_score_metrics.py",  # 23 s
    "enhance/test_infer.py",  # 22 s
)
SHARED_DATA = Path(os.environ.get("URGENT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Slow modules first (SLOW_MODULES order), the rest in collection order."""
    rank = {name: i for i, name in enumerate(SLOW_MODULES)}
    items.sort(key=lambda item: rank.get(Path(os.path.relpath(item.path, TESTS_DIR)).as_posix(), len(rank)))


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
