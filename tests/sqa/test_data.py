"""Tests for sqa/data.py: data.jsonl round trip (NaN labels), the dynamic batch plan (§3.7), the
loader (caps, exactly-once, padding masks, 16 kHz mono vs torchaudio's resampling, seeded shuffles, resume, shards,
bad files) and the on-the-fly degradation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf

from tests.audio.test_resample import torchaudio_resample_reference
from urgent_jax.data.sources import BadFileError
from urgent_jax.sqa.data import (
    LENGTH_SLACK,
    Degrade,
    JsonlError,
    degrade_batch,
    make_sqa_loader,
    padded_batch_sizes,
    plan_batches,
    read_jsonl,
    write_jsonl,
)

METRICS = ["mos", "utmos"]
RATES = (8000, 16000, 22050, 44100, 48000)


def tone(fs: int, num_samples: int, num_channels: int, seed: int) -> np.ndarray:
    """[T, C] float32 sum of two tones below 7 kHz with a random phase per channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / fs
    f1, f2 = rng.uniform(200, 3000, 2)
    chans = [0.3 * np.sin(2 * np.pi * f1 * t + rng.uniform(0, 6)) + 0.1 * np.sin(2 * np.pi * f2 * t)
             for _ in range(num_channels)]  # fmt: skip
    return np.stack(chans, axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """14 files at five rates, 0.1-0.6 s, some stereo; labels with NaN holes; a data.jsonl."""
    root = tmp_path_factory.mktemp("sqa")
    rng = np.random.default_rng(0)
    records = []
    for i in range(14):
        fs = RATES[i % len(RATES)]
        n = int(rng.uniform(0.1, 0.6) * fs)
        path = root / "audio" / f"u{i:02d}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, tone(fs, n, 1 + i % 2, i), fs, subtype="FLOAT")
        metrics = {"mos": round(float(rng.uniform(1, 5)), 4)}
        if i % 3:
            metrics["utmos"] = math.nan if i % 3 == 1 else 2.5
        records.append({"audio_path": f"audio/u{i:02d}.wav", "system_id": f"sys{i % 4}",
                        "sample_id": f"u{i:02d}", "duration": n / fs,
                        "metrics": metrics})  # fmt: skip
    write_jsonl(root / "data.jsonl", records)
    return root


def all_batches(it) -> list[dict]:
    out = list(it)
    it.close()
    return out


def planned_samples(records) -> dict[str, int]:
    return {r["sample_id"]: int(r["duration"] * 16000) for r in records}


# --- data.jsonl -----------------------------------------------------------------------------------


def test_jsonl_round_trip_with_nan(tmp_path):
    records = [
        {"audio_path": "/x/b.wav", "system_id": "s2", "sample_id": "b", "duration": 1.23456,
         "metrics": {"mos": 3.123456, "utmos": math.nan}},
        {"audio_path": "/x/a.wav", "system_id": "s1", "sample_id": "a", "duration": 2,
         "metrics": {}},
    ]  # fmt: skip
    write_jsonl(tmp_path / "data.jsonl", records)
    lines = (tmp_path / "data.jsonl").read_text().splitlines()
    assert [json.loads(line)["sample_id"] for line in lines] == ["a", "b"]  # sorted by sample_id
    assert '"utmos": NaN' in lines[1] and '"duration": 1.235' in lines[1]
    back = read_jsonl(tmp_path / "data.jsonl")
    assert back[1]["metrics"]["mos"] == 3.1235 and math.isnan(back[1]["metrics"]["utmos"])
    assert back[0] == {**records[1], "duration": 2.0}
    write_jsonl(tmp_path / "again.jsonl", back)
    assert (tmp_path / "again.jsonl").read_text() == (tmp_path / "data.jsonl").read_text()


def test_jsonl_relative_paths(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    line = {"audio_path": "a.wav", "system_id": "s", "sample_id": "a", "duration": 1.0,
            "metrics": {"mos": None}}  # fmt: skip
    (tmp_path / "d" / "data.jsonl").write_text(json.dumps(line) + "\n")
    monkeypatch.chdir(tmp_path)
    [r] = read_jsonl("d/data.jsonl")
    assert r["audio_path"] == "d/a.wav" and math.isnan(r["metrics"]["mos"])  # jsonl's directory
    (tmp_path / "a.wav").write_bytes(b"")
    assert read_jsonl("d/data.jsonl")[0]["audio_path"] == "a.wav"  # exists as given: kept


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "invalid JSON"),
        ('{"audio_path": "a", "system_id": "s", "sample_id": "u", "metrics": {}}', "missing key"),
        ('{"audio_path": "a", "system_id": "s", "sample_id": "u", "duration": 1, '
         '"metrics": {"mos": "high"}}', "metric 'mos' must be a number"),
        ('{"audio_path": "a", "system_id": 3, "sample_id": "u", "duration": 1, "metrics": {}}',
         "system_id must be a non-empty string"),
        ('{"audio_path": "a", "system_id": "s", "sample_id": "u", "duration": -1, "metrics": {}}',
         "duration must be a number"),
        (('{"audio_path": "a", "system_id": "s", "sample_id": "u", "duration": Infinity, '
          '"metrics": {}}'), "duration must be a number >= 0 and finite"),
        ('{"audio_path": "a", "system_id": "s", "sample_id": "u", "duration": NaN, "metrics": {}}',
         "duration must be a number >= 0 and finite"),
        (('{"audio_path": "a", "system_id": "s", "sample_id": "u", "duration": 1e300, '
          '"metrics": {}}'), r"duration 1e\+300 s is over 24 h"),
        (('{"audio_path": "a", "system_id": "s", "sample_id": "u", "duration": 86401, '
          '"metrics": {}}'), "duration 86401.0 s is over 24 h"),
        (('{"audio_path": "a", "system_id": "s", "sample_id": "u", "duration": 1, '
          '"metrics": {"mos": Infinity}}'), r"metric 'mos' must be a number \(finite, or NaN"),
        (('{"audio_path": "a", "system_id": "s", "sample_id": "u", "duration": 1, '
          '"metrics": {"mos": -Infinity}}'), r"metric 'mos' must be a number \(finite, or NaN"),
        ('{"audio_path": "a", "system_id": "s", "sample_id": "u", "duration": 1, '
         '"metrics": {"mos": 1' + 400 * "0" + '}}', r"metric 'mos' must be a number"),
    ],
)  # fmt: skip
def test_jsonl_errors_name_path_and_line(tmp_path, line, message):
    good = '{"audio_path": "a", "system_id": "s", "sample_id": "v", "duration": 1, "metrics": {}}'
    path = tmp_path / "data.jsonl"
    path.write_text(good + "\n\n" + line + "\n")
    with pytest.raises(JsonlError, match=rf"data\.jsonl:3: {message}"):
        read_jsonl(path)


