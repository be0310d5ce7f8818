"""Tests for data/pipeline.py: batch plan, bounded shapes, workers, sharding, resume, bad files."""

from __future__ import annotations

import functools

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import soundfile as sf

from tests.data.conftest import PRESIM_RATES, append_lines, write_bad_files
from urgent_jax.data.pipeline import (
    BatchPlan,
    bucket_lengths,
    make_dynamic_mixing_loader,
    make_presimulated_loader,
)
from urgent_jax.data.sources import REASONS, BadFileError, PresimulatedSource
from urgent_jax.simulation.mixer import Mixture, Sources

DM_KW = dict(max_num_samples=8000, num_buckets=4, p_wind=0.2)


@functools.partial(jax.jit, static_argnames=("sample_rate",))
def toy_simulate(key, sources, *, sample_rate, sim_config=None):
    """Stand-in for simulate_batch: speech + key-dependent gain x noise (tests the plumbing)."""
    del sample_rate, sim_config
    gain = jax.random.uniform(key, (sources.speech.shape[0], 1), minval=0.1, maxval=1.0)
    noise = gain * sources.noise
    mixture = Mixture(sources.speech, sources.speech + noise, noise, sources.lengths, gain[:, 0])
    return mixture, None


def _take(it, n: int) -> list[dict]:
    return [next(it) for _ in range(n)]


def _assert_batches_equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]), err_msg=k)


def _check_padding(batch: dict, signal_keys: tuple[str, ...], buckets: dict) -> None:
    """One rate, a bounded padded length, lengths within it and zeros beyond."""
    fs = int(batch["fs"])
    assert np.asarray(batch["fs"]).shape == ()
    num_samples = batch[signal_keys[0]].shape[1]
    assert num_samples in buckets[fs]
    assert np.all(batch["lengths"] <= num_samples) and np.all(batch["lengths"] > 0)
    mask = np.arange(num_samples)[None] >= batch["lengths"][:, None]
    for key in signal_keys:
        assert batch[key].shape == (len(batch["lengths"]), num_samples)
        assert batch[key].dtype == np.float32 and np.all(np.isfinite(batch[key]))
        assert not np.any(batch[key][mask])


# --- batch plan ---


def test_bucket_lengths():
    np.testing.assert_array_equal(bucket_lengths(16000, 4), [4096, 8192, 12032, 16000])
    np.testing.assert_array_equal(bucket_lengths(1000, 8), [256, 512, 768, 1000])
    np.testing.assert_array_equal(bucket_lengths(96000, 1), [96000])


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_plan_covers_each_item_once_per_epoch(drop_remainder):
    rng = np.random.default_rng(0)
    fs = rng.choice([8000, 16000, 48000], 103)
    lengths = rng.integers(500, 30000, 103)
    kw = dict(batch_size=4, seed=3, max_num_samples=20000, num_buckets=5, chunk_batches=2)
    plan = BatchPlan(fs, lengths, drop_remainder=drop_remainder, **kw)
    per_epoch = plan.batches_per_epoch
    seen_plans = []
    for epoch in range(3):
        records = [plan[epoch * per_epoch + b] for b in range(per_epoch)]
        items = np.concatenate([r["indices"][r["valid"]] for r in records])
        assert len(set(items.tolist())) == len(items)  # no repeats within an epoch
        if drop_remainder:
            assert all(r["valid"].all() for r in records)
            assert len(items) > len(fs) - 3 * 2 * 4  # at most one partial batch per chunk dropped
        else:
            assert sorted(items.tolist()) == list(range(len(fs)))
        for r in records:
            assert r["indices"].shape == (4,) and len(set(fs[r["indices"]])) == 1
            assert int(r["fs"]) == fs[r["indices"][0]] and int(r["epoch"]) == epoch
            assert int(r["padded_length"]) in plan.bucket_lengths[int(r["fs"])]
            assert min(lengths[r["indices"]].max(), 20000) <= r["padded_length"]
        seen_plans.append([r["indices"].tolist() for r in records])
    assert seen_plans[0] != seen_plans[1] != seen_plans[2]  # reshuffled every epoch
    again = BatchPlan(fs, lengths, drop_remainder=drop_remainder, **kw)  # same seed, same plan
    assert [again[b]["indices"].tolist() for b in range(per_epoch)] == seen_plans[0]
    with pytest.raises(ValueError, match="divisible"):
        BatchPlan(fs, lengths, shard_count=3, **kw)


# --- pre-simulated loader ---


