"""report: report.md (overall table with arrows, noisy/delta columns, errors, breakdown link) and
valid non-empty PNG figures for a run with noisy scores; the noisy outputs themselves."""


import numpy as np
import pytest

from tests.evaluate import FAKE_METRICS, fake_metrics, write_scp, write_wav
from urgent_jax.data.manifest import MetaRow, read_results, write_meta_tsv
from urgent_jax.evaluate.report import count_errors, make_report, pick_examples
from urgent_jax.evaluate.score import score

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    ref, inf, noisy, rows = {}, {}, {}, []
    for i in range(6):
        uid, rate = f"fileid_{i + 1}", (16000 if i < 4 else 8000)
        n = rate // 2 + 400 * i
        clean = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
        noise = rng.standard_normal(n).astype(np.float32)
        ref[uid] = write_wav(tmp / "ref" / f"{uid}.wav", clean, rate)
        noisy[uid] = write_wav(tmp / "noisy" / f"{uid}.wav", clean + 0.1 * noise, rate)
        inf[uid] = write_wav(tmp / "inf" / f"{uid}.wav", clean + 0.01 * (i + 1) * noise, rate)
        rows.append(
            MetaRow(
                id=uid,
                noisy_path=noisy[uid],
                speech_uid=f"p226_{i}",
                speech_sid=f"vctk_{i}",
                clean_path=ref[uid],
                noise_uid="n",
                snr_db=float(i),
                rir_uid="none",
                augmentation="none",
                fs=rate,
                length=n,
                text="x",
            )
        )
    inf["fileid_6"] = str(tmp / "missing.wav")  # one error in the enhanced set
    write_meta_tsv(tmp / "meta.tsv", rows)
    with fake_metrics():
        result = score(
            write_scp(tmp / "ref.scp", ref),
            write_scp(tmp / "inf.scp", inf),
            tmp / "out",
            metrics=FAKE_METRICS,
            noisy_scp=write_scp(tmp / "noisy.scp", noisy),
            meta_tsv=tmp / "meta.tsv",
            use_progress_bar=False,
        )
    return tmp / "out", result


def test_noisy_outputs(scored):
    out, result = scored
    for name in (
        "FAKE_MAE.scp",
        "FAKE_MEAN.scp",
        "FAKE_PEAK.scp",
        "RESULTS.txt",
        "errors.tsv",
        "BREAKDOWN.md",
        "breakdown.json",
    ):
        assert (out / "noisy" / name).exists(), name
    noisy_means = read_results(out / "noisy" / "RESULTS.txt")
    assert noisy_means["FAKE_MAE"] > read_results(out / "RESULTS.txt")["FAKE_MAE"]
    assert result["noisy_means"] == pytest.approx(noisy_means, abs=5e-5)
    assert result["noisy_errors"] == [] and result["error_counts"] == {"unreadable file": 1}


def test_report_and_figures(scored):
    out, result = scored
    text = (out / "report.md").read_text()
    assert "| output | better | enhanced | noisy | enhanced − noisy | valid |" in text
    assert "| FAKE_MAE | ↓ |" in text and "| FAKE_PEAK | ↑ |" in text
    assert "| unreadable file | 1 |" in text and "[errors.tsv](errors.tsv)" in text
    assert "[BREAKDOWN.md](BREAKDOWN.md)" in text
    assert "Examples (worst, median, best by FAKE_MAE)" in text
    figures = sorted(p.name for p in (out / "figures").iterdir())
    expected = [
        f"{kind}_{o}.png"
        for kind in ("hist", "scatter")
        for o in ("FAKE_MAE", "FAKE_MEAN", "FAKE_PEAK")
    ]
    assert figures == sorted(expected + ["examples.png"])
    for name in figures:
        data = (out / "figures" / name).read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC), name
        assert f"figures/{name}" in text


def test_report_regenerates_from_the_directory(scored):
    out, _ = scored
    (out / "report.md").unlink()
    assert make_report(out) == out / "report.md"
    assert "FAKE_MAE" in (out / "report.md").read_text()


def test_pick_examples_and_error_counts():
    values = {"a": 1.0, "b": float("nan"), "c": 3.0, "d": 2.0}
    assert pick_examples(values, higher_is_better=True) == [
        ("worst", "a"),
        ("median", "d"),
        ("best", "c"),
    ]
    assert pick_examples(values, higher_is_better=False) == [
        ("worst", "c"),
        ("median", "d"),
        ("best", "a"),
    ]
    rows = [
        ("a", "*", "unreadable file: x"),
        ("b", "pesq", "too short: 1 s"),
        ("b", "estoi", "too short: 1 s"),
        ("c", "pesq", "too short: 2 s"),
    ]
    assert count_errors(rows) == {"too short": 2, "unreadable file": 1}
