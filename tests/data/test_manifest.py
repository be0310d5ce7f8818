"""Tests for data/manifest.py: round trips of every URGENT format and one test per bad input."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from urgent_jax.data import manifest as mf
from urgent_jax.data.manifest import ManifestError, MetaRow, QualityRecord, SourceEntry

WIND_AUG = (
    "wind_noise(threshold=0.2,ratio=3.5,attack=20.0,release=50.0,sc_gain=1.0,clipping=True,"
    "clipping_threshold=0.9)/codec(format=mp3,encoder=None,qscale=4)"
)
PACKET_LOSS_AUG = "packet_loss(packet_loss_indices=[12, 13, 40],packet_duration_ms=20)"
WIND_ONLY_AUG = (
    "wind_noise(threshold=0.1372,ratio=12.25,attack=5.5,release=99.0,sc_gain=0.81,clipping=False,"
    "clipping_threshold=0.875)/"
)
HEADER_NO_NOISE = (
    "id\tnoisy_path\tspeech_uid\tspeech_sid\tclean_path\tnoise_uid\tsnr_dB\trir_uid\t"
    "augmentation\tfs\tlength\ttext"
)
HEADER_NOISE = HEADER_NO_NOISE.replace("noise_uid\t", "noise_uid\tnoise_path\t")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _meta_line(
    uid: str,
    noise_uid: str,
    snr: str,
    rir: str,
    aug: str,
    fs: str,
    length: str,
    text: str,
    noise_path: str | None = None,
) -> str:
    """One official-style meta.tsv line (with a noise_path column when given)."""
    noise = [noise_uid] + ([noise_path] if noise_path is not None else [])
    head = [uid, f"out/noisy/0/{uid}.flac", "p226_001_mic1", "p226", f"out/clean/0/{uid}.flac"]
    return "\t".join(head + noise + [snr, rir, aug, fs, length, text])


def _canonical_meta(store_noise: bool) -> str:
    lines = [HEADER_NOISE if store_noise else HEADER_NO_NOISE]
    rows = [
        ("fileid_1", "wind_noise_48000hz_12", "-3.4127839201173744", "none", WIND_AUG, "48000"),
        ("fileid_2", "dns5_noise_0042", "7.31", "rir_000123", PACKET_LOSS_AUG, "16000"),
        ("fileid_3", "fsd50k_99", "19.999999999999996", "none", "none", "8000"),
        ("fileid_4", "wind_noise_22050hz_3", "0.0", "none", WIND_ONLY_AUG, "22050"),
    ]
    texts = ["<not-available>", "Please call Stella.", "ask her to  bring these", ""]
    for (uid, noise_uid, snr, rir, aug, fs), text in zip(rows, texts):
        noise_path = f"out/noise/0/{uid}.flac" if store_noise else None
        lines.append(_meta_line(uid, noise_uid, snr, rir, aug, fs, "123456", text, noise_path))
    return "\n".join(lines) + "\n"


def _assert_points_at(excinfo: pytest.ExceptionInfo, path: Path, line_no: int) -> None:
    """The message names the file and the 1-based line."""
    assert type(excinfo.value) is ManifestError
    assert f"{path}:{line_no}:" in str(excinfo.value), str(excinfo.value)


# --- source lists ---


def test_source_list_round_trip(tmp_path):
    entries = [
        SourceEntry("p226_001_mic1", 48000, "/data/vctk/p226_001_mic1.flac"),
        SourceEntry("book_00233_chp_0014_reader_11826_41_seg_0_seg1(2)", 16000, "dns5/a.wav"),
        SourceEntry("wind_noise_8000hz_1", 8000, "wind/8k/1.wav"),
    ]
    path = tmp_path / "sub" / "dir" / "speech_sources.scp"  # writers create parents
    mf.write_source_list(path, entries)
    assert mf.read_source_list(path) == entries

    text = "a 16000 rel/a.wav\nb 44100 /abs/b.flac\nc 22050 c.wav\n"
    src = _write(tmp_path, "rirs.scp", text)
    out = tmp_path / "copy.scp"
    mf.write_source_list(out, mf.read_source_list(src))
    assert out.read_text() == text


def test_source_list_relative_paths(tmp_path):
    path = _write(tmp_path, "rirs.scp", "r1 16000 rirs/r1.wav\nr2 16000 /abs/r2.wav\n")
    kept = mf.read_source_list(path)
    assert [e.path for e in kept] == ["rirs/r1.wav", "/abs/r2.wav"]  # default: as written
    resolved = mf.read_source_list(path, resolve_relative=True)
    assert [e.path for e in resolved] == [str(tmp_path / "rirs/r1.wav"), "/abs/r2.wav"]


def test_source_list_check_files(tmp_path, monkeypatch):
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "a.wav").write_bytes(b"")
    path = _write(tmp_path, "speech_sources.scp", "a 16000 audio/a.wav\n\nb 16000 audio/b.wav\n")
    with pytest.raises(ManifestError) as excinfo:
        mf.read_source_list(path, resolve_relative=True, check_files=True)
    _assert_points_at(excinfo, path, 3)
    assert "audio/b.wav" in str(excinfo.value)
    monkeypatch.chdir(tmp_path)  # unresolved paths are checked relative to the working directory
    with pytest.raises(ManifestError) as excinfo:
        mf.read_source_list(path, check_files=True)
    _assert_points_at(excinfo, path, 3)


def test_source_list_custom_sample_rates(tmp_path):
    path = _write(tmp_path, "noise_sources.scp", "n1 11025 n1.wav\n")
    assert mf.read_source_list(path, sample_rates=(11025,)) == [SourceEntry("n1", 11025, "n1.wav")]


@pytest.mark.parametrize(
    "kind, names, expected",
    [
        ("noise", ["noise_scoures.scp"], "noise_scoures.scp"),
        ("noise", ["noise_sources.scp"], "noise_sources.scp"),
        ("noise", ["noise_scoures.scp", "noise_sources.scp"], "noise_scoures.scp"),
        ("wind_noise", ["wind_noise_scoures.scp"], "wind_noise_scoures.scp"),
        ("wind_noise", ["wind_noise_sources.scp"], "wind_noise_sources.scp"),
        ("speech", ["speech_sources.scp"], "speech_sources.scp"),
        ("rir", ["rirs.scp"], "rirs.scp"),
    ],
)
def test_find_source_list(tmp_path, kind, names, expected):
    for name in names:
        _write(tmp_path, name, "x 16000 x.wav\n")
    found = mf.find_source_list(tmp_path, kind)
    assert found == tmp_path / expected
    assert mf.read_source_list(found) == [SourceEntry("x", 16000, "x.wav")]


def test_find_source_list_missing(tmp_path):
    _write(tmp_path, "speech_sources.scp", "x 16000 x.wav\n")
    with pytest.raises(ManifestError, match="noise_scoures.scp.*noise_sources.scp"):
        mf.find_source_list(tmp_path, "noise")
    with pytest.raises(ManifestError, match="unknown source kind"):
        mf.find_source_list(tmp_path, "music")


# --- key-value files ---


def test_kv_round_trip(tmp_path):
    text = {
        "fileid_1": "<not-available>",
        "fileid_2": "ask her to  bring these things",
        "fileid_3": "你好 世界",
    }
    path = tmp_path / "a" / "text"
    mf.write_kv(path, text)
    assert mf.read_kv(path) == text
    assert list(mf.read_kv(path)) == list(text)  # file order kept

    canonical = "fileid_1 p226\nfileid_2 common_voice_de_19956308\nfileid_10 p101\n"
    src = _write(tmp_path, "utt2spk", canonical)
    out = tmp_path / "utt2spk.out"
    mf.write_kv(out, mf.read_kv(src))
    assert out.read_text() == canonical


def test_kv_value_is_rest_of_line(tmp_path):
    path = _write(tmp_path, "text", "u1   hello  big   world  \n   \nu2\tx y\n")
    assert mf.read_kv(path) == {"u1": "hello  big   world", "u2": "x y"}


def test_kv_empty_value(tmp_path):
    path = _write(tmp_path, "text", "u1 hi\nu2\n")
    with pytest.raises(ManifestError) as excinfo:
        mf.read_kv(path)
    _assert_points_at(excinfo, path, 2)
    values = mf.read_kv(path, allow_empty_value=True)
    assert values == {"u1": "hi", "u2": ""}
    out = tmp_path / "text.out"
    mf.write_kv(out, values)
    assert out.read_text() == "u1 hi\nu2\n"


def test_typed_kv_round_trip(tmp_path):
    lengths = {"a": 16000, "b": 1, "c": 480000}
    mf.write_kv(tmp_path / "source_length.scp", lengths)
    assert mf.read_int_kv(tmp_path / "source_length.scp") == lengths
    rates = {"fileid_1": 48000, "fileid_2": 8000}
    mf.write_kv(tmp_path / "utt2fs", rates)
    assert mf.read_utt2fs(tmp_path / "utt2fs") == rates
    durations = {"s1": 2.345, "s2": 10.0}
    mf.write_kv(tmp_path / "utt2dur", durations)
    assert mf.read_float_kv(tmp_path / "utt2dur") == durations


def test_path_list_check_files(tmp_path):
    (tmp_path / "wav").mkdir()
    (tmp_path / "wav" / "u1.wav").write_bytes(b"")
    path = _write(tmp_path, "inf.scp", "u1 wav/u1.wav\nu2 wav/u2.wav\n")
    assert mf.read_kv(path) == {"u1": "wav/u1.wav", "u2": "wav/u2.wav"}
    with pytest.raises(ManifestError) as excinfo:
        mf.read_kv(path, check_files=True, resolve_relative=True)
    _assert_points_at(excinfo, path, 2)


def test_id_list_round_trip(tmp_path):
    text = "1272_128104_000005_000008\ncommon_voice_de_19956308\nmls_french_7142_2432_000108\n"
    src = _write(tmp_path, "validation_selected", text)
    ids = mf.read_id_list(src)
    assert ids == text.split()
    mf.write_id_list(tmp_path / "out", ids)
    assert (tmp_path / "out").read_text() == text


# --- meta.tsv ---


@pytest.mark.parametrize("store_noise", [False, True])
def test_meta_tsv_canonical_round_trip(tmp_path, store_noise):
    text = _canonical_meta(store_noise)
    src = _write(tmp_path, "meta.tsv", text)
    rows = mf.read_meta_tsv(src)
    assert [r.id for r in rows] == ["fileid_1", "fileid_2", "fileid_3", "fileid_4"]
    first = rows[0]
    assert first.augmentation == WIND_AUG
    assert first.snr_db == -3.4127839201173744 and first.fs == 48000 and first.length == 123456
    assert first.rir_uid == "none" and first.text == "<not-available>"
    assert rows[1].augmentation == PACKET_LOSS_AUG and rows[1].rir_uid == "rir_000123"
    assert rows[2].augmentation == "none" and rows[2].text == "ask her to  bring these"
    assert rows[3].augmentation == WIND_ONLY_AUG and rows[3].text == ""
    if store_noise:
        assert first.noise_path == "out/noise/0/fileid_1.flac"
    else:
        assert all(r.noise_path is None for r in rows)
    out = tmp_path / "out" / "meta.tsv"
    mf.write_meta_tsv(out, rows)  # the noise_path column follows the rows
    assert out.read_text() == text


def test_meta_tsv_write_read(tmp_path):
    row = MetaRow(
        id="fileid_9",
        noisy_path="n.flac",
        speech_uid="s",
        speech_sid="s",
        clean_path="c.flac",
        noise_uid="none",
        snr_db=0.1 + 0.2,
        rir_uid="none",
        augmentation="none",
        fs=24000,
        length=7,
        text="a b",
        noise_path="z.flac",
    )
    mf.write_meta_tsv(tmp_path / "with.tsv", [row])
    assert mf.read_meta_tsv(tmp_path / "with.tsv") == [row]
    assert "0.30000000000000004" in (tmp_path / "with.tsv").read_text()  # full float repr
    mf.write_meta_tsv(tmp_path / "without.tsv", [row], store_noise=False)
    lines = (tmp_path / "without.tsv").read_text().splitlines()
    assert lines[0] == HEADER_NO_NOISE and "z.flac" not in lines[1]
    assert mf.read_meta_tsv(tmp_path / "without.tsv") == [dataclasses.replace(row, noise_path=None)]


def test_meta_tsv_check_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for sub in ("noisy", "clean"):
        (tmp_path / "out" / sub / "0").mkdir(parents=True)
    for uid in ("fileid_1", "fileid_2"):
        (tmp_path / "out" / "noisy" / "0" / f"{uid}.flac").write_bytes(b"")
        (tmp_path / "out" / "clean" / "0" / f"{uid}.flac").write_bytes(b"")
    path = _write(tmp_path, "meta.tsv", _canonical_meta(False))
    with pytest.raises(ManifestError) as excinfo:
        mf.read_meta_tsv(path, check_files=True)
    _assert_points_at(excinfo, path, 4)  # fileid_3 is the first with missing audio


def test_meta_tsv_writer_rejects_mixed_noise_paths(tmp_path):
    rows = mf.read_meta_tsv(_write(tmp_path, "meta.tsv", _canonical_meta(True)))
    mixed = [rows[0], dataclasses.replace(rows[1], noise_path=None)]
    with pytest.raises(ManifestError, match="noise_path"):
        mf.write_meta_tsv(tmp_path / "out.tsv", mixed)
    bare = [dataclasses.replace(r, noise_path=None) for r in rows]
    with pytest.raises(ManifestError, match="store_noise"):
        mf.write_meta_tsv(tmp_path / "out.tsv", bare, store_noise=True)


# --- Track 2 data.jsonl ---


def test_jsonl_round_trip_sorted_rounded(tmp_path):
    records = [
        QualityRecord("wav/b.wav", "sys2", "b", 3.14159, {"mos": 3.123456, "pesq": math.nan}),
        QualityRecord("wav/a.wav", "sys1", "a", 2.0, {"mos": 4.5, "utmos": 2.00005}),
    ]
    path = tmp_path / "data" / "bc19" / "train" / "data.jsonl"
    mf.write_jsonl(path, records)
    lines = path.read_text().splitlines()
    assert lines[0].startswith('{"audio_path": "wav/a.wav"')  # sorted by sample_id
    assert '"pesq": NaN' in lines[1]
    back = mf.read_jsonl(path)
    assert [r.sample_id for r in back] == ["a", "b"]
    assert back[1].duration == 3.142 and back[1].metrics["mos"] == 3.1235
    assert math.isnan(back[1].metrics["pesq"])
    assert back[0].metrics == {"mos": 4.5, "utmos": round(2.00005, 4)}


def test_jsonl_canonical_bytes(tmp_path):
    text = (
        '{"audio_path": "wav/a.wav", "system_id": "sys1", "sample_id": "a", "duration": 2.345, '
        '"metrics": {"mos": 3.25, "dnsmos_ovrl": 2.9876, "pesq": NaN}}\n'
        '{"audio_path": "wav/b.wav", "system_id": "sys1", "sample_id": "b", "duration": 1.0, '
        '"metrics": {}}\n'
    )
    src = _write(tmp_path, "data.jsonl", text)
    mf.write_jsonl(tmp_path / "out.jsonl", mf.read_jsonl(src))
    assert (tmp_path / "out.jsonl").read_text() == text


# --- evaluation outputs ---


def test_scores_round_trip_with_nan(tmp_path):
    scores = {"fileid_1": 2.3456789012345, "fileid_2": math.nan, "fileid_3": 1.0}
    path = tmp_path / "eval" / "PESQ.scp"
    mf.write_scores(path, scores)
    assert path.read_text() == "fileid_1 2.3456789012345\nfileid_2 nan\nfileid_3 1.0\n"
    back = mf.read_scores(path)
    assert list(back) == list(scores) and math.isnan(back["fileid_2"])
    assert back["fileid_1"] == scores["fileid_1"]

    canonical = "u1 0.8312345678901234\nu2 nan\nu3 -12.5\n"
    src = _write(tmp_path, "SDR.scp", canonical)
    mf.write_scores(tmp_path / "SDR.out", mf.read_scores(src))
    assert (tmp_path / "SDR.out").read_text() == canonical


def test_results_nanmean(tmp_path, rng):
    values = rng.normal(2.0, 0.5, size=50)
    values[[3, 17]] = np.nan
    scores = {
        "PESQ": {f"u{i}": float(v) for i, v in enumerate(values)},
        "ESTOI": [0.5, 0.25, math.nan],
        "DNSMOS": [math.nan, math.nan],
    }
    lines = mf.results_lines(scores)
    assert lines[0] == f"PESQ: {np.nanmean(values):.4f}"
    assert lines[1] == f"ESTOI: {np.nanmean([0.5, 0.25, np.nan]):.4f}" == "ESTOI: 0.3750"
    assert lines[2] == "DNSMOS: nan"

    path = tmp_path / "eval" / "RESULTS.txt"
    mf.write_results(path, mf.nanmean_scores(scores))
    assert path.read_text().splitlines() == lines
    back = mf.read_results(path)
    assert back["PESQ"] == pytest.approx(np.nanmean(values), abs=5e-5)
    assert back["ESTOI"] == 0.375 and math.isnan(back["DNSMOS"])

    canonical = "PESQ: 2.1234\nESTOI: 0.8000\nSpeechBERTScore: -0.0012\n"
    src = _write(tmp_path, "RESULTS2.txt", canonical)
    mf.write_results(tmp_path / "RESULTS3.txt", mf.read_results(src))
    assert (tmp_path / "RESULTS3.txt").read_text() == canonical


# --- bad inputs: every one a ManifestError naming the file and line ---

# fmt: off
BAD_INPUTS = [
    # (case, file name, content, reader, kwargs, line, message fragment)
    ("dup source", "rirs.scp", "a 16000 a.wav\n\nb 16000 b.wav\na 8000 c.wav\n",
     mf.read_source_list, {}, 4, "duplicate uid 'a' (first on line 1)"),
    ("dup kv", "text", "u1 hi\nu2 ho\nu2 hu\n", mf.read_kv, {}, 3, "duplicate"),
    ("dup int kv", "source_length.scp", "u1 1\nu1 2\n", mf.read_int_kv, {}, 2, "duplicate"),
    ("dup id list", "validation_selected", "a\nb\na\n", mf.read_id_list, {}, 3, "duplicate"),
    ("dup meta", "meta.tsv", HEADER_NO_NOISE + "\n"
     + _meta_line("f1", "n", "1.0", "none", "none", "16000", "5", "t") + "\n"
     + _meta_line("f1", "n", "1.0", "none", "none", "16000", "5", "t") + "\n",
     mf.read_meta_tsv, {}, 3, "duplicate id 'f1'"),
    ("dup jsonl", "data.jsonl",
     '{"audio_path": "a", "system_id": "s", "sample_id": "x", "duration": 1.0, "metrics": {}}\n'
     '{"audio_path": "b", "system_id": "s", "sample_id": "x", "duration": 1.0, "metrics": {}}\n',
     mf.read_jsonl, {}, 2, "duplicate sample_id 'x'"),
    ("dup results", "RESULTS.txt", "PESQ: 1.0000\nPESQ: 2.0000\n", mf.read_results, {}, 2,
     "duplicate"),
    ("2 columns source", "speech_sources.scp", "a 16000 a.wav\nb 16000\n", mf.read_source_list,
     {}, 2, "expected 3 columns"),
    ("4 columns source", "speech_sources.scp", "a 16000 a.wav x\n", mf.read_source_list, {}, 1,
     "expected 3 columns"),
    ("1 column kv", "utt2spk", "u1 s1\n  \nu2\n", mf.read_kv, {}, 3, "expected 2 columns"),
    ("3 columns int kv", "speech_length.scp", "u1 1 2\n", mf.read_int_kv, {}, 1,
     "expected 2 columns"),
    ("3 columns scores", "PESQ.scp", "u1 1.0\nu2 1.0 2.0\n", mf.read_scores, {}, 2,
     "expected 2 columns"),
    ("columns meta", "meta.tsv", HEADER_NOISE + "\n"
     + _meta_line("f1", "n", "1.0", "none", "none", "16000", "5", "t") + "\n",
     mf.read_meta_tsv, {}, 2, "expected 13 columns, got 12"),
    ("float rate source", "noise_scoures.scp", "a 16000.0 a.wav\n", mf.read_source_list, {}, 1,
     "non-integer sampling rate"),
    ("word rate utt2fs", "utt2fs", "u1 16000\nu2 16k\n", mf.read_utt2fs, {}, 2,
     "non-integer sampling rate"),
    ("float rate meta", "meta.tsv", HEADER_NO_NOISE + "\n\n"
     + _meta_line("f1", "n", "1.0", "none", "none", "48000.5", "5", "t") + "\n",
     mf.read_meta_tsv, {}, 3, "non-integer sampling rate"),
    ("unsupported rate source", "rirs.scp", "a 11025 a.wav\n", mf.read_source_list, {}, 1,
     "unsupported sampling rate 11025"),
    ("unsupported rate utt2fs", "utt2fs", "u1 96000\n", mf.read_utt2fs, {}, 1,
     "unsupported sampling rate"),
    ("custom rates", "rirs.scp", "a 8000 a.wav\nb 48000 b.wav\n", mf.read_source_list,
     {"sample_rates": (8000,)}, 2, "unsupported sampling rate 48000"),
    ("unsupported rate meta", "meta.tsv", HEADER_NO_NOISE + "\n"
     + _meta_line("f1", "n", "1.0", "none", "none", "12000", "5", "t") + "\n",
     mf.read_meta_tsv, {}, 2, "unsupported sampling rate"),
    ("float in int kv", "source_length.scp", "u1 12.5\n", mf.read_int_kv, {}, 1, "non-integer"),
    ("underscore int", "source_length.scp", "u1 1_000\n", mf.read_int_kv, {}, 1, "non-integer"),
    ("word in float kv", "utt2dur", "u1 1.5\nu2 abc\n", mf.read_float_kv, {}, 2, "non-numeric"),
    ("word score", "PESQ.scp", "u1 fail\n", mf.read_scores, {}, 1, "non-numeric"),
    ("word snr meta", "meta.tsv", HEADER_NO_NOISE + "\n"
     + _meta_line("f1", "n", "high", "none", "none", "16000", "5", "t") + "\n",
     mf.read_meta_tsv, {}, 2, "non-numeric snr_dB"),
    ("float length meta", "meta.tsv", HEADER_NO_NOISE + "\n"
     + _meta_line("f1", "n", "1.0", "none", "none", "16000", "1e3", "t") + "\n",
     mf.read_meta_tsv, {}, 2, "non-integer length"),
    ("string duration", "data.jsonl",
     '{"audio_path": "a", "system_id": "s", "sample_id": "x", "duration": "1.0", "metrics": {}}\n',
     mf.read_jsonl, {}, 1, "non-numeric duration"),
    ("null metric", "data.jsonl", "\n"
     '{"audio_path": "a", "system_id": "s", "sample_id": "x", "duration": 1, '
     '"metrics": {"mos": null}}\n', mf.read_jsonl, {}, 2, "non-numeric metric mos"),
    ("word result", "RESULTS.txt", "PESQ: good\n", mf.read_results, {}, 1, "non-numeric"),
    ("no colon result", "RESULTS.txt", "PESQ 1.0\n", mf.read_results, {}, 1, "expected"),
    ("empty source", "rirs.scp", "", mf.read_source_list, {}, 1, "empty manifest"),
    ("blank kv", "text", "\n  \n\t\n", mf.read_kv, {}, 1, "empty manifest"),
    ("empty int kv", "utt2fs", "", mf.read_utt2fs, {}, 1, "empty manifest"),
    ("empty scores", "PESQ.scp", "", mf.read_scores, {}, 1, "empty manifest"),
    ("empty meta", "meta.tsv", "", mf.read_meta_tsv, {}, 1, "empty manifest"),
    ("header-only meta", "meta.tsv", HEADER_NOISE + "\n", mf.read_meta_tsv, {}, 2,
     "empty manifest"),
    ("empty jsonl", "data.jsonl", "\n", mf.read_jsonl, {}, 1, "empty manifest"),
    ("empty results", "RESULTS.txt", "", mf.read_results, {}, 1, "empty manifest"),
    ("broken json", "data.jsonl",
     '{"audio_path": "a", "system_id": "s", "sample_id": "x", "duration": 1.0, "metrics": {}}\n'
     '\n{"audio_path": "b", "system_id": \n', mf.read_jsonl, {}, 3, "malformed JSON"),
    ("json list", "data.jsonl", "[1, 2]\n", mf.read_jsonl, {}, 1, "expected a JSON object"),
    ("json missing key", "data.jsonl",
     '{"audio_path": "a", "system_id": "s", "sample_id": "x", "metrics": {}}\n',
     mf.read_jsonl, {}, 1, "missing keys ['duration']"),
    ("json extra key", "data.jsonl",
     '{"audio_path": "a", "system_id": "s", "sample_id": "x", "duration": 1.0, "metrics": {}, '
     '"mos": 3}\n', mf.read_jsonl, {}, 1, "unexpected keys ['mos']"),
    ("json bad metrics", "data.jsonl",
     '{"audio_path": "a", "system_id": "s", "sample_id": 3, "duration": 1.0, "metrics": [1]}\n',
     mf.read_jsonl, {}, 1, "sample_id is not a string; metrics is not an object"),
    ("meta missing header", "meta.tsv",
     _meta_line("f1", "n", "1.0", "none", "none", "16000", "5", "t") + "\n",
     mf.read_meta_tsv, {}, 1, "missing header"),
    ("meta wrong header", "meta.tsv", "\n" + HEADER_NO_NOISE.replace("snr_dB", "snr_db") + "\n",
     mf.read_meta_tsv, {}, 2, "wrong header"),
    ("meta reordered header", "meta.tsv", HEADER_NO_NOISE.replace("fs\tlength", "length\tfs")
     + "\n", mf.read_meta_tsv, {}, 1, "wrong header"),
]
# fmt: on


@pytest.mark.parametrize(
    "name, content, reader, kwargs, line_no, fragment",
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input(tmp_path, name, content, reader, kwargs, line_no, fragment):
    path = _write(tmp_path, name, content)
    with pytest.raises(ManifestError) as excinfo:
        reader(path, **kwargs)
    _assert_points_at(excinfo, path, line_no)
    assert fragment in str(excinfo.value)


@pytest.mark.parametrize(
    "reader, content",
    [
        (mf.read_source_list, ""),
        (mf.read_kv, "\n"),
        (mf.read_int_kv, ""),
        (mf.read_float_kv, ""),
        (mf.read_id_list, ""),
        (mf.read_jsonl, " \n"),
        (mf.read_results, ""),
        (mf.read_meta_tsv, ""),
        (mf.read_meta_tsv, HEADER_NO_NOISE + "\n"),
    ],
)
def test_allow_empty(tmp_path, reader, content):
    path = _write(tmp_path, "manifest", content)
    assert len(reader(path, allow_empty=True)) == 0


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="not found") as excinfo:
        mf.read_kv(tmp_path / "nope.scp")
    assert "nope.scp" in str(excinfo.value)


@pytest.mark.parametrize(
    "write",
    [
        lambda p: mf.write_kv(p, {"bad uid": "x"}),
        lambda p: mf.write_kv(p, {"u": "two\nlines"}),
        lambda p: mf.write_source_list(p, [SourceEntry("a", 16000, "x y.wav")]),
        lambda p: mf.write_source_list(p, [SourceEntry("a", 16000, "a")] * 2),
        lambda p: mf.write_jsonl(p, [QualityRecord("a", "s", "x", 1.0, {})] * 2),
        lambda p: mf.write_results(p, {"": 1.0}),
    ],
)
def test_writers_refuse_unreadable_records(tmp_path, write):
    with pytest.raises(ManifestError):
        write(tmp_path / "out")


def test_meta_writer_refuses_tab(tmp_path):
    rows = mf.read_meta_tsv(_write(tmp_path, "meta.tsv", _canonical_meta(False)))
    bad = dataclasses.replace(rows[0], text="a\tb")
    with pytest.raises(ManifestError, match="tab") as excinfo:
        mf.write_meta_tsv(tmp_path / "out.tsv", [bad])
    _assert_points_at(excinfo, tmp_path / "out.tsv", 2)
