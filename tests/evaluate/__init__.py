"""Helpers for the evaluate tests: cheap fake metrics (registered for one test) and wav lists.

Fake metrics (numpy only, so the plumbing is tested without the slow real metrics):
- `fake_mae` (intrusive, output FAKE_MAE, lower is better, min 0.05 s): mean |ref - est| over the
  valid samples; NaN with reason "fake failure" when est[0] == FAIL_SAMPLE;
- `fake_level` (non-intrusive, outputs FAKE_MEAN and FAKE_PEAK, min 0.01 s): mean and max of |est|.
Every call appends (metric, sample_rate, est.shape) to CALLS.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import soundfile as sf

from urgent_jax.metrics import registry
from urgent_jax.metrics.registry import MetricSpec

FAIL_SAMPLE = -0.625  # est[0] == this: fake_mae reports a failure
CALLS: list[tuple[str, int, tuple[int, ...]]] = []


def _build_mae(options):
    def run(ref, est, lengths, sample_rate):
        CALLS.append(("fake_mae", sample_rate, est.shape))
        values, reasons = [], []
        for i, n in enumerate(lengths):
            if est[i, 0] == FAIL_SAMPLE:
                values.append(np.nan)
                reasons.append("fake failure: est[0] is the failure marker")
            else:
                diff = ref[i, :n].astype(np.float64) - est[i, :n].astype(np.float64)
                values.append(float(np.mean(np.abs(diff))))
                reasons.append("")
        return {"FAKE_MAE": np.array(values)}, reasons

    return run


def _build_level(options):
    def run(ref, est, lengths, sample_rate):
        assert ref is None  # non-intrusive metrics get no reference
        CALLS.append(("fake_level", sample_rate, est.shape))
        mean = [
            float(np.mean(np.abs(est[i, :n].astype(np.float64)))) for i, n in enumerate(lengths)
        ]
        peak = [float(np.max(np.abs(est[i, :n]))) for i, n in enumerate(lengths)]
        return {"FAKE_MEAN": np.array(mean), "FAKE_PEAK": np.array(peak)}, [""] * len(lengths)

    return run


FAKE_SPECS = (
    MetricSpec("fake_mae", ("FAKE_MAE",), True, False, 0.05, "test: mean abs error", _build_mae),
    MetricSpec(
        "fake_level", ("FAKE_MEAN", "FAKE_PEAK"), False, True, 0.01, "test: levels", _build_level
    ),
    MetricSpec("fake_plug", ("FAKE_PLUG",), False, True, 0.0, "test plug-in", None, "a gain file"),
)
FAKE_METRICS = ["fake_mae", "fake_level"]


@contextlib.contextmanager
def fake_metrics():
    """Register the fake metrics; restore the registry afterwards."""
    saved = dict(registry._REGISTRY)
    CALLS.clear()
    try:
        for spec in FAKE_SPECS:
            registry.register(spec)
        yield
    finally:
        registry._REGISTRY.clear()
        registry._REGISTRY.update(saved)


def write_wav(path, samples, sample_rate: int = 16000) -> str:
    """Float32 wav (exact values, NaN allowed)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, np.asarray(samples, np.float32), sample_rate, subtype="FLOAT")
    return str(path)


def write_scp(path, mapping) -> str:
    with open(path, "w") as f:
        for uid, value in mapping.items():
            f.write(f"{uid} {value}\n")
    return str(path)


def constant(value: float, num_samples: int) -> np.ndarray:
    return np.full(num_samples, value, np.float32)