def test_jsonl_accepts_a_day_and_nan_or_null_labels(tmp_path):
    line = ('{"audio_path": "a", "system_id": "s", "sample_id": "u", "duration": 86400, '
            '"metrics": {"mos": NaN, "utmos": null, "sdr": -12.5}}')  # fmt: skip
    (tmp_path / "data.jsonl").write_text(line + "\n")
    [r] = read_jsonl(tmp_path / "data.jsonl")
    assert r["duration"] == 86400.0 and r["metrics"]["sdr"] == -12.5
    assert math.isnan(r["metrics"]["mos"]) and math.isnan(r["metrics"]["utmos"])
    with pytest.raises(JsonlError, match="metric 'mos' must be a number"):
        write_jsonl(tmp_path / "out.jsonl", [{**r, "metrics": {"mos": math.inf}}])


def test_jsonl_duplicate_key(tmp_path):
    good = '{"audio_path": "a", "system_id": "s", "sample_id": "v", "duration": 1, "metrics": {}}'
    (tmp_path / "data.jsonl").write_text(good + "\n" + good + "\n")
    with pytest.raises(JsonlError, match=r"data\.jsonl:2: duplicate .* line 1"):
        read_jsonl(tmp_path / "data.jsonl")


# --- plan -----------------------------------------------------------------------------------------


