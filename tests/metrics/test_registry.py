"""The metric registry: every built-in metric builds and runs through `get_metric(name).build()` on a
padded batch of real speech (jitted wrappers, output names), matching direct calls; plug-ins without
weights fail with a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from urgent_jax.metrics import registry
from urgent_jax.metrics.registry import MetricOptions, MetricUnavailableError, get_metric, list_metrics


@pytest.fixture(scope="module")
def batch(noizeus_pair):
    clean, noisy, fs = noizeus_pair
    n = 24000
    ref = np.stack([clean[:n], clean[4000 : 4000 + n]]).astype(np.float32)
    est = np.stack([noisy[:n], noisy[4000 : 4000 + n]]).astype(np.float32)
    lengths = np.array([n, 20000], np.int32)
    est[1, 20000:] = 0.0
    ref[1, 20000:] = 0.0
    return ref, est, lengths, fs


@pytest.mark.parametrize("name", ["estoi", "sdr", "si_sdr", "lsd", "mcd", "dnsmos", "pesq"])
def test_builtin_metric_runs_through_registry(name, batch):
    ref, est, lengths, fs = batch
    spec = get_metric(name)
    scores, notes = spec.build(MetricOptions(pesq_workers=1))(ref, est, lengths, fs)
    assert set(scores) == set(spec.outputs) and len(notes) == 2
    for output, values in scores.items():
        values = np.asarray(values, np.float64)
        assert values.shape == (2,) and np.all(np.isfinite(values)), (output, values)
    # the unpadded second item alone gives the same numbers (padding is masked)
    single, _ = spec.build(MetricOptions(pesq_workers=1))(ref[1:, :20000], est[1:, :20000], lengths[1:], fs)
    for output in spec.outputs:
        np.testing.assert_allclose(np.asarray(single[output])[0], np.asarray(scores[output])[1], rtol=2e-3,
                                   atol=2e-3, err_msg=output)


def test_si_sdr_through_registry_is_the_closed_form(batch):
    ref, est, lengths, fs = batch
    scores, _ = get_metric("si_sdr").build()(ref, est, lengths, fs)
    for i, n in enumerate(lengths):
        s, x = ref[i, :n].astype(np.float64), est[i, :n].astype(np.float64)
        s, x = s - s.mean(), x - x.mean()  # SI-SDR (Le Roux et al. 2019) on zero-mean signals
        target = (x @ s) / (s @ s) * s
        expected = 10 * np.log10(np.sum(target**2) / np.sum((x - target) ** 2))
        assert float(scores["SI_SDR"][i]) == pytest.approx(expected, abs=1e-3)


def test_plugins_need_local_weights(tmp_path):
    plugins = [s for s in list_metrics() if s.is_plugin]
    assert {"utmos", "nisqa", "scoreq", "speechbert_score", "lps", "spk_sim", "emo_sim", "lid", "char_acc"} <= {
        s.name for s in plugins}
    with pytest.raises(MetricUnavailableError, match="utmos"):
        get_metric("utmos").build(MetricOptions())
    with pytest.raises(MetricUnavailableError, match="does not exist"):
        get_metric("utmos").build(MetricOptions(weights={"utmos": str(tmp_path / "missing.ckpt")}))
    with pytest.raises(KeyError):
        get_metric("no_such_metric")
    assert registry.output_direction("PESQ") and not registry.output_direction("LSD")
