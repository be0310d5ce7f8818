"""End to end on [Simulation] outputs: a tiny set rendered by the project's simulator (`presimulate`
on demo-corpus sources: 3 utterances of 1.5 s at 16 kHz with reverberation, clipping and packet
loss, no codec) is scored by `score` with the real metrics on (clean target, noisy input). Every
score equals the independent reference package's within the metric unit tests' tolerances, and the
breakdown reads the simulator's meta.tsv and utt2lang."""

import json
import shutil

import fast_bss_eval
import numpy as np
import pytest
import soundfile as sf
import torch
from pesq import pesq
from pystoi import stoi

from tests.metrics.references import reference_lsd, reference_sdr
from urgent_jax.data.manifest import MetaRow, read_kv, read_source_dir, write_kv, write_meta_tsv
from urgent_jax.data.presimulate import presimulate
from urgent_jax.evaluate.score import score
from urgent_jax.metrics.registry import MetricOptions

FS = 16000
NUM_SAMPLES = 24000  # 1.5 s
# The metric unit tests' tolerances (tests/metrics/test_{sdr,stoi,lsd,pesq}.py).
SDR_TOL_DB = 0.05
SI_SDR_TOL_DB = 1e-3
ESTOI_TOL = 1e-3
LSD_REL_TOL = 1e-3
# (augmentation, rir?, snr_dB) per utterance
ROWS = [
    ("none", False, 5.0),
    ("clipping(min=0.05,max=0.95)", True, 10.0),
    ("packet_loss(packet_loss_indices=[10, 11, 40],packet_duration_ms=20)", False, 0.0),
]


@pytest.fixture(scope="module")
def simulated(demo_root, tmp_path_factory):
    """(set directory, meta.tsv path, meta rows): 16 kHz speech of three languages cropped to
    1.5 s (a copy of the validation source lists), rendered by presimulate."""
    root = tmp_path_factory.mktemp("simulated")
    sources = root / "sources"
    shutil.copytree(demo_root / "validation_sources", sources)
    tables = read_source_dir(sources)
    speech, languages = [], set()
    for entry in tables.speech:  # the first 16 kHz utterance of each language
        language = tables.utt2lang[entry.uid]
        if entry.fs == FS and language not in languages and len(speech) < len(ROWS):
            speech.append(entry)
            languages.add(language)
    assert len(speech) == len(ROWS)
    lines = {}
    for entry in speech:
        audio, fs = sf.read(entry.path, dtype="float32")
        start = (len(audio) - NUM_SAMPLES) // 2  # mid-utterance: speech, not leading silence
        path = root / "cropped" / f"{entry.uid}.flac"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, audio[start : start + NUM_SAMPLES], fs)
        lines[entry.uid] = f"{FS} {path}"
    write_kv(sources / "speech_sources.scp", lines)
    noise = next(e for e in tables.noise if e.fs >= FS)
    rir = next(e for e in tables.rir if e.fs >= FS)
    out = root / "validation"
    rows = [
        MetaRow(id=f"fileid_{n}", noisy_path=str(out / "noisy" / "0" / f"fileid_{n}.flac"),
                speech_uid=s.uid, speech_sid=s.uid,
                clean_path=str(out / "clean" / "0" / f"fileid_{n}.flac"), noise_uid=noise.uid,
                snr_db=snr_db, rir_uid=rir.uid if use_rir else "none", augmentation=augmentation,
                fs=FS, length=NUM_SAMPLES, text="<not-available>")
        for n, (s, (augmentation, use_rir, snr_db)) in enumerate(zip(speech, ROWS), start=1)
    ]  # fmt: skip
    meta = out / "log" / "meta.tsv"
    meta.parent.mkdir(parents=True)
    write_meta_tsv(meta, rows)
    summary = presimulate(str(meta), str(sources), str(out), batch_size=4, num_workers=0,
                          use_progress_bar=False)  # fmt: skip
    assert summary["rendered"] == len(ROWS)
    return out, meta, rows


def test_scores_of_simulated_pairs_match_the_reference_packages(simulated, tmp_path):
    out, meta, rows = simulated
    result = score(
        out / "spk1.scp", out / "wav.scp", tmp_path / "scores",
        metrics=["sdr", "si_sdr", "estoi", "lsd", "pesq"], meta_tsv=meta,
        utt2lang=out / "utt2lang", batch_size=4, options=MetricOptions(pesq_workers=1),
        make_report=False, use_progress_bar=False,
    )  # fmt: skip
    assert result["errors"] == []
    clean_paths, noisy_paths = read_kv(out / "spk1.scp"), read_kv(out / "wav.scp")
    for row in rows:
        clean, fs = sf.read(clean_paths[row.id], dtype="float32")
        noisy, fs2 = sf.read(noisy_paths[row.id], dtype="float32")
        assert fs == fs2 == FS and len(clean) == len(noisy) == NUM_SAMPLES
        got = {name: result["scores"][name][row.id] for name in result["outputs"]}
        c64, n64 = clean.astype(np.float64), noisy.astype(np.float64)
        si_sdr_reference = -float(  # SI-SDR on zero-mean signals (README: where metrics differ)
            fast_bss_eval.si_sdr_loss(
                torch.from_numpy(n64)[None], torch.from_numpy(c64)[None], zero_mean=True
            )[0]
        )
        assert abs(got["SDR"] - reference_sdr(c64, n64)) <= SDR_TOL_DB, (row.id, got)
        assert abs(got["SI_SDR"] - si_sdr_reference) <= SI_SDR_TOL_DB, (row.id, got)
        assert abs(got["ESTOI"] - stoi(clean, noisy, FS, extended=True)) <= ESTOI_TOL, (row.id, got)
        lsd = reference_lsd(clean, noisy, FS)
        assert abs(got["LSD"] / lsd - 1) <= LSD_REL_TOL, (row.id, got, lsd)
        assert got["PESQ"] == pesq(FS, c64, n64, "wb"), (row.id, got)
        assert -10 < got["SI_SDR"] < 30 and 0 < got["ESTOI"] < 1, got  # a real noisy mixture
    breakdown = json.loads((tmp_path / "scores" / "breakdown.json").read_text())["dimensions"]
    languages = read_kv(out / "utt2lang")
    expected = {f"lang={lang}": 1 for lang in languages.values()}
    assert {k: v["count"] for k, v in breakdown["language"].items()} == expected
    assert len(expected) == len(ROWS)  # three languages, none defaulted to eng
    assert {k: v["count"] for k, v in breakdown["reverberation"].items()} == {
        "no_rir": 2,
        "with_rir": 1,
    }
