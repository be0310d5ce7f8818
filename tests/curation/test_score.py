"""score_corpus bookkeeping with a stand-in scorer: outputs, bad files, resume, sharding."""

from __future__ import annotations

import collections
import math

import numpy as np

from urgent_jax.curation.score import (
    COLUMNS,
    _Item,
    merge_parts,
    plan_batches,
    read_scores,
    read_speech_scp,
    read_table,
    score_corpus,
)

from .conftest import BAD, FakeScorer


def _run(scp, out, scorer, **kwargs):
    return score_corpus(
        scp, out, batch_size=4, num_workers=2, use_progress_bar=False, scorer=scorer, **kwargs
    )


def test_scores_and_errors(tiny_corpus, tmp_path, fake_scorer):
    out = tmp_path / "run" / "scores.tsv"
    summary = _run(tiny_corpus, out, fake_scorer, shard_index=0, shard_count=1)
    header = out.read_text().splitlines()[0].split("\t")
    assert tuple(header) == COLUMNS
    scores = read_scores(out)
    good = {u for u in read_speech_scp(tiny_corpus) if u.startswith("good")}
    assert set(scores) == good
    errors = {r["uid"]: r for r in read_table(out.parent / "errors.tsv")}
    assert set(errors) == set(BAD)
    for uid, kind in BAD.items():
        assert errors[uid]["reason"].startswith(kind), errors[uid]
        assert errors[uid]["path"] == read_speech_scp(tiny_corpus)[uid][1]
    assert summary["num_scored"] == len(good) and summary["num_errors"] == len(BAD)
    for uid, row in scores.items():
        assert row["duration_s"] * row["fs"] == round(row["duration_s"] * row["fs"])
    assert {s[0] for s in fake_scorer.shapes} == {8000, 16000}


def test_resume_skips_done_ids(tiny_corpus, tmp_path):
    out = tmp_path / "scores.tsv"
    first = FakeScorer()
    _run(tiny_corpus, out, first, shard_index=0, shard_count=1)
    lines = out.read_text().splitlines()
    # Interrupted run: only the first 5 scored rows (and a half-written line) reached the disk.
    out.write_text("\n".join(lines[:6]) + "\n" + lines[6][:10])
    (tmp_path / "errors.tsv").write_text("uid\tpath\treason\n")
    second = FakeScorer()
    summary = _run(tiny_corpus, out, second, shard_index=0, shard_count=1)
    assert summary["num_skipped"] == 5
    assert summary["num_scored"] == 7 and summary["num_errors"] == len(BAD)
    uids = [r["uid"] for r in read_table(out)]
    assert len(uids) == len(set(uids)) == 12
    third = FakeScorer()
    summary = _run(tiny_corpus, out, third, shard_index=0, shard_count=1)
    assert summary["num_skipped"] == 17 and third.calls == 0


def test_shards_cover_every_id_once(tiny_corpus, tmp_path):
    out = tmp_path / "scores.tsv"
    s0 = _run(tiny_corpus, out, FakeScorer(), shard_index=0, shard_count=2)
    assert not s0["merged"] and not out.exists()
    s1 = _run(tiny_corpus, out, FakeScorer(), shard_index=1, shard_count=2)
    assert s1["merged"]
    parts = [read_table(tmp_path / f"scores.{p}.tsv") for p in range(2)]
    part_uids = [{r["uid"] for r in rows} for rows in parts]
    assert not part_uids[0] & part_uids[1]
    merged = [r["uid"] for r in read_table(out)]
    errors = [r["uid"] for r in read_table(tmp_path / "errors.tsv")]
    listed = set(read_speech_scp(tiny_corpus))
    assert sorted(merged + errors) == sorted(listed)
    assert merged == sorted(merged)
    assert merge_parts(out, 2)  # idempotent
    assert [r["uid"] for r in read_table(out)] == merged


def _speechmos_segments(num_samples_16k: int) -> int:
    """Segments speechmos scores: double until >= 9.01 s, then int(floor(L / fs) - 9.01) + 1."""
    n = num_samples_16k
    while n < int(9.01 * 16000):
        n *= 2
    return int(math.floor(n / 16000) - 9.01) + 1


def test_plan_batches_full_batches_of_one_segment_count():
    rng = np.random.default_rng(0)
    items = [
        _Item(f"u{k:03d}", "x.wav", int(fs), int(rng.uniform(0.2, 25.0) * fs))
        for k, fs in enumerate(rng.choice([8000, 16000, 48000], size=240))
    ]
    batches = plan_batches(items, batch_size=8)
    planned = [i.uid for b in batches for i in b]
    assert sorted(planned) == sorted(i.uid for i in items)  # every item exactly once

    def segments(item):
        return _speechmos_segments(math.ceil(item.num_samples * 16000 / item.fs))

    in_pure = collections.Counter()  # (rate, count) -> items in full one-count batches
    in_rest = collections.Counter()  # (rate, count) -> items in the length-ordered rest
    for batch in batches:
        assert 1 <= len(batch) <= 8
        assert len({i.fs for i in batch}) == 1
        assert [i.num_samples for i in batch] == sorted(i.num_samples for i in batch)
        counts = {segments(i) for i in batch}
        pure = len(batch) == 8 and len(counts) == 1
        for i in batch:
            (in_pure if pure else in_rest)[i.fs, segments(i)] += 1
    total = collections.Counter((i.fs, segments(i)) for i in items)
    for key, n in total.items():
        # Whole batches of one count wherever it has 8 items; fewer than 8 left for the rest.
        assert in_pure[key] == n - n % 8, (key, n, in_pure[key])
        assert in_rest[key] < 8, (key, in_rest[key])
    assert sum(in_pure.values()) > 0
    # Length order alone would have mixed segment counts in a batch (what the full batches avoid).
    mixed_before = 0
    for fs in (8000, 16000, 48000):
        by_length = sorted((i for i in items if i.fs == fs), key=lambda i: i.num_samples)
        for k in range(0, len(by_length), 8):
            mixed_before += len({segments(i) for i in by_length[k : k + 8]}) > 1
    assert mixed_before > 0
    assert plan_batches(items, batch_size=8) == batches  # deterministic


def test_plan_batches_small_corpus_keeps_length_batches():
    # No count fills a batch: the plan is plain length order (no extra compiled shapes).
    items = [_Item(f"u{k}", "x.wav", 16000, n) for k, n in enumerate([52000, 70000, 60000, 90000])]
    assert plan_batches(items, batch_size=8) == [sorted(items, key=lambda i: i.num_samples)]
