"""score_corpus bookkeeping with a stand-in scorer: outputs, bad files, resume, sharding, packed
paths, concurrent merges, the multi-process command; and data-parallel scoring on 2 devices."""

from __future__ import annotations

import collections
import json
import math
import os
import socket
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import TEST_XLA_FLAGS
from urgent_jax.curation.score import (
    COLUMNS,
    Scorer,
    _Item,
    merge_parts,
    part_paths,
    plan_batches,
    read_scores,
    read_speech_scp,
    read_table,
    score_corpus,
)
from urgent_jax.data.pack import pack

from .conftest import BAD, FakeScorer

REPO = Path(__file__).resolve().parents[2]


def _run(scp, out, scorer, **kwargs):
    return score_corpus(
        scp, out, batch_size=4, num_workers=2, use_progress_bar=False, scorer=scorer, **kwargs
    )


def test_missing_or_empty_speech_scp_is_an_error(tmp_path, fake_scorer):
    # Before: a missing list gave a raw open() traceback, an empty one "scored 0 utterances", exit 0.
    out = tmp_path / "run" / "scores.tsv"
    with pytest.raises(FileNotFoundError, match="nosuch.scp: speech list not found"):
        _run(tmp_path / "nosuch.scp", out, fake_scorer, shard_index=0, shard_count=1)
    (tmp_path / "empty.scp").write_text("\n")
    with pytest.raises(ValueError, match="empty.scp: empty speech list"):
        _run(tmp_path / "empty.scp", out, fake_scorer, shard_index=0, shard_count=1)
    assert not out.exists()


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


# --- packed paths, multi-process, data-parallel scoring, crash-safe resume and merge ------------


def _rms_of_files(scp):
    """uid -> RMS of channel 0 read with soundfile (the FakeScorer's value, independently)."""
    out = {}
    for uid, (_, path) in read_speech_scp(scp).items():
        if uid.startswith("good"):
            x, _ = sf.read(path, dtype="float32", always_2d=True)
            out[uid] = float(np.sqrt(np.mean(x[:, 0].astype(np.float64) ** 2)))
    return out


def test_packed_paths_score(tiny_corpus, tmp_path, fake_scorer):
    good = tmp_path / "good.scp"
    good.write_text("".join(l + "\n" for l in tiny_corpus.read_text().splitlines()
                            if l.startswith("good")))  # fmt: skip
    pack(good, tmp_path / "pack", 3)
    listed = tmp_path / "lists" / "speech_sources.scp"
    listed.parent.mkdir()
    # a relative pack DIR resolves from the list's directory, as a relative file path does
    lines = (tmp_path / "pack" / "speech_sources.scp").read_text().splitlines()
    lines = [l.replace(f"packed:{tmp_path / 'pack'}#", "packed:../pack#") for l in lines]
    lines.append("gone 16000 packed:../pack#no_such_uid")
    listed.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run" / "scores.tsv"
    summary = _run(listed, out, fake_scorer, shard_index=0, shard_count=1)
    assert summary["num_scored"] == 12 and summary["num_errors"] == 1
    scores = read_scores(out)
    for uid, rms in _rms_of_files(good).items():
        assert scores[uid]["path"].startswith(f"packed:{tmp_path / 'lists' / '..' / 'pack'}#")
        assert scores[uid]["dnsmos_sig"] == pytest.approx(rms, rel=1e-6)
    (error,) = read_table(out.parent / "errors.tsv")
    assert error["uid"] == "gone" and error["reason"].startswith("missing")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_initialises_jax_distributed(tmp_path):
    """Two command processes with --coordinator_address: each is shard jax.process_index() of 2
    (files that are all missing: no scoring, no weights loaded)."""
    uids = [f"utt_{k:02d}" for k in range(12)]
    scp = tmp_path / "speech.scp"
    scp.write_text("".join(f"{u} 16000 {tmp_path / 'missing' / u}.wav\n" for u in uids))
    out = tmp_path / "scores.tsv"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(URGENT_JAX_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    port = _free_port()
    procs = []
    try:
        for rank in range(2):
            cmd = [sys.executable, "-m", "urgent_jax.curation.score", f"--speech_scp={scp}",
                   f"--out={out}", "--noprogress", f"--coordinator_address=127.0.0.1:{port}",
                   "--num_processes=2", f"--process_id={rank}", "--distributed_timeout_s=60"]  # fmt: skip
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))  # fmt: skip
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    for rank in range(2):
        part = {r["uid"] for r in read_table(tmp_path / f"errors.{rank}.tsv")}
        assert part == {u for u in uids if zlib.crc32(u.encode()) % 2 == rank}
    assert sorted(r["uid"] for r in read_table(tmp_path / "errors.tsv")) == uids


