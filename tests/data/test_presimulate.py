"""presimulate: renders meta.tsv (ours and official-style lines) into the official layout; resume;
bad-source policies."""

import dataclasses
import os
import re

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from urgent_jax.audio.filters import highpass_taps
from urgent_jax.data.manifest import (
    ManifestError,
    MetaRow,
    read_kv,
    read_source_dir,
    write_meta_tsv,
)
from urgent_jax.data.presimulate import presimulate
from urgent_jax.data.sources import BadFileError


def _rows(demo_sources, out, lines):
    """Meta rows on demo sources: (speech rate, augmentation string, rir?, wind?) per row."""
    t = read_source_dir(demo_sources)
    rows = []
    for n, (fs, aug, use_rir, use_wind) in enumerate(lines, start=1):
        speech = next(e for e in t.speech if e.fs == fs)
        pool = t.wind_noise if use_wind else t.noise
        noise = next(e for e in pool if e.fs >= fs)
        rir = next(e for e in t.rir if e.fs >= fs) if use_rir else None
        rows.append(MetaRow(
            id=f"fileid_{n}", noisy_path=str(out / "noisy" / "0" / f"fileid_{n}.flac"),
            speech_uid=speech.uid, speech_sid=speech.uid,
            clean_path=str(out / "clean" / "0" / f"fileid_{n}.flac"), noise_uid=noise.uid,
            snr_db=5.0, rir_uid=rir.uid if rir else "none", augmentation=aug, fs=fs,
            length=t.lengths[speech.uid], text=t.text.get(speech.uid, "<not-available>"),
        ))  # fmt: skip
    return rows


OFFICIAL_STYLE = [
    (16000, "none", False, False),
    (16000, "codec(format=mp3,encoder=None,qscale=4)/packet_loss(packet_loss_indices=[12, 13, 40],"
     "packet_duration_ms=20)", True, False),
    (16000, "wind_noise(threshold=0.2,ratio=4.0,attack=20.0,release=60.0,sc_gain=1.0,clipping=True,"
     "clipping_threshold=0.9)/", False, True),
    (8000, "bandwidth_limitation-none->8000/clipping(min=0.05,max=0.95)", True, False),
    (8000, "codec(format=ogg,encoder=vorbis,qscale=3)", False, False),
]