def test_presimulated_epoch_is_complete_and_padded(presim_set):
    it = make_presimulated_loader(
        presim_set, batch_size=4, seed=0, num_buckets=3, drop_remainder=False, num_epochs=1
    )
    src = PresimulatedSource(presim_set)
    batches = list(it)
    num_batches = sum(-(-n // 4) for n in PRESIM_RATES.values())
    assert len(batches) == it.plan.batches_per_epoch == num_batches
    seen = []
    for batch in batches:
        _check_padding(batch, ("noisy", "target"), it.plan.bucket_lengths)
        for k in np.flatnonzero(batch["valid"]):
            i, n = int(batch["index"][k]), int(batch["lengths"][k])
            assert src.sample_rates()[i] == int(batch["fs"]) and n == src.lengths()[i]
            expected = sf.read(src.noisy_paths[i], dtype="float32")[0]
            np.testing.assert_array_equal(batch["noisy"][k, :n], expected)  # never cropped
            seen.append(i)
    assert sorted(seen) == list(range(len(src)))
    assert it.num_shapes <= len(PRESIM_RATES) * 3
    assert "distinct shapes" in it.summary() and "none skipped" in it.summary()
    it.close()


def test_presimulated_training_crop_is_deterministic(presim_set):
    kw = dict(batch_size=2, max_num_samples=3000, num_buckets=2)
    a = make_presimulated_loader(presim_set, seed=1, **kw)
    b = make_presimulated_loader(presim_set, seed=1, **kw)
    c = make_presimulated_loader(presim_set, seed=2, **kw)
    num = 2 * a.plan.batches_per_epoch + 1  # crosses two epoch boundaries
    batches_a, batches_c = _take(a, num), _take(c, num)
    _assert_batches_equal(batches_a, _take(b, num))
    assert any(x["noisy"].shape != y["noisy"].shape or not np.array_equal(x["noisy"], y["noisy"])
               for x, y in zip(batches_a, batches_c))  # fmt: skip
    for batch in batches_a:
        _check_padding(batch, ("noisy", "target"), a.plan.bucket_lengths)
        assert batch["noisy"].shape[1] <= 3000
    assert a.num_shapes <= len(PRESIM_RATES) * 2
    for it in (a, b, c):
        it.close()


# --- workers, sharding ---


@pytest.mark.parametrize("kind", ["presimulated", "dynamic_mixing"])
def test_workers_yield_the_in_process_batches(kind, presim_set, sources_copy, tmp_path):
    if kind == "presimulated":
        build = functools.partial(make_presimulated_loader, presim_set, max_num_samples=3000)
        num = 6
    else:  # with bad files: their counts must come back from the workers
        bad = write_bad_files(tmp_path / "bad", 16000)
        lines = [f"bad_{r} 16000 {p}" for r, p in bad.items()]
        append_lines(sources_copy / "speech_sources.scp", lines)
        build = functools.partial(
            make_dynamic_mixing_loader, sources_copy, mixing="step", num_epochs=1, **DM_KW
        )
        num = None
    in_process = build(batch_size=2, seed=5)
    expected = list(in_process) if num is None else _take(in_process, num)
    in_process.close()
    workers = build(batch_size=2, seed=5, num_workers=2)
    try:
        _assert_batches_equal(list(workers) if num is None else _take(workers, num), expected)
        assert workers.skipped() == in_process.skipped()
        if kind == "dynamic_mixing":
            assert all(workers.skipped()[r] >= 1 for r in bad)
    finally:
        workers.close()


def test_process_shards_cover_each_global_batch(demo_sources):
    build = functools.partial(
        make_dynamic_mixing_loader, demo_sources, batch_size=4, seed=2, mixing="step", **DM_KW
    )
    full = build()
    shard0, shard1 = build(shard_index=0, shard_count=2), build(shard_index=1, shard_count=2)
    for _ in range(6):
        f, s0, s1 = next(full), next(shard0), next(shard1)
        assert s0["speech"].shape == s1["speech"].shape == (2, f["speech"].shape[1])
        assert s0["rir"].shape == s1["rir"].shape and int(s0["fs"]) == int(s1["fs"]) == int(f["fs"])
        for name in ("index", "speech", "noise", "rir", "lengths", "is_wind"):
            np.testing.assert_array_equal(s0[name], f[name][0::2])
            np.testing.assert_array_equal(s1[name], f[name][1::2])
    for it in (full, shard0, shard1):
        it.close()


# --- dynamic mixing ---


def test_dynamic_mixing_step_batches(demo_sources):
    it = make_dynamic_mixing_loader(demo_sources, batch_size=3, seed=0, mixing="step", **DM_KW)
    batches = _take(it, 2 * it.plan.batches_per_epoch)
    for batch in batches:
        _check_padding(batch, ("speech",), it.plan.bucket_lengths)
        fs = int(batch["fs"])
        assert batch["noise"].shape == batch["speech"].shape
        assert np.all(batch["noise_lengths"] == batch["lengths"])  # demo noises are long
        assert batch["rir"].shape == (3, it.source.rir_num_samples(fs))
        assert batch["is_wind"].dtype == bool and batch["skipped"].shape == (len(REASONS),)
        for k in range(3):
            assert not np.any(batch["rir"][k, batch["rir_lengths"][k] :])
            assert it.source.noise[batch["noise_index"][k]].fs >= fs
    assert it.num_shapes <= it.plan.max_num_shapes <= 7 * 4
    it.close()


def test_dynamic_mixing_with_the_real_simulator(demo_sources):
    it = make_dynamic_mixing_loader(
        demo_sources, batch_size=2, seed=0, mixing="loader",
        sim_config={"num_aug_probs": (1.0,)}, **DM_KW,
    )  # fmt: skip
    batch = next(it)
    it.close()
    assert set(batch) == {"noisy", "target", "lengths", "fs", "index", "valid", "skipped",
                          "global_index"}  # fmt: skip
    assert batch["noisy"].shape == batch["target"].shape
    assert batch["noisy"].shape[1] in it.plan.bucket_lengths[int(batch["fs"])]
    for name in ("noisy", "target"):
        assert batch[name].dtype == np.float32 and np.all(np.isfinite(batch[name]))
        assert np.abs(batch[name]).max() > 0


# --- resume ---


def _checkpoint_roundtrip(
    build, tmp_path, num_before: int, num_after: int, use_grain_iterator: bool
) -> None:
    reference = build()
    expected = _take(reference, num_before + num_after)
    reference.close()
    it = build()
    _take(it, num_before)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        target = it.grain_iterator if use_grain_iterator else it
        mngr.save(num_before, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(target)))
        mngr.wait_until_finished()
    it.close()
    resumed = build()
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        target = resumed.grain_iterator if use_grain_iterator else resumed
        restore = grain.checkpoint.CheckpointRestore(target)
        mngr.restore(mngr.latest_step(), args=ocp.args.Composite(data=restore))
    _assert_batches_equal(_take(resumed, num_after), expected[num_before:])
    resumed.close()


def test_presimulated_resume_from_orbax(presim_set, tmp_path):
    build = functools.partial(
        make_presimulated_loader, presim_set, batch_size=2, seed=4, max_num_samples=3000
    )
    _checkpoint_roundtrip(build, tmp_path, 5, 4, use_grain_iterator=True)


def test_dynamic_mixing_loader_resume_from_orbax(demo_sources, tmp_path):
    build = functools.partial(
        make_dynamic_mixing_loader, demo_sources, batch_size=2, seed=4, mixing="loader",
        simulate_fn=toy_simulate, **DM_KW,
    )  # fmt: skip
    _checkpoint_roundtrip(build, tmp_path, 5, 4, use_grain_iterator=False)


def test_loader_mixing_key_is_a_function_of_the_batch_counter(demo_sources):
    """mixing="loader" = mixing="step" + simulate_fn(fold_in(fold_in(key(seed), g), process))."""
    kw = dict(batch_size=2, seed=4, shard_index=1, shard_count=2, **DM_KW)
    build = functools.partial(make_dynamic_mixing_loader, demo_sources, **kw)
    mixed, step = build(mixing="loader", simulate_fn=toy_simulate), build(mixing="step")
    for g in range(3):
        batch, sources = next(mixed), next(step)
        assert int(batch["global_index"]) == int(sources["global_index"]) == g
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(4), g), 1)
        srcs = Sources(*(sources[name] for name in Sources._fields))
        mixture, _ = toy_simulate(key, srcs, sample_rate=int(sources["fs"]))
        np.testing.assert_array_equal(batch["noisy"], np.asarray(mixture.noisy))
        np.testing.assert_array_equal(batch["target"], sources["speech"])
        np.testing.assert_array_equal(batch["lengths"], sources["lengths"])
    mixed.close()
    step.close()