def test_plan_batches_example():
    # sorted: 1(i3) 2(i1) 3(i0) 4(i4) 5(i2) 12(i5); cap 7, at most 2 items.
    batches, dropped = plan_batches([3, 2, 5, 1, 4, 12], max_total_samples=7, max_batch_size=2)
    assert [b.tolist() for b in batches] == [[3, 1], [0, 4], [2]]
    assert dropped.tolist() == [5]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plan_batches_properties(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 1000, 500)
    lengths[rng.integers(0, 500, 5)] = 5000  # above the cap
    cap, max_items = 3000, 16
    batches, dropped = plan_batches(lengths, cap, max_items)
    assert all(lengths[b].sum() <= cap and len(b) <= max_items for b in batches)
    flat = np.concatenate(batches)
    assert np.array_equal(np.sort(np.concatenate([flat, dropped])), np.arange(500))  # once each
    assert np.all(lengths[dropped] > cap) and np.all(lengths[flat] <= cap)
    by_length = np.argsort(lengths, kind="stable")
    assert np.array_equal(flat, by_length[lengths[by_length] <= cap])
    # Greedy: the next batch's first item did not fit in the previous batch.
    for prev, nxt in zip(batches, batches[1:]):
        assert len(prev) == max_items or lengths[prev].sum() + lengths[nxt[0]] > cap


def test_padded_batch_sizes():
    assert padded_batch_sizes(128).tolist() == [1, 2, 4, 8, 16, 32, 64, 128]
    assert padded_batch_sizes(100).tolist() == [1, 2, 4, 8, 16, 32, 64, 100]
    assert padded_batch_sizes(8, shard_count=3).tolist() == [3, 6, 9]


# --- loader ---------------------------------------------------------------------------------------


def test_inference_mode_every_item_once_in_duration_order(corpus):
    records = read_jsonl(corpus / "data.jsonl")
    samples = planned_samples(records)
    cap = 12000
    it = make_sqa_loader(corpus / "data.jsonl", METRICS, max_total_samples=cap, max_batch_size=4,
                         num_epochs=1, shuffle=False)  # fmt: skip
    batches = all_batches(it)
    assert len(batches) == it.plan.batches_per_epoch
    seen = [s for b in batches for s, v in zip(b["sample_id"], b["valid"]) if v]
    assert sorted(seen) == sorted(samples)  # every item exactly once
    assert [samples[s] for s in seen] == sorted(samples.values())  # duration order
    sizes, shapes = padded_batch_sizes(4), set()
    for b in batches:
        real = [samples[s] for s in b["sample_id"] if s]
        assert sum(real) <= cap and len(real) <= 4  # caps
        assert b["audio"].shape[0] in sizes and b["audio"].dtype == np.float32
        shapes.add(b["audio"].shape)
    assert len(shapes) <= it.plan.max_num_shapes


def test_batch_fields_and_padding_masks(corpus):
    records = {r["sample_id"]: r for r in read_jsonl(corpus / "data.jsonl")}
    it = make_sqa_loader(corpus / "data.jsonl", METRICS, max_total_samples=12000, max_batch_size=8,
                         num_epochs=1, shuffle=False)  # fmt: skip
    num_padding = 0
    for b in all_batches(it):
        B, T = b["audio"].shape
        assert b["lengths"].dtype == np.int32 and b["labels"].shape == (B, 2)
        assert b["labels"].dtype == np.float32 and b["valid"].dtype == bool
        assert b["sample_id"].dtype == object and b["skipped"] == 0
        mask = np.arange(T)[None, :] < b["lengths"][:, None]
        assert np.all(b["audio"][~mask] == 0)  # zero beyond each length
        for k in range(B):
            sid = b["sample_id"][k]
            if not b["valid"][k]:  # batch padding row
                num_padding += 1
                assert sid == "" and b["system_id"][k] == "" and b["lengths"][k] == 0
                assert np.all(np.isnan(b["labels"][k]))
                continue
            r = records[sid]
            info = sf.info(r["audio_path"])
            assert b["lengths"][k] == -(-info.frames * 16000 // info.samplerate)  # ceil
            assert np.abs(b["audio"][k, : b["lengths"][k]]).max() > 0.05
            assert b["system_id"][k] == r["system_id"]
            expected = [r["metrics"].get(m, math.nan) for m in METRICS]
            np.testing.assert_array_equal(b["labels"][k], np.float32(expected))  # NaN == NaN
    assert num_padding > 0  # batches of 3, 5, 6 or 7 items are padded to 4 or 8


def test_resampling_to_16k_mono_matches_torchaudio(corpus):
    # The reference loads with torchaudio, resamples every channel with functional.resample's
    # defaults and averages the channels.
    it = make_sqa_loader(corpus / "data.jsonl", METRICS, max_total_samples=20000, num_epochs=1,
                         shuffle=False)  # fmt: skip
    checked = set()
    for b in all_batches(it):
        for k in np.flatnonzero(b["valid"]):
            x, fs = sf.read(corpus / "audio" / f"{b['sample_id'][k]}.wav", always_2d=True)
            x = x.T.astype(np.float32)  # torchaudio returns a 16 kHz signal unchanged
            ref = np.mean([c if fs == 16000 else torchaudio_resample_reference(c, fs, 16000)
                           for c in x], axis=0)  # fmt: skip
            assert b["lengths"][k] == len(ref)
            got = b["audio"][k, : len(ref)]
            np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6, err_msg=str(fs))
            checked.add((fs, x.shape[0]))
    assert {fs for fs, _ in checked} == set(RATES) and {c for _, c in checked} == {1, 2}