DATA_PARALLEL_SCRIPT = """
import sys
import numpy as np
from urgent_jax import configure_cpu_kernels
configure_cpu_kernels()
import jax
from urgent_jax.curation.score import Scorer
audio, lengths = np.load(sys.argv[1])["audio"], np.load(sys.argv[1])["lengths"]
scorer = Scorer(distill_mos=False)
score_on_devices, seen = scorer.score_on_devices, {}
scorer.score_on_devices = lambda *args: seen.setdefault("out", score_on_devices(*args))
values = scorer(audio, lengths, 16000)  # through score_on_devices: one run
on_devices = seen["out"]["dnsmos_sig"]
shards = [s.data.shape for s in on_devices.addressable_shards]
np.savez(sys.argv[2], num_devices=len(scorer.devices), shard_rows=np.array(shards)[:, 0],
         num_sharded=len(on_devices.sharding.device_set), **values)
"""


def test_scoring_is_data_parallel_and_equals_one_device(tmp_path):
    """2 fake CPU devices (subprocess) against this process's one device, run side by side: 3
    rows are padded to 4 and split 2 + 2, and every score is bitwise the single-device one."""
    rng = np.random.default_rng(0)
    lengths = np.array([19200, 9600, 4800])  # repeated to 9.6 s: one DNSMOS segment each
    t = np.arange(19200) / 16000
    audio = np.stack([(0.1 + 0.05 * k) * np.sin(2 * np.pi * 200 * (k + 1) * t) for k in range(3)])
    audio = (audio + 0.01 * rng.standard_normal(audio.shape)).astype(np.float32)
    for k, n in enumerate(lengths):
        audio[k, n:] = 0.0
    np.savez(tmp_path / "batch.npz", audio=audio, lengths=lengths)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(
        PYTHONPATH=str(REPO),
        XLA_FLAGS=f"{TEST_XLA_FLAGS} --xla_force_host_platform_device_count=2".strip(),
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", DATA_PARALLEL_SCRIPT, tmp_path / "batch.npz", tmp_path / "out.npz"],
        cwd=REPO, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        single = Scorer(distill_mos=False)
        assert len(single.devices) == 1
        expected = single(audio, lengths, 16000)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err[-3000:]
    got = np.load(tmp_path / "out.npz")
    assert got["num_devices"] == 2 and got["num_sharded"] == 2
    assert got["shard_rows"].tolist() == [2, 2]
    assert set(expected) == set(got.files) - {"num_devices", "num_sharded", "shard_rows"}
    for column, values in expected.items():
        assert got[column].shape == (3,)
        np.testing.assert_array_equal(got[column], values, err_msg=column)
    assert np.isnan(expected["distill_mos"]).all() and np.isfinite(expected["dnsmos_ovrl"]).all()


def test_resume_rescores_a_row_cut_in_its_last_field(tiny_corpus, tmp_path):
    """A crash inside the path column leaves a row with every field: without its newline it is
    not done. A row whose numbers do not parse is not done either."""
    out = tmp_path / "scores.tsv"
    _run(tiny_corpus, out, FakeScorer(), shard_index=0, shard_count=1)
    lines = out.read_text().splitlines()
    broken = lines[3].split("\t")
    broken[COLUMNS.index("snr_db")] = "1.2.3"
    cut = lines[6][: lines[6].rindex("/") + 3]  # every field, the path cut
    assert len(cut.split("\t")) == len(COLUMNS)
    out.write_text("\n".join(lines[:3] + ["\t".join(broken)] + lines[4:6]) + "\n" + cut)
    second = FakeScorer()
    summary = _run(tiny_corpus, out, second, shard_index=0, shard_count=1)
    assert summary["num_skipped"] == 4 + len(BAD)  # rows 1, 2, 4, 5 and the errors
    assert summary["num_scored"] == 8
    listed = read_speech_scp(tiny_corpus)
    scores = read_scores(out)
    assert len(scores) == 12
    for uid, row in scores.items():
        assert row["path"] == listed[uid][1]
        assert row["dnsmos_sig"] == pytest.approx(_rms_of_files(tiny_corpus)[uid], rel=1e-6)
    assert all(line.count("\t") == len(COLUMNS) - 1 for line in out.read_text().splitlines())


def _write_part(out, shard, shard_count, uids):
    score_path, error_path, done = part_paths(out, shard, shard_count)
    values = {c: "0.5" for c in COLUMNS} | {"fs": "16000", "target_fs": "8000"}
    rows = ["\t".join(COLUMNS)]
    for u in uids:
        rows.append("\t".join((values | {"uid": u, "path": f"/a/{u}.wav"})[c] for c in COLUMNS))
    score_path.write_text("".join(r + "\n" for r in rows))
    error_path.write_text("uid\tpath\treason\n")
    done.write_text(json.dumps({"shard_index": shard, "shard_count": shard_count, "run": "x"}))


def test_concurrent_merges_never_collide(tmp_path):
    """Processes finishing together all call merge_parts: one merges at a time, through files of
    its own, so no call fails and the result is whole."""
    out = tmp_path / "scores.tsv"
    uids = [f"u{k:06d}" for k in range(30000)]
    for shard in range(2):
        _write_part(out, shard, 2, uids[shard::2])
    for _ in range(2):
        out.unlink(missing_ok=True)
        (tmp_path / "scores.merged").unlink(missing_ok=True)
        barrier = threading.Barrier(4)
        results, failures = [], []

        def merge(barrier=barrier, results=results, failures=failures):
            barrier.wait()
            try:
                results.append(merge_parts(out, 2))
            except Exception as e:  # noqa: BLE001 - the failure is the finding
                failures.append(repr(e))

        threads = [threading.Thread(target=merge) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures and results == [True] * 4
        assert [r["uid"] for r in read_table(out)] == uids
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_shards_by_uid_hash_survive_new_uids_and_shard_counts(tiny_corpus, tmp_path):
    out = tmp_path / "scores.tsv"
    for shard in range(2):
        summary = _run(tiny_corpus, out, FakeScorer(), shard_index=shard, shard_count=2)
        listed = read_speech_scp(tiny_corpus)
        expected = sorted(u for u in listed if zlib.crc32(u.encode("utf-8")) % 2 == shard)
        assert summary["num_listed"] == len(expected)
    first = {r["uid"]: r for r in read_table(out)}
    assert len(first) == 12
    # one more utterance: only its shard scores it, and no merge before both shards reran
    good = tiny_corpus.read_text().splitlines()[0].split()
    tiny_corpus.write_text(tiny_corpus.read_text() + f"aaa_new {good[1]} {good[2]}\n")
    new_shard = zlib.crc32(b"aaa_new") % 2
    s_other = _run(tiny_corpus, out, FakeScorer(), shard_index=1 - new_shard, shard_count=2)
    assert s_other["num_scored"] == 0 and s_other["num_errors"] == 0
    assert not s_other["merged"]  # the other shard's .done is for the old list
    assert "aaa_new" not in {r["uid"] for r in read_table(out)}
    s_new = _run(tiny_corpus, out, FakeScorer(), shard_index=new_shard, shard_count=2)
    assert s_new["num_scored"] == 1 and s_new["merged"]
    merged = {r["uid"]: r for r in read_table(out)}
    assert set(merged) == set(first) | {"aaa_new"}
    # three shards now: everything is found in the earlier parts, nothing is rescored
    scorers = [FakeScorer() for _ in range(3)]
    summaries = [_run(tiny_corpus, out, scorers[p], shard_index=p, shard_count=3)
                 for p in range(3)]  # fmt: skip
    assert [s["num_scored"] + s["num_errors"] for s in summaries] == [0, 0, 0]
    assert [s.calls for s in scorers] == [0, 0, 0]
    assert [s["merged"] for s in summaries] == [False, False, True]
    assert {r["uid"]: r for r in read_table(out)} == merged
    errors = [r["uid"] for r in read_table(tmp_path / "errors.tsv")]
    assert sorted(errors) == sorted(BAD)
