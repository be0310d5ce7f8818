"""score: official file formats, inf.scp order, every bad input -> NaN + errors.tsv, non-finite
scores, label files checked up front, plug-ins with per-utterance context and options, bounded
batch shapes, CLI, the quickstart's scoring stage."""

import dataclasses
import importlib.util
import json
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
from urgent_jax.data.manifest import MetaRow, write_meta_tsv
from urgent_jax.evaluate.report import read_errors
from urgent_jax.evaluate.score import (
    padded_num_samples,
    parse_assignments,
    parse_plugin_options,
    score,
)
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
        ("nan_inf", "*"): "non-finite samples: in the inf_scp audio",
        ("inf_ref", "fake_mae"): "non-finite samples: in the ref_scp audio",
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


def _write_meta(path, lengths, sample_rate=16000) -> str:
    """meta.tsv rows for {uid: num_samples}; speech uids carry no language marker (rule: eng)."""
    rows = [
        MetaRow(id=uid, noisy_path=f"/n/{uid}.flac", speech_uid=f"spk_{uid}",
                speech_sid=f"corpus_{uid}", clean_path=f"/c/{uid}.flac", noise_uid="noise",
                snr_db=5.0, rir_uid="none", augmentation="none", fs=sample_rate, length=n,
                text="<not-available>")
        for uid, n in lengths.items()
    ]  # fmt: skip
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_meta_tsv(path, rows)
    return str(path)


def _language_means(breakdown_json, output):
    data = json.loads(Path(breakdown_json).read_text())
    return {k: (v["count"], v["means"][output]) for k, v in data["dimensions"]["language"].items()}


def test_quickstart_score_stage_breaks_down_by_utt2lang(tmp_path):
    """experiments/quickstart.py stage 5 on a validation set laid out as presimulate writes it:
    the languages come from validation/utt2lang (without it every utterance falls to eng)."""
    path = REPO_ROOT / "experiments" / "quickstart.py"
    spec = importlib.util.spec_from_file_location("quickstart", path)
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    validation, enhanced, n = tmp_path / "validation", tmp_path / "enhanced", 1600
    offsets = {"fileid_1": 0.125, "fileid_2": 0.25, "fileid_3": 0.5}  # FAKE_MAE of each

    def wavs(folder, level):
        return {
            u: write_wav(folder / f"{u}.wav", constant(level(c), n)) for u, c in offsets.items()
        }

    write_scp(validation / "spk1.scp", wavs(validation / "clean", lambda c: 0.25))
    write_scp(validation / "wav.scp", wavs(validation / "noisy", lambda c: 0.25 + 2 * c))
    write_scp(enhanced / "inf.scp", wavs(enhanced / "wav", lambda c: 0.25 + c))
    (validation / "utt2lang").write_text("fileid_1 fra\nfileid_2 fra\nfileid_3 deu\n")
    _write_meta(validation / "log" / "meta.tsv", {u: n for u in offsets})
    scores = tmp_path / "scores"
    quickstart.score_stage(str(validation), str(enhanced), str(scores), metrics=FAKE_METRICS,
                           make_report=False, use_progress_bar=False)  # fmt: skip
    assert _language_means(scores / "breakdown.json", "FAKE_MAE") == {
        "lang=deu": (1, 0.5),
        "lang=fra": (2, (0.125 + 0.25) / 2),
    }
    assert _language_means(scores / "noisy" / "breakdown.json", "FAKE_MAE") == {
        "lang=deu": (1, 1.0),
        "lang=fra": (2, 0.375),
    }


