"""filter_scores on crafted score tables: which rows the rules keep, the official list format,
resampling to the estimated-bandwidth rate, and the report tables."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr

from urgent_jax.curation.filter import corpus_of, filter_scores
from urgent_jax.curation.score import COLUMNS
from urgent_jax.data.manifest import read_int_kv, read_source_list
from urgent_jax.data.pack import pack
from urgent_jax.train.config_file import load_config


def test_missing_or_empty_scores_file_is_an_error(tmp_path):
    # Before: a mistyped --scores path (or an empty file) "kept 0 / 0 utterances" with exit 0.
    with pytest.raises(FileNotFoundError, match="nosuch.tsv: scores file not found"):
        filter_scores(tmp_path / "nosuch.tsv", "configs/curation/urgent2025.py", tmp_path / "out")
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(ValueError, match="empty.tsv: no scored utterances"):
        filter_scores(tmp_path / "empty.tsv", "configs/curation/urgent2025.py", tmp_path / "out")
    assert not (tmp_path / "out").exists()


BASE = dict(dnsmos_sig=3.5, dnsmos_bak=3.5, dnsmos_ovrl=3.2, dnsmos_p808=3.6, distill_mos=3.5,
            bandwidth_hz=7800.0, target_fs=16000, speech_ratio=0.8, clipping_ratio=1e-5,
            snr_db=30.0, dc_offset=0.0)


def _write_scores(path, rows):
    lines = ["\t".join(COLUMNS)]
    for row in rows:
        full = {**BASE, "fs": 16000, "duration_s": 1.0, "path": "/x.wav", **row}
        lines.append("\t".join(str(full[c]) for c in COLUMNS))
    path.write_text("\n".join(lines) + "\n")


def test_urgent2025_rules(tmp_path):
    rows = [
        dict(uid="book_00001_chp_0001_reader_1_seg_0", dnsmos_bak=3.1),  # librivox, kept
        dict(uid="book_00002_chp_0001_reader_1_seg_0", dnsmos_bak=2.9),  # librivox BAK < 3
        dict(uid="1272_128104_000005_000008", dnsmos_bak=2.0),  # libritts: no BAK rule
        dict(uid="1272_128104_000005_000009", speech_ratio=0.19),  # VAD < 0.2
        dict(uid="common_voice_en_1", dnsmos_sig=2.9),  # cv_en: SIG < 3
        dict(uid="common_voice_de_1", dnsmos_sig=2.9),  # other CommonVoice: kept
        dict(uid="mls_french_1_2_3", speech_ratio=float("nan")),  # NaN never passes
    ]
    _write_scores(tmp_path / "scores.tsv", rows)
    summary = filter_scores(tmp_path / "scores.tsv", "configs/curation/urgent2025.py",
                            tmp_path / "out", make_figures=False)
    kept = [e.uid for e in read_source_list(tmp_path / "out" / "speech_sources.scp")]
    assert kept == sorted([rows[0]["uid"], rows[2]["uid"], rows[5]["uid"]])
    assert summary["num_removed"] == 4
    assert summary["removed_by_rule"] == {
        "dnsmos_bak>=3": 1, "speech_ratio>=0.2": 2, "dnsmos_sig>=3": 1}
    assert summary["by_corpus"]["librivox"] == {"kept_h": 1 / 3600, "removed_h": 1 / 3600}
    removed = (tmp_path / "out" / "removed.tsv").read_text().splitlines()
    assert len(removed) == 5 and removed[0] == "uid\tcorpus\tfailed"


def test_languages_from_utt2lang_else_the_uid_rule(tmp_path):
    # REFERENCE.md §1.2: mls_french / common_voice_fr -> fra, mls_german / common_voice_de -> deu,
    # mls_spanish / common_voice_es -> spa, common_voice_zh-CN -> zho, anything else eng.
    rows = [dict(uid=u) for u in ("mls_french_1_2_3", "common_voice_de_9", "mls_spanish_4",
                                  "common_voice_zh-CN_5", "book_00001_chp_0001", "spk1_utt")]
    _write_scores(tmp_path / "scores.tsv", rows)
    summary = filter_scores(tmp_path / "scores.tsv", "configs/curation/urgent2025.py",
                            tmp_path / "out", make_figures=False)
    hours = {lang: t["kept_h"] * 3600 for lang, t in summary["by_language"].items()}
    assert hours == {"fra": 1, "deu": 1, "spa": 1, "zho": 1, "eng": 2}
    (tmp_path / "utt2lang").write_text("spk1_utt jpn\n")
    filter_scores(tmp_path / "scores.tsv", "configs/curation/urgent2025.py", tmp_path / "out2",
                  utt2lang=tmp_path / "utt2lang", make_figures=False)
    lines = (tmp_path / "out2" / "utt2lang").read_text().split("\n")
    assert "spk1_utt jpn" in lines and "mls_french_1_2_3 fra" in lines


def test_corpus_regexes():
    corpora = load_config("configs/curation/urgent2025.py").corpora
    assert corpus_of("book_00233_chp_0014_reader_11826_41_seg_0_seg1(2)", corpora) == "librivox"
    assert corpus_of("common_voice_de_19956308", corpora) == "commonvoice"
    assert corpus_of("mls_french_7142_2432_000108", corpora) == "mls"
    assert corpus_of("p226_001_mic2", corpora) == "vctk"
    assert corpus_of("p101_rainbow_04_whisper", corpora) == "ears"
    assert corpus_of("1272_128104_000005_000008", corpora) == "libritts"
    assert corpus_of("something", corpora) == "other"


def test_resample_to_bandwidth_rate(tmp_path):
    fs, n = 48000, 24000
    x = (0.1 * np.sin(2 * np.pi * 1000 * np.arange(n) / fs)).astype(np.float32)
    sf.write(tmp_path / "a.wav", x, fs, subtype="FLOAT")
    rows = [dict(uid="a", fs=fs, duration_s=n / fs, path=str(tmp_path / "a.wav"),
                 bandwidth_hz=7000.0, target_fs=16000)]
    _write_scores(tmp_path / "scores.tsv", rows)
    rules = dict(min_scores={"speech_ratio": 0.2}, corpora={})
    filter_scores(tmp_path / "scores.tsv", rules, tmp_path / "out", resample=True,
                  make_figures=False)
    (entry,) = read_source_list(tmp_path / "out" / "speech_sources.scp")
    y, rate = sf.read(entry.path, dtype="float32")
    assert entry.fs == rate == 16000
    assert read_int_kv(tmp_path / "out" / "source_length.scp") == {"a": len(y)}
    np.testing.assert_allclose(y, soxr.resample(x, fs, 16000, quality="HQ"), atol=2 / 32768)


def test_unknown_rule_key(tmp_path):
    _write_scores(tmp_path / "scores.tsv", [dict(uid="a")])
    with pytest.raises(ValueError, match="unknown rule keys"):
        filter_scores(tmp_path / "scores.tsv", {"min_score": {}}, tmp_path / "out")


def test_resample_skips_and_counts_bad_files(tmp_path):
    """--resample: a moved, unreadable or wrong-rate file is removed with its reason and counted;
    the others (a packed utterance included) are resampled as soxr does."""
    fs, n = 48000, 24000
    x = (0.1 * np.sin(2 * np.pi * 1000 * np.arange(n) / fs)).astype(np.float32)
    sf.write(tmp_path / "a.wav", x, fs, subtype="FLOAT")
    sf.write(tmp_path / "p.wav", 0.5 * x, fs, subtype="FLOAT")
    sf.write(tmp_path / "rate.wav", x, 44100, subtype="FLOAT")
    (tmp_path / "garbage.wav").write_bytes(b"RIFF not really audio")
    (tmp_path / "p.scp").write_text(f"p {fs} {tmp_path / 'p.wav'}\n")
    pack(tmp_path / "p.scp", tmp_path / "pack", 1, codec="float32")
    paths = {"a": tmp_path / "a.wav", "b_moved": tmp_path / "moved.wav",
             "c_rate": tmp_path / "rate.wav", "d_garbage": tmp_path / "garbage.wav",
             "p": f"packed:{tmp_path / 'pack'}#p"}  # fmt: skip
    rows = [{"uid": u, "fs": fs, "duration_s": n / fs, "path": str(p), "target_fs": 16000}
            for u, p in paths.items()]  # fmt: skip
    _write_scores(tmp_path / "scores.tsv", rows)
    summary = filter_scores(tmp_path / "scores.tsv", {"min_scores": {"speech_ratio": 0.2}},
                            tmp_path / "out", resample=True, make_figures=False)  # fmt: skip
    entries = {e.uid: e for e in read_source_list(tmp_path / "out" / "speech_sources.scp")}
    assert sorted(entries) == ["a", "p"]
    for uid, source in (("a", x), ("p", 0.5 * x)):
        y, rate = sf.read(entries[uid].path, dtype="float32")
        assert entries[uid].fs == rate == 16000
        np.testing.assert_allclose(y, soxr.resample(source, fs, 16000, quality="HQ"),
                                   atol=2 / 32768)  # fmt: skip
    removed = (tmp_path / "out" / "removed.tsv").read_text().splitlines()[1:]
    reasons = {line.split("\t")[0]: line.split("\t")[2] for line in removed}
    assert reasons["b_moved"].startswith("resample_error: missing")
    assert reasons["c_rate"].startswith("resample_error: wrong_rate")
    assert reasons["d_garbage"].startswith("resample_error: unreadable")
    assert summary["num_resample_errors"] == 3 and summary["num_removed"] == 3
    assert summary["num_kept"] == 2
    assert summary["removed_by_rule"] == {"resample_error": 3}
    assert summary["removed_h"] == pytest.approx(3 * n / fs / 3600)


@pytest.mark.parametrize("bad_line, message", [
    ("broken\t16000\t1.0", r"scores.tsv:3: 3 fields, the header has 15"),
    ("\t".join(["u_nan_fs", "NaN"] + ["1.0"] * 12 + ["/x.wav"]),
     r"scores.tsv:3: a field does not parse"),
])  # fmt: skip
def test_malformed_scores_row_is_an_error_naming_its_line(tmp_path, bad_line, message):
    # Before: read_table dropped a row with the wrong field count silently, and a row whose fs did
    # not parse was skipped with a warning: the utterance left the curated list unreported
    # ("kept 1 / 1").
    _write_scores(tmp_path / "scores.tsv", [dict(uid="u_ok"), dict(uid="u_last")])
    lines = (tmp_path / "scores.tsv").read_text().splitlines()
    lines.insert(2, bad_line)
    (tmp_path / "scores.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        filter_scores(tmp_path / "scores.tsv", "configs/curation/urgent2025.py", tmp_path / "out",
                      make_figures=False)
    (tmp_path / "scores.tsv").write_text("\n".join(lines[:2]) + "\n" + lines[3][:5])  # cut line
    with pytest.raises(ValueError, match=r"scores.tsv:3: last line cut"):
        filter_scores(tmp_path / "scores.tsv", "configs/curation/urgent2025.py", tmp_path / "out",
                      make_figures=False)
