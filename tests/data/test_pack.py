"""ArrayRecord packing: pack -> PackedSource round trip is lossless (against soundfile reads) and
does not depend on the scp's line order; the source works as a Grain MapDataset source. Packed
paths (`packed:<DIR>#<uid>`, the lists pack writes) work in manifests, read_checked, the
dynamic-mixing loader and the SQA loader in place of the files."""

from __future__ import annotations

import json
import pickle
import shutil

import grain
import numpy as np
import pytest
import soundfile as sf

from urgent_jax.audio.io import AudioFileError
from urgent_jax.data.manifest import ManifestError, read_kv, read_source_list
from urgent_jax.data.pack import PackedSource, pack
from urgent_jax.data.pipeline import make_dynamic_mixing_loader
from urgent_jax.data.sources import BadFileError, _header_length, read_checked


@pytest.fixture
def small_scp(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for i, fs in enumerate((8000, 16000, 48000, 16000, 22050, 44100, 16000)):
        n = int(fs * (0.2 + 0.05 * i))
        x = np.clip(0.3 * rng.standard_normal(n), -1, 1).astype(np.float32)
        path = tmp_path / f"u{i}.{'flac' if i % 2 else 'wav'}"
        sf.write(path, x, fs)  # 16-bit
        lines.append(f"utt_{i} {fs} {path}")
    (tmp_path / "a.scp").write_text("\n".join(lines) + "\n")
    (tmp_path / "b.scp").write_text("\n".join(reversed(lines)) + "\n")
    (tmp_path / "utt2lang").write_text("".join(f"utt_{i} lang{i % 2}\n" for i in range(7)))
    return tmp_path


@pytest.mark.parametrize("codec", ["flac", "pcm16", "float32"])
def test_round_trip_lossless_and_order_independent(small_scp, codec):
    labels = {"lang": small_scp / "utt2lang"}
    a = pack(small_scp / "a.scp", small_scp / f"pa_{codec}", 3, codec=codec, labels=labels)
    pack(small_scp / "b.scp", small_scp / f"pb_{codec}", 3, codec=codec, labels=labels)
    assert a["num_records"] == 7
    src_a = PackedSource(small_scp / f"pa_{codec}")
    src_b = PackedSource(small_scp / f"pb_{codec}")
    assert len(src_a) == len(src_b) == 7
    for i in range(7):
        rec_a, rec_b = src_a[i], src_b[i]
        assert rec_a["uid"] == rec_b["uid"]
        np.testing.assert_array_equal(rec_a["audio"], rec_b["audio"])
    for line in (small_scp / "a.scp").read_text().splitlines():
        uid, fs, path = line.split()
        ref, ref_fs = sf.read(path, dtype="float32")
        rec = src_b.read(uid)
        assert rec["fs"] == ref_fs == int(fs) and rec["num_samples"] == len(ref)
        np.testing.assert_array_equal(rec["audio"], ref)
        assert rec["labels"] == {"lang": f"lang{int(uid[-1]) % 2}"}


def test_grain_source_and_pickle(small_scp):
    pack(small_scp / "a.scp", small_scp / "p", 2)
    src = pickle.loads(pickle.dumps(PackedSource(small_scp / "p")))
    ds = grain.MapDataset.source(src).map(lambda r: (r["uid"], r["num_samples"]))
    items = list(ds)
    assert [u for u, _ in items] == sorted(f"utt_{i}" for i in range(7))
    shuffled = list(grain.MapDataset.source(src).shuffle(seed=1).map(lambda r: r["uid"]))
    assert sorted(shuffled) == [u for u, _ in items]


# --- packed paths in manifests and loaders -------------------------------------------------------


def test_pack_writes_packed_lists(small_scp):
    out = small_scp / "p"
    pack(small_scp / "a.scp", out, 2)
    originals = [line.split() for line in (small_scp / "a.scp").read_text().splitlines()]
    linked = read_kv(out / "packed.scp")
    assert list(linked) == [uid for uid, _, _ in originals]  # the scp's order
    assert all(p == f"packed:{out}#{uid}" for uid, p in linked.items())
    entries = read_source_list(out / "speech_sources.scp", check_files=True)
    assert [(e.uid, e.fs, e.path) for e in entries] == [
        (uid, int(fs), linked[uid]) for uid, fs, _ in originals
    ]
    assert json.loads((out / "packed.json").read_text())["num_records"] == 7
    # An official list name is kept; a `uid path` list gets packed.scp only.
    (small_scp / "noise_scoures.scp").write_text((small_scp / "a.scp").read_text())
    pack(small_scp / "noise_scoures.scp", small_scp / "n", 1)
    assert (small_scp / "n" / "noise_scoures.scp").is_file()
    assert not (small_scp / "n" / "speech_sources.scp").exists()
    (small_scp / "two.scp").write_text("".join(f"{u} {p}\n" for u, _, p in originals))
    pack(small_scp / "two.scp", small_scp / "t", 1)
    assert sorted(p.name for p in (small_scp / "t").glob("*.scp")) == ["packed.scp"]


def test_read_checked_and_manifests_accept_packed_paths(small_scp, tmp_path):
    pack(small_scp / "a.scp", small_scp / "p", 3)
    for line in (small_scp / "a.scp").read_text().splitlines():
        uid, fs, path = line.split()
        p = f"packed:{small_scp / 'p'}#{uid}"
        np.testing.assert_array_equal(read_checked(p, int(fs)), read_checked(path, int(fs)))
        seg = read_checked(p, int(fs), start=100, num_samples=300, min_num_samples=300)
        np.testing.assert_array_equal(seg, sf.read(path, dtype="float32")[0][100:400])
        assert _header_length(p, int(fs)) == sf.info(path).frames
    missing = f"packed:{small_scp / 'p'}#utt_99"
    for call in (lambda: read_checked(missing, 16000), lambda: _header_length(missing, 16000)):
        with pytest.raises(BadFileError, match="missing") as e:
            call()
        assert e.value.reason == "missing" and e.value.path == missing
        assert str(e.value).startswith(f"{missing}: missing")
    with pytest.raises(BadFileError) as e:
        read_checked(f"packed:{small_scp / 'p'}#utt_1", 8000)  # listed at another rate
    assert e.value.reason == "wrong_rate"
    # Relative pack directories resolve from the list's directory, like relative files.
    (small_scp / "lists").mkdir()
    (small_scp / "lists" / "speech_sources.scp").write_text(
        "utt_1 16000 packed:../p#utt_1\nutt_0 8000 packed:../p#utt_0\n"
    )
    entries = read_source_list(
        small_scp / "lists" / "speech_sources.scp", resolve_relative=True, check_files=True
    )
    assert entries[0].path == f"packed:{small_scp / 'lists'}/../p#utt_1"
    assert read_checked(entries[1].path, 8000).size == 1600
    (small_scp / "lists" / "bad.scp").write_text(f"utt_99 16000 {missing}\n")
    with pytest.raises(ManifestError, match=r"bad.scp:1: missing packed utterance .*utt_99"):
        read_source_list(small_scp / "lists" / "bad.scp", check_files=True)


def test_dynamic_mixing_over_packed_speech_and_noise(demo_sources, tmp_path):
    """The loader over a sources dir whose speech and noise lists point at packs yields the same
    batches as over the files (FLAC records of the demo's 16-bit files are lossless)."""
    swapped = tmp_path / "train_sources"
    shutil.copytree(demo_sources, swapped)
    for name in ("speech_sources.scp", "noise_scoures.scp"):
        pack(demo_sources / name, tmp_path / f"pack_{name}", 2)
        shutil.copy(tmp_path / f"pack_{name}" / name, swapped / name)
    assert "packed:" in (swapped / "noise_scoures.scp").read_text()
    kw = dict(batch_size=2, seed=3, mixing="step", max_num_samples=4000, num_buckets=2,
              p_wind=0.0, policy="raise")  # fmt: skip
    files = make_dynamic_mixing_loader(demo_sources, **kw)
    packs = make_dynamic_mixing_loader(swapped, **kw)
    try:
        for _ in range(4):
            a, b = next(files), next(packs)
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
            assert not np.any(b["skipped"])
    finally:
        files.close()
        packs.close()


def test_sqa_loader_over_packed_paths(demo_sources, tmp_path):
    from urgent_jax.sqa.data import make_sqa_loader, write_jsonl

    lines = (demo_sources / "speech_sources.scp").read_text().splitlines()[:6]
    (tmp_path / "six.scp").write_text("\n".join(lines) + "\n")
    pack(tmp_path / "six.scp", tmp_path / "p", 2)
    files, packs = [], []
    for i, line in enumerate(lines):
        uid, fs, path = line.split()
        rec = {"system_id": f"s{i % 2}", "sample_id": uid,
               "duration": sf.info(path).frames / int(fs), "metrics": {"mos": 1.0 + i}}  # fmt: skip
        files.append(rec | {"audio_path": path})
        packs.append(rec | {"audio_path": f"packed:{tmp_path / 'p'}#{uid}"})
    write_jsonl(tmp_path / "files.jsonl", files)
    write_jsonl(tmp_path / "packed.jsonl", packs)
    kw = dict(max_total_samples=400_000, max_batch_size=2, num_epochs=1, shuffle=False,
              policy="raise")  # fmt: skip
    a = list(make_sqa_loader(tmp_path / "files.jsonl", ["mos"], **kw))
    b = list(make_sqa_loader(tmp_path / "packed.jsonl", ["mos"], **kw))
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert np.all(y["valid"]) and y["skipped"] == 0
        for k in ("audio", "lengths", "labels", "valid", "sample_id"):
            np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]), err_msg=k)