def order(it, num_batches: int) -> list[tuple]:
    out = [tuple(next(it)["sample_id"]) for _ in range(num_batches)]
    it.close()
    return out


def test_shuffle_reproducible_and_differs_across_epochs(corpus):
    kw = dict(max_total_samples=10000, max_batch_size=2)
    a = make_sqa_loader(corpus / "data.jsonl", METRICS, seed=7, **kw)
    n = a.plan.batches_per_epoch
    assert n >= 7
    first = order(a, 2 * n)
    assert first == order(make_sqa_loader(corpus / "data.jsonl", METRICS, seed=7, **kw), 2 * n)
    assert first[:n] != first[n:]  # the batch order changes per epoch ...
    assert sorted(first[:n]) == sorted(first[n:])  # ... the batches do not
    assert first != order(make_sqa_loader(corpus / "data.jsonl", METRICS, seed=8, **kw), 2 * n)
    unshuffled = order(make_sqa_loader(corpus / "data.jsonl", METRICS, shuffle=False, **kw), 2 * n)
    assert unshuffled[:n] == unshuffled[n:]


def test_resume_from_state_gives_the_same_batches(corpus):
    kw = dict(max_total_samples=10000, max_batch_size=2, seed=3)
    a = make_sqa_loader(corpus / "data.jsonl", METRICS, **kw)
    for _ in range(5):
        next(a)
    state = a.get_state()
    assert isinstance(state, bytes)
    expected = [next(a) for _ in range(6)]  # crosses the epoch boundary
    a.close()
    b = make_sqa_loader(corpus / "data.jsonl", METRICS, **kw)
    b.set_state(state)
    for want in expected:
        got = next(b)
        np.testing.assert_array_equal(got["audio"], want["audio"])
        assert list(got["sample_id"]) == list(want["sample_id"])
    b.close()


def test_resume_through_an_orbax_checkpoint(corpus, tmp_path):
    """The iterator saves and restores as train/checkpoint.py does (grain CheckpointSave)."""
    import grain
    import orbax.checkpoint as ocp

    kw = dict(max_total_samples=10000, max_batch_size=2, seed=5)
    a = make_sqa_loader(corpus / "data.jsonl", METRICS, **kw)
    next(a), next(a)
    mngr = ocp.CheckpointManager(tmp_path / "ckpt")
    mngr.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(a)))
    mngr.wait_until_finished()
    expected = [list(next(a)["sample_id"]) for _ in range(3)]
    a.close()
    b = make_sqa_loader(corpus / "data.jsonl", METRICS, **kw)
    mngr.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(b)))
    assert [list(next(b)["sample_id"]) for _ in range(3)] == expected
    b.close()
    mngr.close()


