"""scores.tsv holds what the [Metrics] functions (registry DNSMOS / Distill-MOS) and the audio
features give on the same audio (two real 9.2 s NOIZEUS utterances: one DNSMOS segment each)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from urgent_jax.audio.bandwidth import estimate_bandwidth, target_sample_rate
from urgent_jax.audio.quality import quality_features
from urgent_jax.curation.filter import filter_scores
from urgent_jax.curation.score import read_scores, score_corpus
from urgent_jax.metrics.registry import get_metric

NUM_SAMPLES = (147200, 147000)  # 9.2 s at 16 kHz


def test_scores_equal_metric_functions(shared_data, tmp_path):
    """Also --nodistill_mos (same batches: no new compiles): that column NaN, the others the same,
    and the filter refuses a rule on it."""
    signals, lines = [], []
    for name, n in zip(("sp03", "sp04_casino_sn0"), NUM_SAMPLES):
        x, fs = sf.read(shared_data / "noizeus" / f"{name}.wav", dtype="float32")
        path = tmp_path / f"{name}.wav"
        sf.write(path, x[:n], fs)
        signals.append(sf.read(path, dtype="float32")[0])
        lines.append(f"{name} {fs} {path}")
    scp = tmp_path / "speech.scp"
    scp.write_text("\n".join(lines) + "\n")
    summary = score_corpus(
        scp, tmp_path / "scores.tsv", batch_size=2, shard_index=0, shard_count=1,
        use_progress_bar=False,
    )
    assert summary["num_scored"] == 2
    scores = read_scores(tmp_path / "scores.tsv")
    lengths = np.array([len(s) for s in signals])
    batch = np.zeros((2, lengths.max()), np.float32)
    for i, s in enumerate(signals):
        batch[i, : len(s)] = s
    dnsmos, _ = get_metric("dnsmos").build()(None, batch, lengths, 16000)
    distill, _ = get_metric("distill_mos").build()(None, batch, lengths, 16000)
    bandwidth = np.asarray(estimate_bandwidth(batch, lengths, 16000))
    features = quality_features(batch, lengths, 16000)
    for i, uid in enumerate(("sp03", "sp04_casino_sn0")):
        row = scores[uid]
        for part in ("sig", "bak", "ovrl", "p808"):
            expected = dnsmos[f"DNSMOS_{part.upper()}"][i]
            assert row[f"dnsmos_{part}"] == pytest.approx(expected, abs=1e-4)
        assert row["distill_mos"] == pytest.approx(distill["DISTILL_MOS"][i], abs=1e-4)
        assert row["bandwidth_hz"] == bandwidth[i]
        assert row["target_fs"] == target_sample_rate(bandwidth[i])
        for name in ("speech_ratio", "snr_db", "clipping_ratio", "dc_offset"):
            assert row[name] == pytest.approx(float(features[name][i]), rel=1e-5, abs=1e-6)
        assert row["duration_s"] == lengths[i] / 16000 and row["fs"] == 16000

    without = tmp_path / "without" / "scores.tsv"
    summary = score_corpus(
        scp, without, batch_size=2, shard_index=0, shard_count=1, use_progress_bar=False,
        distill_mos=False,
    )
    assert summary["num_scored"] == 2
    for uid, row in read_scores(without).items():
        assert np.isnan(row["distill_mos"]) and np.isfinite(scores[uid]["distill_mos"])
        assert {k: v for k, v in row.items() if k != "distill_mos"} == {
            k: v for k, v in scores[uid].items() if k != "distill_mos"
        }
    with pytest.raises(ValueError, match="no utterance has a value for it"):
        filter_scores(without, dict(min_scores={"distill_mos": 3.0}), tmp_path / "curated")
    summary = filter_scores(
        without, dict(min_scores={"dnsmos_bak": 0.0}), tmp_path / "curated", make_figures=False
    )
    assert summary["num_kept"] == 2