# --- bad files ---


def test_bad_files_are_skipped_counted_and_summarised(sources_copy, tmp_path, caplog):
    bad = write_bad_files(tmp_path / "bad", 16000)
    lines = [f"bad_{r} 16000 {p}" for r, p in bad.items()]
    append_lines(sources_copy / "speech_sources.scp", lines)
    it = make_dynamic_mixing_loader(
        sources_copy, batch_size=2, seed=0, mixing="step", num_epochs=1, **DM_KW
    )
    batches = list(it)
    assert len(batches) == it.plan.batches_per_epoch
    for batch in batches:
        _check_padding(batch, ("speech", "noise"), it.plan.bucket_lengths)
        assert batch["valid"].all() and batch["speech"].shape[0] == 2
        assert np.all(np.abs(batch["speech"]).max(axis=1) > 0)
    skipped = it.skipped()
    assert all(skipped[r] >= 1 for r in bad), skipped
    assert sum(skipped.values()) == sum(int(b["skipped"].sum()) for b in batches)
    summary = it.summary()
    for reason, path in bad.items():
        assert f"{reason}: {path}" in summary
    it.close()

    # policy "raise": the first bad file stops the run, named in the error (here: at build time,
    # when the missing file's header is read for the batch plan)
    with pytest.raises(BadFileError) as info:
        make_dynamic_mixing_loader(sources_copy, batch_size=2, seed=0, policy="raise", **DM_KW)
    assert str(bad["missing"]) in str(info.value) and info.value.reason == "missing"
    # ... and content problems when the batch holding the file is loaded
    lines = (sources_copy / "speech_sources.scp").read_text().splitlines()
    keep = [line for line in lines if not line.startswith("bad_") or "non_finite" in line]
    (sources_copy / "speech_sources.scp").write_text("\n".join(keep) + "\n")
    strict = make_dynamic_mixing_loader(
        sources_copy, batch_size=2, seed=0, mixing="step", num_epochs=1, policy="raise", **DM_KW
    )
    with pytest.raises(Exception, match="bad_non_finite.wav: non_finite"):
        list(strict)
    strict.close()