def test_shards_split_each_global_batch(corpus):
    kw = dict(max_total_samples=12000, max_batch_size=4, num_epochs=1, seed=1)
    whole = all_batches(make_sqa_loader(corpus / "data.jsonl", METRICS, **kw))
    parts = [all_batches(make_sqa_loader(corpus / "data.jsonl", METRICS, shard_index=p,
                                         shard_count=2, **kw)) for p in range(2)]  # fmt: skip
    assert len(parts[0]) == len(parts[1]) == len(whole)
    for g, p0, p1 in zip(whole, *parts):  # same global batches, padded to an even size
        assert p0["audio"].shape == p1["audio"].shape
        assert p0["audio"].shape[1] == g["audio"].shape[1]
        rows = np.empty(2 * len(p0["valid"]), object)
        rows[0::2], rows[1::2] = p0["sample_id"], p1["sample_id"]
        assert [s for s in rows if s] == [s for s in g["sample_id"] if s]


def test_items_above_the_cap_or_max_duration_are_dropped(corpus):
    records = read_jsonl(corpus / "data.jsonl")
    samples = planned_samples(records)
    cap = 6000
    it = make_sqa_loader(corpus / "data.jsonl", METRICS, max_total_samples=cap, num_epochs=1,
                         shuffle=False)  # fmt: skip
    kept = {s for b in all_batches(it) for s in b["sample_id"] if s}
    assert kept == {s for s, n in samples.items() if n <= cap}
    assert it.plan.num_dropped == sum(n > cap for n in samples.values()) > 0
    it = make_sqa_loader(corpus / "data.jsonl", METRICS, num_epochs=1, max_duration_s=0.2)
    kept = {s for b in all_batches(it) for s in b["sample_id"] if s}
    assert kept == {s for s, r in zip(samples, records) if r["duration"] <= 0.2}


def test_bad_files_are_skipped_and_counted(corpus, tmp_path):
    records = read_jsonl(corpus / "data.jsonl")[:4]
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF0000WAVEjunk")
    records[1] = {**records[1], "audio_path": str(tmp_path / "missing.wav")}
    records[2] = {**records[2], "audio_path": str(tmp_path / "corrupt.wav")}
    write_jsonl(tmp_path / "data.jsonl", records)
    it = make_sqa_loader(tmp_path / "data.jsonl", METRICS, num_epochs=1, shuffle=False)
    batches = all_batches(it)
    assert sum(b["skipped"] for b in batches) == 2
    assert it.skipped()["missing"] == 1 and it.skipped()["unreadable"] == 1
    rows = {}
    for b in batches:
        for s, v, n, lab in zip(b["sample_id"], b["valid"], b["lengths"], b["labels"]):
            rows[s] = (v, n, lab)
    for bad in (records[1]["sample_id"], records[2]["sample_id"]):
        valid, length, labels = rows[bad]
        assert not valid and length == 0 and np.all(np.isnan(labels))
    assert sum(v for v, _, _ in rows.values()) == 2
    with pytest.raises(BadFileError, match="missing.wav"):
        all_batches(make_sqa_loader(tmp_path / "data.jsonl", METRICS, num_epochs=1,
                                    shuffle=False, policy="raise"))  # fmt: skip


def test_audio_longer_than_its_duration_is_skipped_not_cut(corpus, tmp_path, caplog):
    records = read_jsonl(corpus / "data.jsonl")[:4]
    short = records[1]  # its file is twice as long as the data.jsonl says
    records[1] = {**short, "duration": short["duration"] / 2}
    # Within LENGTH_SLACK: the 3-decimal rounding of durations is not a mismatch.
    records[2] = {**records[2], "duration": records[2]["duration"] - 0.5 * LENGTH_SLACK / 16000}
    write_jsonl(tmp_path / "data.jsonl", records)
    info = sf.info(short["audio_path"])
    num_samples = -(-info.frames * 16000 // info.samplerate)  # the file at 16 kHz
    planned = int(round(short["duration"] / 2, 3) * 16000)
    with caplog.at_level("WARNING", logger="urgent_jax"):
        it = make_sqa_loader(tmp_path / "data.jsonl", METRICS, num_epochs=1, shuffle=False)
        batches = all_batches(it)
    assert it.skipped()["duration_mismatch"] == 1 and sum(b["skipped"] for b in batches) == 1
    assert "duration_mismatch" in caplog.text and short["audio_path"] in caplog.text
    rows = {s: (v, n) for b in batches for s, v, n in zip(b["sample_id"], b["valid"], b["lengths"])}
    assert rows[short["sample_id"]] == (False, 0)
    assert all(rows[r["sample_id"]][0] for r in records if r is not records[1])
    with pytest.raises(BadFileError, match=rf"duration_mismatch \({num_samples} samples .* "
                                           rf"gives {planned} \(\+{LENGTH_SLACK}"):
        all_batches(make_sqa_loader(tmp_path / "data.jsonl", METRICS, num_epochs=1,
                                    shuffle=False, policy="raise"))  # fmt: skip


# --- degradation ----------------------------------------------------------------------------------


def fake_batch(epoch: int = 0) -> dict:
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal((4, 1600))).astype(np.float32)
    lengths = np.array([1600, 1200, 800, 0], np.int32)
    audio[np.arange(1600)[None, :] >= lengths[:, None]] = 0
    return {"audio": audio, "lengths": lengths, "index": np.array([3, 7, 11, -1], np.int32),
            "labels": np.ones((4, 2), np.float32), "epoch": np.int64(epoch)}  # fmt: skip


