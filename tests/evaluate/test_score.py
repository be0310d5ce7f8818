"""score: official file formats, inf.scp order, every bad input -> NaN + errors.tsv, plug-ins,
bounded batch shapes, CLI."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.evaluate import (
    CALLS,
    FAIL_SAMPLE,
    FAKE_METRICS,
    FAKE_SPECS,
    constant,
    fake_metrics,
    write_scp,
    write_wav,
)
from urgent_jax.evaluate.report import read_errors
from urgent_jax.evaluate.score import padded_num_samples, parse_assignments, score
from urgent_jax.metrics import registry
from urgent_jax.metrics.registry import MetricOptions, MetricUnavailableError

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fakes():
    with fake_metrics():
        yield


def _run(tmp_path, ref, inf, **kwargs):
    """Write wavs (uid -> (samples, rate) or a raw path string) and scp lists, then score."""

    def paths(kind, items):
        out = {}
        for uid, item in items.items():
            if isinstance(item, str):
                out[uid] = item
            else:
                samples, rate = item
                out[uid] = write_wav(tmp_path / kind / f"{uid}.wav", samples, rate)
        return write_scp(tmp_path / f"{kind}.scp", out)

    kwargs.setdefault("metrics", FAKE_METRICS)
    kwargs.setdefault("make_report", False)
    kwargs.setdefault("use_progress_bar", False)
    ref_scp = paths("ref", ref) if ref is not None else None
    return score(ref_scp, paths("inf", inf), tmp_path / "out", **kwargs)


def _lines(path):
    return Path(path).read_text().splitlines()


def test_file_formats_order_and_nanmeans(tmp_path):
    n = 1600  # 0.1 s at 16 kHz
    ref = {u: (constant(0.25, n), 16000) for u in ("a", "b", "c", "d")}
    # est = 0.25 + c: |ref - est| = c exactly (binary fractions), so the means are hand-computable.
    inf = {
        "c": (constant(0.25 + 0.5, n), 16000),
        "a": (constant(0.25 + 0.125, n), 16000),
        "d": (np.r_[FAIL_SAMPLE, np.full(n - 1, 0.25, np.float32)], 16000),  # fake_mae: NaN
        "b": (constant(0.25 + 0.25, n), 16000),
    }
    result = _run(tmp_path, ref, inf)
    out = tmp_path / "out"
    assert _lines(out / "FAKE_MAE.scp") == ["c 0.5", "a 0.125", "d nan", "b 0.25"]
    assert _lines(out / "FAKE_PEAK.scp") == ["c 0.75", "a 0.375", "d 0.625", "b 0.5"]
    mean_d = (0.625 + 0.25 * (n - 1)) / n
    assert _lines(out / "FAKE_MEAN.scp") == ["c 0.75", "a 0.375", f"d {mean_d!r}", "b 0.5"]
    # nanmean FAKE_MAE = (0.5 + 0.125 + 0.25) / 3 = 0.291666...; FAKE_PEAK = 2.25 / 4 = 0.5625
    mean_level = (0.75 + 0.375 + mean_d + 0.5) / 4
    assert _lines(out / "RESULTS.txt") == [
        "FAKE_MAE: 0.2917",
        f"FAKE_MEAN: {mean_level:.4f}",
        "FAKE_PEAK: 0.5625",
    ]
    assert result["means"]["FAKE_MAE"] == pytest.approx(0.875 / 3, abs=1e-12)
    assert read_errors(out / "errors.tsv") == [
        ("d", "fake_mae", "fake failure: est[0] is the failure marker")
    ]
    assert _lines(out / "errors.tsv")[0] == "uid\tmetric\treason"
    assert result["error_counts"] == {"fake failure": 1}
    assert (out / "summary.json").exists() and not (out / "report.md").exists()


def test_every_bad_input_becomes_nan_with_a_reason(tmp_path):
    n, good = 1600, constant(0.25, 1600)
    bad_file = tmp_path / "not_audio.wav"
    bad_file.write_text("this is not a wav file")
    ref = {
        "good": (good, 16000),
        "length": (good, 16000),
        "rate": (good, 16000),
        "no_inf": (good, 16000),
        "unreadable_inf": (good, 16000),
        "missing_file": (good, 16000),
        "unreadable_ref": str(bad_file),
        "silent": (np.zeros(n, np.float32), 16000),
        "nan_inf": (good, 16000),
        "inf_ref": (np.r_[np.inf, good[1:]], 16000),
        "short": (constant(0.25, 480), 16000),  # 0.03 s: < 0.05 s (fake_mae), >= 0.01 s
        "too_short_all": (constant(0.25, 80), 16000),  # 0.005 s: too short for both
        "failing": (good, 16000),
    }
    inf = {
        "good": (constant(0.5, n), 16000),
        "length": (constant(0.5, n + 100), 16000),
        "rate": (constant(0.5, 800), 8000),
        "no_ref": (constant(0.5, n), 16000),
        "unreadable_inf": str(bad_file),
        "missing_file": str(tmp_path / "does_not_exist.wav"),
        "unreadable_ref": (constant(0.5, n), 16000),
        "silent": (constant(0.5, n), 16000),
        "nan_inf": (np.r_[constant(0.5, 10), np.nan, constant(0.5, n - 11)], 16000),
        "inf_ref": (constant(0.5, n), 16000),
        "short": (constant(0.5, 480), 16000),
        "too_short_all": (constant(0.5, 80), 16000),
        "failing": (np.r_[FAIL_SAMPLE, constant(0.5, n - 1)], 16000),
    }
    result = _run(tmp_path, ref, inf)
    out = tmp_path / "out"
    mae, level = result["scores"]["FAKE_MAE"], result["scores"]["FAKE_MEAN"]
    # order: inf.scp, then reference-only uids
    assert list(mae) == list(inf) + ["no_inf"]
    assert [line.split()[0] for line in _lines(out / "FAKE_MAE.scp")] == list(inf) + ["no_inf"]
    assert mae["good"] == 0.25 and level["good"] == 0.5
    errors = {(uid, metric): reason for uid, metric, reason in read_errors(out / "errors.tsv")}
    expected = {
        ("length", "fake_mae"): "length mismatch: ref 1600, inf 1700 samples",
        ("rate", "fake_mae"): "sample rate mismatch: ref 16000 Hz, inf 8000 Hz",
        ("no_ref", "fake_mae"): "missing in ref",
        ("no_inf", "*"): "missing in inf",
        ("silent", "fake_mae"): "silent reference",
        ("nan_inf", "*"): "non-finite samples: inf",
        ("inf_ref", "fake_mae"): "non-finite samples: ref",
        ("short", "fake_mae"): "too short: 0.03 s < 0.05 s",
        ("too_short_all", "fake_mae"): "too short: 0.005 s < 0.05 s",
        ("too_short_all", "fake_level"): "too short: 0.005 s < 0.01 s",
        ("failing", "fake_mae"): "fake failure: est[0] is the failure marker",
    }
    for key, reason in expected.items():
        assert errors.pop(key) == reason, key
    for key in [("unreadable_inf", "*"), ("missing_file", "*"), ("unreadable_ref", "fake_mae")]:
        assert errors.pop(key).startswith("unreadable file: "), key
    reasons = {uid: reason for uid, _, reason in result["errors"]}
    assert "does_not_exist.wav" in reasons["missing_file"]
    assert errors == {}  # nothing else was reported
    # intrusive problems: fake_mae NaN, the non-intrusive metric still computed on est
    for uid in ("length", "rate", "no_ref", "unreadable_ref", "silent", "inf_ref", "short"):
        assert math.isnan(mae[uid]) and math.isfinite(level[uid]), uid
    for uid in ("no_inf", "unreadable_inf", "missing_file", "nan_inf", "too_short_all"):
        assert math.isnan(mae[uid]) and math.isnan(level[uid]), uid
    assert level["rate"] == 0.5 and level["length"] == 0.5
    assert result["error_counts"] == {
        "unreadable file": 3,
        "too short": 2,
        "non-finite samples": 2,
        "fake failure": 1,
        "length mismatch": 1,
        "missing in inf": 1,
        "missing in ref": 1,
        "sample rate mismatch": 1,
        "silent reference": 1,
    }
    # FAKE_PEAK: 8 utterances at 0.5 and "failing" at |-0.625| -> 4.625 / 9 = 0.51388...
    assert _lines(out / "RESULTS.txt") == [
        "FAKE_MAE: 0.2500",
        "FAKE_MEAN: 0.5000",
        "FAKE_PEAK: 0.5139",
    ]


def test_plugin_without_weights_fails_fast(tmp_path):
    ref = {"a": (constant(0.25, 1600), 16000)}
    with pytest.raises(MetricUnavailableError, match="--metric_weights fake_plug="):
        _run(tmp_path, ref, ref, metrics=["fake_level", "fake_plug"])
    assert not (tmp_path / "out").exists()  # before any work


def test_plugin_with_local_weights_and_loader(tmp_path, monkeypatch):
    module_dir = tmp_path / "plugin_src"
    module_dir.mkdir()
    (module_dir / "gain_plugin.py").write_text(
        "import numpy as np\n"
        "def make_metric(weights_path):\n"
        "    gain = float(open(weights_path).read())\n"
        "    def run(est, lengths, sample_rate, ref=None):\n"
        "        assert ref is None and isinstance(est, np.ndarray)\n"
        "        peaks = [float(np.max(est[i, :n])) for i, n in enumerate(lengths)]\n"
        "        return {'FAKE_PLUG': [gain * p for p in peaks]}\n"
        "    return run\n"
    )
    monkeypatch.syspath_prepend(str(module_dir))
    weights = tmp_path / "gain.txt"
    weights.write_text("2.0")
    options = MetricOptions(
        weights={"fake_plug": str(weights)}, loaders={"fake_plug": "gain_plugin:make_metric"}
    )
    inf = {"a": (constant(0.25, 1600), 16000), "b": (constant(0.125, 800), 8000)}
    result = _run(tmp_path, None, inf, metrics=["fake_plug"], options=options)
    assert _lines(tmp_path / "out" / "FAKE_PLUG.scp") == ["a 0.5", "b 0.25"]
    assert _lines(tmp_path / "out" / "RESULTS.txt") == ["FAKE_PLUG: 0.3750"]
    assert result["errors"] == []


def test_non_intrusive_without_references(tmp_path, monkeypatch):
    # Only the fakes are registered, so the default list does not build the real metrics.
    monkeypatch.setattr(registry, "_REGISTRY", {s.name: s for s in FAKE_SPECS})
    inf = {"a": (constant(0.25, 1600), 16000)}
    result = _run(tmp_path, None, inf, metrics=None)  # every built-in: here fake_mae, fake_level
    assert "FAKE_MEAN" in result["means"] and "FAKE_MAE" not in result["means"]
    with pytest.raises(ValueError, match="needs --ref_scp"):
        _run(tmp_path, None, inf, metrics=["fake_mae"])


def test_bounded_batch_shapes_and_order_independent_values(tmp_path):
    rng = np.random.default_rng(0)
    ref, inf, expected = {}, {}, {}
    for i in range(40):
        rate = 16000 if i % 3 else 8000  # 26 at 16 kHz (7 batches of <= 4), 14 at 8 kHz (4)
        n = int(rng.integers(rate, 3 * rate // 2))  # 1 to 1.5 s: two padded lengths per rate
        c = float(rng.integers(1, 64)) / 256
        ref[f"u{i:02d}"] = (constant(0.25, n), rate)
        inf[f"u{i:02d}"] = (constant(0.25 + c, n), rate)
        expected[f"u{i:02d}"] = c
    result = _run(tmp_path, ref, inf, batch_size=4)
    assert result["scores"]["FAKE_MAE"] == pytest.approx(expected, abs=1e-7)
    assert list(result["scores"]["FAKE_MAE"]) == list(inf)
    shapes = {(rate, shape) for _, rate, shape in CALLS}
    assert set(result["batch_shapes"]) == {(r, b, t) for r, (b, t) in shapes}
    for rate, (rows, time) in shapes:
        assert rows in (1, 2, 4) and time == padded_num_samples(time)  # on the length grid
    assert {t for r, (_, t) in shapes if r == 16000} <= {16384, 24576}
    assert {t for r, (_, t) in shapes if r == 8000} <= {8192, 12288}
    assert len([c for c in CALLS if c[0] == "fake_mae"]) == 11
    assert len(shapes) <= 6  # 11 batches, at most 2 lengths x (full + one partial batch) per rate


def test_real_si_sdr_end_to_end(tmp_path):
    try:
        from urgent_jax.metrics import sdr
    except Exception:  # noqa: BLE001 - another engineer is writing it
        pytest.skip("urgent_jax.metrics.sdr is not available yet")
    if not hasattr(sdr, "si_sdr"):
        pytest.skip("urgent_jax.metrics.sdr.si_sdr is not available yet")
    rng = np.random.default_rng(1)
    ref, inf, expected = {}, {}, {}
    for i, (n, snr_db) in enumerate([(8000, 5.0), (12000, 10.0), (16000, 0.0)]):
        clean = rng.standard_normal(n).astype(np.float32) * 0.1
        noise = rng.standard_normal(n).astype(np.float32)
        noise *= np.sqrt(np.sum(clean**2) / np.sum(noise**2) / 10 ** (snr_db / 10))
        est = clean + noise
        ref[f"u{i}"], inf[f"u{i}"] = (clean, 16000), (est, 16000)
        s, e = clean.astype(np.float64), est.astype(np.float64)
        target = np.dot(e, s) / np.dot(s, s) * s
        expected[f"u{i}"] = 10 * np.log10(np.sum(target**2) / np.sum((e - target) ** 2))
    result = _run(tmp_path, ref, inf, metrics=["si_sdr"])
    assert result["scores"]["SI_SDR"] == pytest.approx(expected, abs=0.01)
    assert (tmp_path / "out" / "SI_SDR.scp").exists()


def test_parse_assignments():
    assert parse_assignments(["UTMOS=/w/a.ckpt", "nisqa = b"], "metric_weights") == {
        "utmos": "/w/a.ckpt",
        "nisqa": "b",
    }
    with pytest.raises(ValueError, match="name=value"):
        parse_assignments(["utmos"], "metric_weights")


def test_import_defines_no_flags():
    from absl import flags

    import urgent_jax.evaluate.score  # noqa: F401

    assert "inf_scp" not in flags.FLAGS and "metric_weights" not in flags.FLAGS


def _cli(args, tmp_path, pythonpath=()):
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *map(str, pythonpath)]),
        URGENT_JAX_CACHE=str(tmp_path / "xla"),
    )
    return subprocess.run(
        [sys.executable, "-m", "urgent_jax.evaluate.score", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_plugin_end_to_end_and_missing_weights(tmp_path):
    """The real command with a built-in plug-in entry (utmos) served by a local loader."""
    (tmp_path / "my_utmos.py").write_text(
        "import numpy as np\n"
        "def make(path):\n"
        "    def run(est, lengths, sample_rate, ref=None):\n"
        "        return {'UTMOS': np.full(len(lengths), 3.5)}\n"
        "    return run\n"
    )
    weights = tmp_path / "utmos.ckpt"
    weights.write_text("x")
    inf = write_scp(
        tmp_path / "inf.scp",
        {
            "x1": write_wav(tmp_path / "wav" / "x1.wav", constant(0.1, 1600)),
            "x2": write_wav(tmp_path / "wav" / "x2.wav", constant(0.2, 3200)),
        },
    )
    out = tmp_path / "out"
    args = ["--inf_scp", inf, "--output_dir", str(out), "--metrics", "utmos", "--noprogress"]
    missing = _cli(args, tmp_path)
    assert missing.returncode != 0 and "--metric_weights utmos=" in missing.stderr
    ok = _cli(
        args + ["--metric_weights", f"utmos={weights}", "--metric_loader", "utmos=my_utmos:make"],
        tmp_path,
        [tmp_path],
    )
    assert ok.returncode == 0, ok.stderr
    assert _lines(out / "UTMOS.scp") == ["x1 3.5", "x2 3.5"]
    assert _lines(out / "RESULTS.txt") == ["UTMOS: 3.5000"]
    assert (out / "report.md").exists()
    assert "UTMOS: 3.5000" in ok.stdout and "no errors" in ok.stdout