@pytest.fixture(scope="module")
def rendered(demo_sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("presim")
    rows = _rows(demo_sources, out, OFFICIAL_STYLE)
    write_meta_tsv(out / "meta.tsv", rows)
    summary = presimulate(str(out / "meta.tsv"), str(demo_sources), str(out / "data"), batch_size=4,
                          num_workers=0, use_progress_bar=False)
    return out, rows, summary


def test_outputs_and_lists(rendered):
    out, rows, summary = rendered
    assert summary["rendered"] == len(rows) and summary["skipped"] == 0
    wav = read_kv(out / "data" / "wav.scp")
    spk1 = read_kv(out / "data" / "spk1.scp")
    assert list(wav) == [r.id for r in rows]
    for r in rows:
        noisy, fs = sf.read(wav[r.id], dtype="float32")
        clean, fs2 = sf.read(spk1[r.id], dtype="float32")
        assert fs == fs2 == r.fs and len(noisy) == len(clean) == r.length
        assert np.all(np.isfinite(noisy))
        peak = max(np.abs(noisy).max(), np.abs(clean).max())
        assert peak <= 0.9 + 1e-4  # joint peak normalisation (noise may hold the peak)
    for name, expected in [("utt2fs", {r.id: str(r.fs) for r in rows}),
                           ("utt2category", {r.id: f"1ch_{r.fs}Hz" for r in rows}),
                           ("speech_length.scp", {r.id: str(r.length) for r in rows})]:
        assert read_kv(out / "data" / name) == expected
    assert set(read_kv(out / "data" / "utt2lang").values()) <= {"eng", "deu", "fra", "spa", "zho"}


def test_clean_target_is_highpassed_source(rendered, demo_sources):
    out, rows, _ = rendered
    row = rows[0]  # no RIR, no augmentation: target = gain * highpass(speech)
    speech_path = next(e.path for e in read_source_dir(demo_sources).speech if e.uid == row.speech_uid)
    speech, _ = sf.read(speech_path, dtype="float64")
    ref = scipy.signal.filtfilt(highpass_taps(row.fs), 1.0, speech)
    clean, _ = sf.read(row.clean_path, dtype="float64")
    gain = np.dot(clean, ref) / np.dot(ref, ref)
    assert np.abs(clean - gain * ref).max() < 2 / 32768  # 16-bit files


def test_packet_loss_spans_are_zero_in_noisy(rendered):
    _, rows, _ = rendered
    noisy, fs = sf.read(rows[1].noisy_path, dtype="float32")
    for p in (12, 13, 40):
        assert not noisy[p * 320 : (p + 1) * 320].any()


def test_resume_renders_nothing_new(rendered, demo_sources):
    out, rows, _ = rendered
    before = {r.id: sf.read(r.noisy_path)[0] for r in rows}
    summary = presimulate(str(out / "meta.tsv"), str(demo_sources), str(out / "data"), num_workers=0,
                          use_progress_bar=False)
    assert summary["rendered"] == 0 and summary["already_done"] == len(rows)
    for r in rows:
        np.testing.assert_array_equal(sf.read(r.noisy_path)[0], before[r.id])


def test_bad_sources_raise_or_skip(demo_sources, tmp_path):
    rows = _rows(demo_sources, tmp_path, OFFICIAL_STYLE[:2])
    rows[1] = dataclasses.replace(rows[1], speech_uid="no_such_utterance")
    write_meta_tsv(tmp_path / "meta.tsv", rows)
    with pytest.raises(BadFileError, match="no_such_utterance"):
        presimulate(str(tmp_path / "meta.tsv"), str(demo_sources), str(tmp_path / "d"), num_workers=0,
                    use_progress_bar=False)
    summary = presimulate(str(tmp_path / "meta.tsv"), str(demo_sources), str(tmp_path / "d"),
                          num_workers=0, policy="skip", use_progress_bar=False)
    assert summary["rendered"] == 1 and summary["skipped"] == 1
    assert "no_such_utterance" in summary["skip_reasons"][0]
    assert list(read_kv(tmp_path / "d" / "wav.scp")) == ["fileid_1"]


@pytest.mark.parametrize("field, value, fragment", [
    ("augmentation", "clipping(min=0.05,max=0.95)/bogus", "unknown augmentation item 'bogus'"),
    ("augmentation", "codec(format=mp3,encoder=vorbis,qscale=4)", "unsupported codec"),
    ("snr_db", float("nan"), "non-finite snr_dB"),
])  # fmt: skip
def test_malformed_meta_row_names_file_line_before_rendering(demo_sources, tmp_path, field, value,
                                                             fragment):
    """A meta.tsv row that cannot be rendered raises a ManifestError `meta.tsv:<line>` up front
    (before: a bare error without file:line after earlier batches were written, or, for a NaN SNR,
    silently NaN audio), under either policy (it is a manifest error, not a bad source file)."""
    rows = _rows(demo_sources, tmp_path, [OFFICIAL_STYLE[0]] * 3)
    rows[2] = dataclasses.replace(rows[2], **{field: value})
    meta = tmp_path / "meta.tsv"
    write_meta_tsv(meta, rows)
    for policy in ("raise", "skip"):
        with pytest.raises(ManifestError, match=re.escape(f"{meta}:4: row fileid_3: ")) as e:
            presimulate(str(meta), str(demo_sources), str(tmp_path / "d"), batch_size=1,
                        num_workers=0, policy=policy, use_progress_bar=False)
        assert fragment in str(e.value)
        assert not any(os.path.exists(r.noisy_path) for r in rows)