def test_degrade_deterministic_per_seed_and_epoch():
    batch = fake_batch()
    a = Degrade(seed=1, p=1.0)(batch)
    b = Degrade(seed=1, p=1.0)(fake_batch())
    np.testing.assert_array_equal(a["audio"], b["audio"])
    assert not np.array_equal(a["audio"][:3], batch["audio"][:3])  # every real row changed
    np.testing.assert_array_equal(a["audio"][3], 0)  # padding row untouched
    np.testing.assert_array_equal(a["labels"], batch["labels"])  # labels kept
    c = Degrade(seed=2, p=1.0)(fake_batch())
    d = Degrade(seed=1, p=1.0)(fake_batch(epoch=1))
    assert not np.array_equal(a["audio"], c["audio"]) and not np.array_equal(a["audio"], d["audio"])
    np.testing.assert_array_equal(Degrade(seed=1, p=0.0)(fake_batch())["audio"], batch["audio"])
    mask = np.arange(1600)[None, :] >= batch["lengths"][:, None]
    assert np.all(a["audio"][mask] == 0)


def test_degrade_kinds_and_batch_independence():
    import jax

    batch = fake_batch()
    key = jax.random.PRNGKey(0)
    params = (1.0, np.array([4000]), np.array([0.2, 0.2]), np.array([0.5, 0.5]))
    kw = dict(sample_rate=16000)
    lost = np.asarray(degrade_batch(key, batch["audio"], batch["lengths"], batch["index"],
                                    *params, kinds=("packet_loss",), **kw))  # fmt: skip
    zero_packets = (np.abs(lost[0].reshape(-1, 320)).max(1) == 0).sum()
    assert 1 <= zero_packets < 5
    clipped = np.asarray(degrade_batch(key, batch["audio"], batch["lengths"], batch["index"],
                                       *params, kinds=("clipping",), **kw))  # fmt: skip
    q = np.quantile(batch["audio"][0], [0.2, 0.8])
    np.testing.assert_allclose([clipped[0].min(), clipped[0].max()], q, atol=1e-6)
    # Row keys depend on the item index only: permuting the rows permutes the output.
    perm = np.array([2, 0, 1, 3])
    permuted = np.asarray(degrade_batch(key, batch["audio"][perm], batch["lengths"][perm],
                                        batch["index"][perm], *params, kinds=("packet_loss",),
                                        **kw))  # fmt: skip
    np.testing.assert_array_equal(permuted, lost[perm])


def test_loader_with_degradation(corpus):
    kw = dict(max_total_samples=200_000, max_batch_size=16, num_epochs=1, shuffle=False)
    clean = all_batches(make_sqa_loader(corpus / "data.jsonl", METRICS, **kw))
    degrade = dict(p=1.0, kinds=("packet_loss",))
    a = all_batches(make_sqa_loader(corpus / "data.jsonl", METRICS, degrade=degrade, **kw))
    b = all_batches(make_sqa_loader(corpus / "data.jsonl", METRICS, degrade=degrade, **kw))
    for x, y, z in zip(clean, a, b):
        np.testing.assert_array_equal(y["audio"], z["audio"])
        np.testing.assert_array_equal(x["labels"], y["labels"])
    assert any(not np.array_equal(x["audio"], y["audio"]) for x, y in zip(clean, a))
    with pytest.raises(ValueError, match="subset"):
        Degrade(0, kinds=("codec",))
