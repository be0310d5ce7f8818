"""breakdown: hand-computed group means over a crafted meta.tsv (floor SNR bins, every distortion
type of a chain, wind-only chains, corpus, language, duration), id normalisation, files."""

import json
import math

import pytest

from urgent_jax.data.manifest import MetaRow, write_meta_tsv
from urgent_jax.evaluate.breakdown import (
    compute_breakdown,
    distortion_types,
    normalise_id,
    snr_group,
    write_breakdown,
)

WIND = (
    "wind_noise(threshold=0.2,ratio=4.0,attack=20.0,release=60.0,sc_gain=1.0,clipping=True,"
    "clipping_threshold=0.9)"
)
# id, fs, snr_dB, seconds, speech_sid, speech_uid, rir_uid, augmentation
ROWS = [
    ("fileid_1", 16000, -3.0, 3, "libritts_1272", "1272_128104_000005_000008", "none", "none"),
    (
        "fileid_2",
        16000,
        2.0,
        7,
        "vctk_p226",
        "p226_001_mic1",
        "rir_a",
        "clipping(min=0.1,max=0.9)/codec(format=mp3,encoder=None,qscale=4)",
    ),
    (
        "fileid_3",
        8000,
        4.99,
        2,
        "mls_french_7142",
        "mls_french_7142_2432_000108",
        "none",
        WIND + "/",
    ),
    (
        "fileid_4",
        8000,
        -5.0,
        12,
        "cv_de_1",
        "common_voice_de_19956308",
        "none",
        "bandwidth_limitation-none->8000/"
        "packet_loss(packet_loss_indices=[1, 2],packet_duration_ms=20)",
    ),
    (
        "fileid_5",
        48000,
        12.5,
        5,
        "dns5_book",
        "book_00233_chp_0014",
        "rir_b",
        WIND + "/codec(format=ogg,encoder=vorbis,qscale=3)",
    ),
]
# Scores keyed as a system would write them (prefix before fileid), plus one uid without meta.
SCORES = {
    "A": {
        "sys_fileid_1": 1.0,
        "sys_fileid_2": 2.0,
        "sys_fileid_3": 4.0,
        "sys_fileid_4": 8.0,
        "sys_fileid_5": 16.0,
        "fileid_99": 100.0,
    },
    "B": {
        "sys_fileid_1": 10.0,
        "sys_fileid_2": math.nan,
        "sys_fileid_3": 30.0,
        "sys_fileid_4": 40.0,
        "sys_fileid_5": math.nan,
        "fileid_99": 0.0,
    },
}


def _meta_rows():
    return [
        MetaRow(
            id=i,
            noisy_path=f"/n/{i}.flac",
            speech_uid=uid,
            speech_sid=sid,
            clean_path=f"/c/{i}.flac",
            noise_uid="noise",
            snr_db=snr,
            rir_uid=rir,
            augmentation=aug,
            fs=fs,
            length=seconds * fs,
            text="<not-available>",
        )
        for i, fs, snr, seconds, sid, uid, rir, aug in ROWS
    ]


def _table(result, dimension):
    """{group: (count, mean A, mean B)} with NaN as None for comparison."""
    out = {}
    for label, stats in result["dimensions"][dimension].items():
        a, b = stats["means"]["A"], stats["means"]["B"]
        out[label] = (stats["count"], a, None if math.isnan(b) else b)
    return out


@pytest.fixture(scope="module")
def result():
    utt2lang = {"fileid_4": "spa"}  # overrides the uid rule (common_voice_de -> deu)
    return compute_breakdown(SCORES, _meta_rows(), utt2lang=utt2lang)


def test_join_and_counts(result):
    assert result["num_scored"] == 6 and result["num_matched"] == 5
    assert result["unmatched"] == ["fileid_99"]
    assert normalise_id("enh_fileid_7") == "fileid_7" and normalise_id("utt_3") == "utt_3"


def test_sampling_rate_and_duration(result):
    assert _table(result, "fs") == {
        "fs=8000Hz": (2, 6.0, 35.0),
        "fs=16000Hz": (2, 1.5, 10.0),
        "fs=48000Hz": (1, 16.0, None),  # every B value NaN -> NaN
    }
    assert _table(result, "duration") == {
        "duration=[0,5)s": (2, 2.5, 20.0),  # 3 s, 2 s
        "duration=[5,10)s": (2, 9.0, None),  # 7 s, 5 s
        "duration=[10,15)s": (1, 8.0, 40.0),
    }


def test_snr_floor_bins(result):
    # floor: -3 and -5 -> [-5,0); 2 and 4.99 -> [0,5) (official truncation: -3 joins 2 in "0 dB")
    assert _table(result, "snr") == {
        "snr=[-5,0)dB": (2, 4.5, 25.0),
        "snr=[0,5)dB": (2, 3.0, 30.0),
        "snr=[10,15)dB": (1, 16.0, None),
    }
    assert snr_group(-0.01)[1] == "snr=[-5,0)dB" and snr_group(0.0)[1] == "snr=[0,5)dB"
    assert snr_group(-5.01)[1] == "snr=[-10,-5)dB"


def test_corpus_reverberation_language(result):
    assert _table(result, "corpus") == {
        "corpus=cv": (1, 8.0, 40.0),
        "corpus=dns5": (1, 16.0, None),
        "corpus=libritts": (1, 1.0, 10.0),
        "corpus=mls": (1, 4.0, 30.0),
        "corpus=vctk": (1, 2.0, None),
    }
    assert _table(result, "reverberation") == {
        "no_rir": (3, 13 / 3, 80 / 3),
        "with_rir": (2, 9.0, None),
    }
    assert _table(result, "language") == {
        "lang=eng": (3, 19 / 3, 10.0),
        "lang=fra": (1, 4.0, 30.0),
        "lang=spa": (1, 8.0, 40.0),
    }


def test_every_distortion_type_of_a_chain(result):
    assert distortion_types(WIND + "/") == ["wind_noise"]
    assert distortion_types("none") == ["none"]
    assert _table(result, "distortion") == {
        "bandwidth_limitation": (1, 8.0, 40.0),
        "clipping": (1, 2.0, None),
        "codec": (2, 9.0, None),  # fileid_2 (mp3) and fileid_5 (ogg, after wind)
        "none": (1, 1.0, 10.0),
        "packet_loss": (1, 8.0, 40.0),
        "wind_noise": (2, 10.0, 30.0),  # wind-only fileid_3 and wind+codec fileid_5
    }


def test_files(tmp_path):
    meta = tmp_path / "meta.tsv"
    write_meta_tsv(meta, _meta_rows())
    utt2lang = tmp_path / "utt2lang"
    utt2lang.write_text("fileid_4 spa\n")
    result = write_breakdown(tmp_path / "out", meta, utt2lang=utt2lang, scores=SCORES)
    assert _table(result, "language")["lang=spa"] == (1, 8.0, 40.0)
    text = (tmp_path / "out" / "BREAKDOWN.md").read_text()
    assert "## SNR" in text and "| group | n | A ↑ | B ↑ |" in text
    assert "| snr=[-5,0)dB | 2 | 4.5000 | 25.0000 |" in text
    assert "| fs=48000Hz | 1 | 16.0000 | nan |" in text
    data = json.loads((tmp_path / "out" / "breakdown.json").read_text())
    assert data["dimensions"]["fs"]["fs=48000Hz"] == {"count": 1, "means": {"A": 16.0, "B": None}}
