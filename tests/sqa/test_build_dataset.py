"""build_dataset: degraded (+ enhanced) demo speech labelled by the metric suite into data.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
import soundfile as sf

from urgent_jax.data.manifest import read_kv, read_meta_tsv
from urgent_jax.sqa.build_dataset import SPEECH_LISTS, build_dataset, select_speech, system_id
from urgent_jax.sqa.data import read_jsonl


def _si_sdr(ref, est):
    """Scale-invariant SDR in dB (numpy, zero-mean signals as the official definition)."""
    ref = ref - ref.mean()
    est = est - est.mean()
    target = np.dot(est, ref) / np.dot(ref, ref) * ref
    return 10 * np.log10(np.sum(target**2) / np.sum((est - target) ** 2))


@pytest.fixture(scope="module")
def built(demo_sources, tmp_path_factory):
    from flax.core import meta

    from urgent_jax import models
    from urgent_jax.models.convert import save_converted

    tmp = tmp_path_factory.mktemp("sqa_build")
    overrides = models.TINY["bsrnn"]
    model = models.build("bsrnn", **overrides)
    variables = meta.unbox(models.init_variables(model, jax.random.PRNGKey(0),
                                                 sample_rate=16000))
    save_converted(tmp / "se_model", variables, "bsrnn", overrides)
    # Three 16 kHz utterances of the demo training sources.
    small = select_speech(str(demo_sources), tmp / "pick", [16000])
    lines = (tmp / "pick" / "speech_sources.scp").read_text().splitlines()[3:]
    drop = {x.split()[0] for x in lines}
    for name in SPEECH_LISTS:
        path = tmp / "pick" / name
        path.write_text("".join(x + "\n" for x in path.read_text().splitlines()
                                if x.split()[0] not in drop))
    assert len(read_kv(tmp / "pick" / "speech_sources.scp")) == 3
    summary = build_dataset(small, str(tmp / "set"), seed=3, repeat_per_utt=2,
                            metrics=("si_sdr",), sample_rate=16000,
                            enhance_workdirs=(str(tmp / "se_model"),), include_clean=True,
                            heldout_fraction=0.5, use_progress_bar=False)
    return tmp / "set", summary


def test_records_systems_and_labels(built):
    out, summary = built
    records = read_jsonl(out / "data.jsonl")
    # 3 utterances x 2 draws x (degraded, enhanced, clean)
    assert summary["num_records"] == len(records) == 18
    rows = {r.id: r for r in read_meta_tsv(out / "degraded" / "log" / "meta.tsv")}
    clean = read_kv(out / "lists" / "clean.scp")
    for rec in records:
        if rec["system_id"] == "clean":
            fileid = rec["sample_id"].removeprefix("clean-")
            assert rec["audio_path"] == clean[fileid] and rec["metrics"] == {}  # intrusive only
            continue
        if rec["system_id"] == "enhanced:se_model":
            fileid = rec["sample_id"].removeprefix("se_model-")
        else:
            fileid = rec["sample_id"]
            assert rec["system_id"] == system_id(rows[fileid])
            assert rec["system_id"].split("+")[0] in ("noise", "wind")
        est, fs = sf.read(rec["audio_path"], dtype="float64")
        ref, fs_ref = sf.read(clean[fileid], dtype="float64")
        assert fs == fs_ref == 16000
        assert rec["duration"] == pytest.approx(est.size / fs, abs=1e-3)
        # Labels are the metric suite's SI-SDR of the stored audio against the stored reference.
        assert rec["metrics"]["si_sdr"] == pytest.approx(_si_sdr(ref, est), abs=2e-3)
    for name in ("wav.scp", "utt2sys", "utt2dur", "si_sdr.scp"):
        assert len(read_kv(out / name)) == 18
    assert sum(v == "NaN" for v in read_kv(out / "si_sdr.scp").values()) == 6


def test_heldout_split_by_clean_utterance(built):
    out, summary = built
    train = read_jsonl(out / "train" / "data.jsonl")
    heldout = read_jsonl(out / "heldout" / "data.jsonl")
    assert len(train) + len(heldout) == 18 and summary["num_heldout"] == len(heldout)
    rows = {r.id: r for r in read_meta_tsv(out / "degraded" / "log" / "meta.tsv")}

    def speech(rec):
        fileid = rec["sample_id"].removeprefix("se_model-").removeprefix("clean-")
        return rows[fileid].speech_uid

    assert not {speech(r) for r in train} & {speech(r) for r in heldout}


def test_system_id_from_meta_row():
    class Row:
        rir_uid = "rir_1"
        augmentation = ("wind_noise(threshold=0.2,ratio=2.0,attack=5.0,release=9.0,sc_gain=1.0,"
                        "clipping=True,clipping_threshold=0.9)/packet_loss(packet_loss_indices=[1],"
                        "packet_duration_ms=20)/bandwidth_limitation-kaiser_best->8000")

    assert system_id(Row) == "wind+reverb+bandwidth_limitation+packet_loss"
    Row.rir_uid, Row.augmentation = "none", "none"
    assert system_id(Row) == "noise"


def test_rerun_resumes_without_rescoring(built, monkeypatch):
    out, summary = built
    from urgent_jax.sqa import build_dataset as module

    def fail(*args, **kwargs):
        raise AssertionError("labels were recomputed")

    monkeypatch.setattr(module.score_lib, "score", fail)
    args = dict(seed=3, repeat_per_utt=2, metrics=("si_sdr",), sample_rate=16000,
                enhance_workdirs=(str(out.parent / "se_model"),), include_clean=True,
                heldout_fraction=0.5, use_progress_bar=False)
    again = build_dataset(str(out.parent / "pick"), str(out), **args)
    assert again == summary


# REFERENCE.md §1.5: the Track 2 metric names of data.jsonl.
TRACK2_METRICS = (
    "mos", "dnsmos_ovrl", "scoreq", "utmos", "nisqa_mos", "distill_mos", "sigmos_ovrl", "sigmos_col",
    "sigmos_disc", "sigmos_loud", "sigmos_reverb", "sigmos_sig", "sigmos_noise", "lps", "spksim",
    "sbert", "mcd", "sdr", "pesq", "pesqc2", "lsd", "estoi",
)  # fmt: skip
# What each Track 2 metric the suite computes is called in the registry (metric -> output).
SUITE_OUTPUTS = {
    "dnsmos_ovrl": ("dnsmos", "DNSMOS_OVRL"), "scoreq": ("scoreq", "SCOREQ"),
    "utmos": ("utmos", "UTMOS"), "nisqa_mos": ("nisqa", "NISQA"),
    "distill_mos": ("distill_mos", "DISTILL_MOS"), "lps": ("lps", "LPS"),
    "spksim": ("spk_sim", "SpkSim"), "sbert": ("speechbert_score", "SpeechBERTScore"),
    "mcd": ("mcd", "MCD"), "sdr": ("sdr", "SDR"), "pesq": ("pesq", "PESQ"),
    "lsd": ("lsd", "LSD"), "estoi": ("estoi", "ESTOI"),
}  # fmt: skip


def test_labels_carry_track2_metric_names(tmp_path, monkeypatch):
    from urgent_jax.metrics.registry import get_metric
    from urgent_jax.sqa import build_dataset as module

    calls = []

    def fake_score(ref_scp, inf_scp, out_dir, metrics, **kwargs):  # one value per output
        calls.append(metrics)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        outputs = [o for m in metrics for o in get_metric(m).outputs]
        return {"scores": {o: {"u1": float(i)} for i, o in enumerate(outputs)}}

    monkeypatch.setattr(module.score_lib, "score", fake_score)
    (tmp_path / "inf.scp").write_text("u1 /x/u1.wav\n")
    metrics = sorted({m for m, _ in SUITE_OUTPUTS.values()} | {"si_sdr"})
    labels = module._label(None, tmp_path / "inf.scp", tmp_path / "labels", metrics, 4, False)["u1"]
    outputs = [o for m in metrics for o in get_metric(m).outputs]
    assert set(SUITE_OUTPUTS) <= set(TRACK2_METRICS)
    for name, (metric, output) in SUITE_OUTPUTS.items():
        assert get_metric(metric).outputs.count(output) == 1
        assert labels[name] == float(outputs.index(output)), name  # the right output's value
    assert labels["si_sdr"] == float(outputs.index("SI_SDR"))
    assert labels["dnsmos_sig"] == float(outputs.index("DNSMOS_SIG"))
    assert not {"nisqa", "speechbertscore"} & set(labels)
    # A labels.json cached with the old names is scored again, not reused.
    cache = tmp_path / "labels" / "labels.json"
    old = json.loads(cache.read_text())
    old["labels"]["u1"]["nisqa"] = old["labels"]["u1"].pop("nisqa_mos")
    cache.write_text(json.dumps(old))
    assert module._label(None, tmp_path / "inf.scp", tmp_path / "labels", metrics, 4, False)["u1"] == labels
    assert len(calls) == 2


def test_default_metrics_are_the_issue_suite(monkeypatch):
    """Issue #7: DNSMOS, Distill-MOS, PESQ, ESTOI, SDR, SI-SDR, LSD, MCD."""
    import urgent_jax
    from urgent_jax.sqa import build_dataset as module
    from urgent_jax.train import launch

    seen = {}
    monkeypatch.setattr(module, "build_dataset", lambda *a, **kw: seen.update(kw) or {})
    monkeypatch.setattr(urgent_jax, "prepare_runtime", lambda: None)  # no process-wide settings
    monkeypatch.setattr(launch, "quiet_logs", lambda: None)
    assert module.main(["--sources_dir", "s", "--out", "o"]) == 0
    assert sorted(seen["metrics"]) == sorted(
        ["dnsmos", "distill_mos", "pesq", "estoi", "sdr", "si_sdr", "lsd", "mcd"])


def test_enhancers_with_one_folder_name_are_refused(tmp_path):
    (tmp_path / "a" / "model").mkdir(parents=True)
    (tmp_path / "b" / "model").mkdir(parents=True)
    with pytest.raises(ValueError, match="same folder name 'model'"):
        build_dataset(str(tmp_path / "sources"), str(tmp_path / "out"),
                      enhance_workdirs=(str(tmp_path / "a" / "model"), str(tmp_path / "b" / "model")))
    (tmp_path / "c" / "clean").mkdir(parents=True)
    with pytest.raises(ValueError, match="folder name 'clean' is taken"):
        build_dataset(str(tmp_path / "sources"), str(tmp_path / "out"),
                      enhance_workdirs=(str(tmp_path / "c" / "clean"),))
    assert not (tmp_path / "out").exists()  # refused before any work