def test_infinite_scores_are_nan_with_a_reason_in_every_output(tmp_path):
    """SI-SDR of an all-zero estimate is -inf (the reference package's 10 log10(0)): written as
    NaN, with "non-finite score" in errors.tsv, left out of RESULTS.txt, summary and breakdown."""
    import fast_bss_eval
    import torch

    rng = np.random.default_rng(5)
    n = 8000
    clean = (0.1 * rng.standard_normal((2, n))).astype(np.float32)
    noisy = (clean[0] + 0.05 * rng.standard_normal(n)).astype(np.float32)
    zero = np.zeros(n, np.float32)
    package = -fast_bss_eval.si_sdr_loss(
        torch.from_numpy(zero.astype(np.float64))[None],
        torch.from_numpy(clean[1].astype(np.float64))[None],
        zero_mean=True,
    )
    assert float(package[0]) == -math.inf
    s, e = clean[0].astype(np.float64), noisy.astype(np.float64)
    s, e = s - s.mean(), e - e.mean()
    target = np.dot(e, s) / np.dot(s, s) * s
    expected = 10 * np.log10(np.sum(target**2) / np.sum((e - target) ** 2))
    ref = {"good": (clean[0], 16000), "zero": (clean[1], 16000)}
    inf = {"good": (noisy, 16000), "zero": (zero, 16000)}
    meta = _write_meta(tmp_path / "meta.tsv", {"good": n, "zero": n})
    result = _run(tmp_path, ref, inf, metrics=["si_sdr"], meta_tsv=meta, make_report=True)
    out = tmp_path / "out"
    scp = dict(line.split() for line in _lines(out / "SI_SDR.scp"))
    assert scp["zero"] == "nan" and float(scp["good"]) == pytest.approx(expected, abs=1e-3)
    assert _lines(out / "RESULTS.txt") == [f"SI_SDR: {float(scp['good']):.4f}"]
    assert read_errors(out / "errors.tsv") == [
        ("zero", "si_sdr", "non-finite score: SI_SDR = -inf")
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["means"]["SI_SDR"] == pytest.approx(expected, abs=1e-3)
    assert summary["error_counts"] == {"non-finite score": 1} == result["error_counts"]
    assert math.isnan(result["scores"]["SI_SDR"]["zero"])
    assert _language_means(out / "breakdown.json", "SI_SDR") == {
        "lang=eng": (2, summary["means"]["SI_SDR"])
    }
    report = (out / "report.md").read_text()
    assert f"| SI_SDR | ↑ | {summary['means']['SI_SDR']:.4f} | 1/2 |" in report
    assert "| non-finite score | 1 |" in report


@pytest.mark.parametrize(
    "which, content, message",
    [
        ("meta_tsv", None, r"meta\.tsv:3: expected 12 columns, got 2"),
        ("utt2lang", "a fra\nb\n", r"utt2lang:2: expected 2 columns"),
        ("text", "a hello\na hello again\n", r"text:2: .*a"),
        ("utt2lang", "missing", r"utt2lang: manifest file not found"),
    ],
)
def test_meta_and_label_files_are_checked_before_scoring(tmp_path, which, content, message):
    ref = {u: (constant(0.25, 1600), 16000) for u in ("a", "b")}
    path = tmp_path / which
    if which == "meta_tsv":
        path = Path(_write_meta(tmp_path / "meta.tsv", {"a": 1600}))
        path.write_text(path.read_text() + "b\t/n/b.flac\n")
    elif content != "missing":
        path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        _run(tmp_path, ref, ref, **{which: path})
    assert str(error.value).startswith(str(path))  # names the file (and the line)
    assert CALLS == [] and not (tmp_path / "out").exists()  # nothing scored, nothing written


# A LID and a character-accuracy plug-in that need to know which utterance each row is. The LID
# "model" hears a language from the signal level (a loader option maps levels to languages); the
# ASR "model" is a table of cached hypotheses by uid (its weights file). Accuracies are against
# the true labels the scorer passes in `context`.
CONTEXT_PLUGINS = """
import numpy as np

def make_lid(weights_path, levels):
    heard = {float(k): v for k, v in (item.split(":") for item in levels.split(","))}
    def run(est, lengths, sample_rate, ref=None, *, context):
        assert len(context.uids) == len(context.labels["lang"]) == len(lengths) == est.shape[0]
        langs = [heard[float(est[i, 0])] for i in range(len(lengths))]
        return {"LID_ACC": [float(h == t) for h, t in zip(langs, context.labels["lang"])]}
    run.context_labels = ("lang",)
    return run

def make_char_acc(weights_path):
    hyps = dict(line.split(maxsplit=1) for line in open(weights_path).read().splitlines())
    def run(est, lengths, sample_rate, ref=None, *, context):
        out = []
        for uid, text in zip(context.uids, context.labels["text"]):
            same = sum(a == b for a, b in zip(hyps[uid], text))
            out.append(same / len(text))
        return {"CAcc": out}
    run.context_labels = ()  # the registry entry adds "text"
    return run

def make_old_style(weights_path):
    def run(est, lengths, sample_rate, ref=None):
        return {"LID_ACC": np.ones(len(lengths))}
    return run
"""


@pytest.fixture
def context_plugins(tmp_path, monkeypatch):
    module_dir = tmp_path / "plugin_src"
    module_dir.mkdir()
    (module_dir / "context_plugins.py").write_text(CONTEXT_PLUGINS)
    monkeypatch.syspath_prepend(str(module_dir))
    hyps = tmp_path / "hyps.txt"  # char_acc "weights": cached ASR output by uid
    hyps.write_text("u1 hello\nu2 bonjou\nu3 hxllo\nu4 hi there\nu5 sin voz\n")
    lid_weights = tmp_path / "lid.ckpt"
    lid_weights.write_text("x")
    return MetricOptions(
        weights={"lid": str(lid_weights), "char_acc": str(hyps)},
        loaders={"lid": "context_plugins:make_lid", "char_acc": "context_plugins:make_char_acc"},
        plugin_options={"lid": {"levels": "0.125:eng,0.25:fra"}},
    )


def test_plugins_get_uids_labels_and_options(tmp_path, context_plugins):
    # Rates and lengths differ so that batches (by rate, sorted by length, padded to 2 rows)
    # hold the utterances in another order than inf.scp.
    inf = {
        "u1": (constant(0.125, 3200), 16000),  # hears eng, is eng
        "u2": (constant(0.25, 800), 8000),  # hears fra, is fra
        "u3": (constant(0.25, 1600), 16000),  # hears fra, is deu
        "u4": (constant(0.125, 2400), 16000),  # hears eng, is eng
        "u5": (constant(0.25, 2000), 16000),  # no language label
    }
    languages = {"u1": "eng", "u2": "fra", "u3": "deu", "u4": "eng"}
    utt2lang = write_scp(tmp_path / "utt2lang", languages)
    text = tmp_path / "text"
    text.write_text("u1 hello\nu2 bonjour\nu3 hallo\nu4 hi there\nu5 sin voz\n")
    result = _run(tmp_path, None, inf, metrics=["lid", "char_acc"], options=context_plugins,
                  utt2lang=utt2lang, text=text, batch_size=2)  # fmt: skip
    lid, cacc = result["scores"]["LID_ACC"], result["scores"]["CAcc"]
    assert {u: v for u, v in lid.items() if u != "u5"} == {
        "u1": 1.0,
        "u2": 1.0,
        "u3": 0.0,
        "u4": 1.0,
    }
    assert math.isnan(lid["u5"])
    assert cacc == {"u1": 1.0, "u2": 6 / 7, "u3": 4 / 5, "u4": 1.0, "u5": 1.0}
    assert result["errors"] == [("u5", "lid", "missing label: no lang in --utt2lang")]
    assert _lines(tmp_path / "out" / "RESULTS.txt") == ["LID_ACC: 0.7500", "CAcc: 0.9314"]


def test_plugin_labels_and_options_fail_fast(tmp_path, context_plugins):
    inf = {"u1": (constant(0.125, 1600), 16000)}
    with pytest.raises(ValueError, match="'lid' needs per-utterance labels: pass --utt2lang"):
        _run(tmp_path, None, inf, metrics=["lid"], options=context_plugins)
    no_options = dataclasses.replace(context_plugins, plugin_options={})
    with pytest.raises(ValueError, match="metric 'char_acc' .* pass --text"):
        _run(tmp_path, None, inf, metrics=["char_acc"], options=no_options)
    with pytest.raises(ValueError, match="'lid' is not a plug-in metric being run"):
        _run(tmp_path, None, inf, metrics=["char_acc"], options=context_plugins)
    old = MetricOptions(
        weights=context_plugins.weights, loaders={"lid": "context_plugins:make_old_style"}
    )
    utt2lang = write_scp(tmp_path / "utt2lang", {"u1": "eng"})
    with pytest.raises(MetricUnavailableError, match="must take context="):
        _run(tmp_path, None, inf, metrics=["lid"], options=old, utt2lang=utt2lang)
    assert CALLS == [] and not (tmp_path / "out").exists()


def test_parse_plugin_options():
    values = ["UTMOS.device=cpu", "utmos.batch = 4", "lid.levels=0.1:eng,0.2:fra"]
    assert parse_plugin_options(values) == {
        "utmos": {"device": "cpu", "batch": "4"},
        "lid": {"levels": "0.1:eng,0.2:fra"},
    }
    for bad in ["utmos=cpu", "utmos.=cpu", "utmos.device", ".device=cpu"]:
        with pytest.raises(ValueError, match="metric.key=value"):
            parse_plugin_options([bad])


def test_mcd_too_short_below_one_frame_at_8khz(tmp_path):
    """MCD needs one 1024-sample frame at every rate: 0.12 s at 8 kHz passes the 0.1 s minimum
    but holds no frame, so it is "too short" (not "metric returned NaN")."""
    spec = registry.get_metric("mcd")
    assert [spec.min_samples(fs) for fs in (8000, 16000, 48000)] == [1024, 1600, 4800]
    rng = np.random.default_rng(2)
    ref = {"short": ((0.1 * rng.standard_normal(960)).astype(np.float32), 8000)}
    inf = {"short": ((0.1 * rng.standard_normal(960)).astype(np.float32), 8000)}
    result = _run(tmp_path, ref, inf, metrics=["mcd"])
    assert result["errors"] == [
        ("short", "*", "too short: 0.12 s < 0.128 s (1024 samples at 8000 Hz)")
    ]


def test_non_finite_samples_name_their_list(tmp_path):
    n = 1600
    ref = {"a": (constant(0.25, n), 16000), "b": (constant(0.25, n), 16000)}
    inf = {"a": (constant(0.5, n), 16000), "b": (constant(0.5, n), 16000)}
    bad = np.r_[np.nan, constant(0.5, n - 1)]
    noisy = write_scp(tmp_path / "noisy.scp", {
        "a": write_wav(tmp_path / "noisy" / "a.wav", bad),
        "b": write_wav(tmp_path / "noisy" / "b.wav", constant(0.5, n))})  # fmt: skip
    result = _run(tmp_path, ref, inf, noisy_scp=noisy)
    assert result["errors"] == []
    assert result["noisy_errors"] == [("a", "*", "non-finite samples: in the noisy_scp audio")]


def test_cli_utt2lang_text_and_plugin_options(tmp_path, context_plugins):
    """The command: --utt2lang feeds both the breakdown's languages and the LID plug-in's labels,
    --text the character-accuracy labels, --plugin_option the LID loader's option."""
    n = 1600
    inf = write_scp(tmp_path / "inf.scp", {
        "fileid_1": write_wav(tmp_path / "wav" / "1.wav", constant(0.125, n)),
        "fileid_2": write_wav(tmp_path / "wav" / "2.wav", constant(0.25, n))})  # fmt: skip
    meta = _write_meta(tmp_path / "meta.tsv", {"fileid_1": n, "fileid_2": n})
    utt2lang = write_scp(tmp_path / "utt2lang", {"fileid_1": "eng", "fileid_2": "deu"})
    text = write_scp(tmp_path / "text", {"fileid_1": "hello", "fileid_2": "hallo"})
    hyps = write_scp(tmp_path / "hyps.txt", {"fileid_1": "hello", "fileid_2": "hxllo"})
    out = tmp_path / "out"
    args = [
        "--inf_scp", inf, "--output_dir", str(out), "--metrics", "lid,char_acc", "--noprogress",
        "--noreport", "--meta_tsv", meta, "--utt2lang", utt2lang, "--text", text,
        "--metric_weights", f"lid={context_plugins.weights['lid']}",
        "--metric_weights", f"char_acc={hyps}",
        "--metric_loader", "lid=context_plugins:make_lid",
        "--metric_loader", "char_acc=context_plugins:make_char_acc",
        "--plugin_option", "lid.levels=0.125:eng,0.25:fra",
    ]  # fmt: skip
    ok = _cli(args, tmp_path, [tmp_path / "plugin_src"])
    assert ok.returncode == 0, ok.stderr
    assert _lines(out / "LID_ACC.scp") == ["fileid_1 1.0", "fileid_2 0.0"]  # heard fra, is deu
    assert _lines(out / "CAcc.scp") == ["fileid_1 1.0", "fileid_2 0.8"]
    assert _language_means(out / "breakdown.json", "LID_ACC") == {
        "lang=deu": (1, 0.0),
        "lang=eng": (1, 1.0),
    }