def test_pack_rejects_zero_shards(small_scp):
    with pytest.raises(ValueError, match="num_shards must be at least 1, got 0"):
        pack(small_scp / "a.scp", small_scp / "p0", 0)


def test_pack_rejects_an_empty_list(tmp_path):
    (tmp_path / "empty.scp").write_text("")
    with pytest.raises(ValueError, match=r"empty\.scp: empty list, nothing to pack"):
        pack(tmp_path / "empty.scp", tmp_path / "p", 2)
    assert not (tmp_path / "p").exists()


def test_pack_rejects_duplicate_uids(small_scp):
    lines = (small_scp / "a.scp").read_text().splitlines()
    dup = small_scp / "dup.scp"
    dup.write_text("\n".join(lines + [lines[2]]) + "\n")
    with pytest.raises(ValueError, match=r"dup\.scp:8: duplicate uid utt_2 \(first on line 3\)"):
        pack(dup, small_scp / "pdup", 2)


def test_pack_error_on_a_bad_file_names_the_list_and_uid(small_scp):
    # Before: only the audio path ("/x/gone.wav: no such file"), not which list / uid to fix.
    lines = (small_scp / "a.scp").read_text().splitlines()
    bad = lines[:2] + ["utt_gone 16000 /nonexistent/gone.wav"]
    (small_scp / "bad.scp").write_text("\n".join(bad) + "\n")
    with pytest.raises(AudioFileError, match=r"bad\.scp: uid utt_gone: /nonexistent/gone\.wav: no such"):
        pack(small_scp / "bad.scp", small_scp / "pbad", 2)
    uid, _, path = lines[1].split()  # a 16 kHz file
    (small_scp / "rate.scp").write_text(f"{uid} 8000 {path}\n")
    with pytest.raises(ValueError, match=rf"rate\.scp: uid {uid}: .* list says 8000 Hz"):
        pack(small_scp / "rate.scp", small_scp / "prate", 2)


