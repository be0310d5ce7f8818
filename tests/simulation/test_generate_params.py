"""meta.tsv generation: official layout, selection rules of REFERENCE.md §2.2, parseable params."""

import collections

import numpy as np
import pytest

from urgent_jax.data.manifest import SourceEntry, read_meta_tsv, read_source_dir, write_meta_tsv
from urgent_jax.simulation.generate_params import SourcePool, generate_meta
from urgent_jax.simulation.params import WindSpec, ClippingSpec, parse_augmentation


def _entries(spec):
    return [SourceEntry(f"n{fs}_{i}", fs, f"/x/{fs}_{i}.wav") for fs, n in spec.items() for i in range(n)]


def test_pool_prefers_exact_rate_then_higher_never_lower():
    rng = np.random.default_rng(0)
    pool = SourcePool(_entries({8000: 1, 16000: 2, 48000: 1}), reuse=False)
    first = {pool.select(16000, rng), pool.select(16000, rng)}
    assert first == {"n16000_0", "n16000_1"}  # unused exact-rate ones first
    assert pool.select(16000, rng) == "n48000_0"  # then a higher rate
    assert pool.select(16000, rng) is None  # 8 kHz is never used for 16 kHz, no reuse
    assert pool.select(8000, rng) == "n8000_0"


def test_pool_reuse_searches_the_used_pool():
    rng = np.random.default_rng(1)
    pool = SourcePool(_entries({16000: 1, 24000: 1}), reuse=True)
    picks = [pool.select(16000, rng) for _ in range(6)]
    assert picks[:2] == ["n16000_0", "n24000_0"]
    assert picks[2:] == ["n16000_0"] * 4  # used pool, exact rate first, without removal
    assert pool.select(44100, rng) is None


@pytest.fixture(scope="module")
def meta(demo_sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    rows = generate_meta(str(demo_sources), output_dir=str(out), seed=3, use_progress_bar=False,
                         sample_params={"p_wind": 0.3, "p_reverb": 0.5})
    write_meta_tsv(out / "meta.tsv", rows)
    return out, rows


def test_layout_and_order(meta, demo_sources):
    out, rows = meta
    tables = read_source_dir(demo_sources)
    assert len(rows) == len(tables.speech)
    assert [r.id for r in rows] == [f"fileid_{i}" for i in range(1, len(rows) + 1)]
    assert [r.fs for r in rows] == sorted((r.fs for r in rows), reverse=True)
    speech_fs = {e.uid: e.fs for e in tables.speech}
    for r in rows:
        n = int(r.id.split("_")[1])
        assert r.noisy_path == str(out / "noisy" / str(n // 5000) / f"{r.id}.flac")
        assert r.clean_path == str(out / "clean" / str(n // 5000) / f"{r.id}.flac")
        assert r.fs == speech_fs[r.speech_uid] and r.length == tables.lengths[r.speech_uid]
        assert r.text == tables.text[r.speech_uid]
    # The file round-trips through the manifest reader.
    assert read_meta_tsv(out / "meta.tsv") == rows


def test_sources_respect_rates_and_kinds(meta, demo_sources):
    _, rows = meta
    tables = read_source_dir(demo_sources)
    rate = {e.uid: e.fs for e in tables.noise + tables.wind_noise + tables.rir}
    kinds = collections.Counter()
    for r in rows:
        chain = parse_augmentation(r.augmentation)
        is_wind = r.noise_uid.startswith("wind_noise")
        assert is_wind == (chain.wind is not None)
        assert rate[r.noise_uid] >= r.fs
        if r.rir_uid != "none":
            assert rate[r.rir_uid] >= r.fs
        if is_wind:
            assert -10 <= r.snr_db <= 15
            assert not any(isinstance(i, ClippingSpec) for i in chain.items)
            assert isinstance(chain.wind, WindSpec)
        else:
            assert -5 <= r.snr_db <= 20
        kinds[is_wind] += 1
    assert kinds[True] > 0 and kinds[False] > 0


def test_validation_config_never_reuses_rirs(demo_sources, tmp_path):
    rows = generate_meta(str(demo_sources), output_dir=str(tmp_path), seed=0, reuse_rir=False,
                         sample_params={"p_reverb": 1.0}, use_progress_bar=False)
    used = [r.rir_uid for r in rows if r.rir_uid != "none"]
    assert len(used) == len(set(used))  # each RIR at most once
    assert len(used) == len(read_source_dir(demo_sources).rir) or len(used) < len(rows)


def test_same_seed_same_meta(demo_sources, tmp_path):
    a = generate_meta(str(demo_sources), output_dir="o", seed=5, use_progress_bar=False)
    b = generate_meta(str(demo_sources), output_dir="o", seed=5, use_progress_bar=False)
    c = generate_meta(str(demo_sources), output_dir="o", seed=6, use_progress_bar=False)
    assert a == b and a != c