def test_pack_warns_once_when_16_bit_codecs_change_samples(small_scp, caplog):
    """16-bit sources are silent; float sources off the 16-bit grid or beyond [-1, 1) are counted
    (checked against what the flac codec really gives back) and reported in one warning each."""
    rng = np.random.default_rng(1)
    lines = (small_scp / "a.scp").read_text().splitlines()  # 7 16-bit files
    for i, peak in enumerate((0.5, 0.9, 1.5)):  # float files: off-grid; the last one also clips
        x = peak * np.sin(np.linspace(0, 60, 4000)) + 1e-4 * rng.standard_normal(4000)
        sf.write(small_scp / f"f{i}.wav", x.astype(np.float32), 16000, subtype="FLOAT")
        lines.append(f"float_{i} 16000 {small_scp / f'f{i}.wav'}")
    (small_scp / "mixed.scp").write_text("\n".join(lines) + "\n")
    with caplog.at_level("WARNING", logger="urgent_jax.data.pack"):
        pack(small_scp / "mixed.scp", small_scp / "p_flac", 2)
    src = PackedSource(small_scp / "p_flac")
    changed = clipped = 0
    for line in lines:
        uid, _, path = line.split()
        ref, _ = sf.read(path, dtype="float32")
        changed += not np.array_equal(src.read(uid)["audio"], ref)
        clipped += float(np.max(np.abs(ref))) > 1.0
    assert (changed, clipped) == (3, 1)
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(messages) == 2
    assert "3 of 10 utterances have samples off the 16-bit grid" in messages[0]
    assert "1 of 10 utterances have samples outside [-1, 1)" in messages[1]
    caplog.clear()
    with caplog.at_level("WARNING", logger="urgent_jax.data.pack"):
        pack(small_scp / "mixed.scp", small_scp / "p_f32", 2, codec="float32")
        pack(small_scp / "a.scp", small_scp / "p_16", 2)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
