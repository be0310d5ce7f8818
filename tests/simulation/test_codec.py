"""Codec host callback: alignment at every rate, quality mapping, masking, jax transforms, failures,
and per-shard callbacks on 8 fake CPU devices."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
import soundfile

from urgent_jax.simulation import codec

SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
CODECS = (codec.CODEC_MP3, codec.CODEC_VORBIS, codec.CODEC_OPUS)
REPO_ROOT = Path(__file__).resolve().parents[2]


def _best_worst_qscale(codec_id: int) -> tuple[int, int]:
    lo, hi = codec.QSCALE_RANGES[codec_id]
    return (lo, hi) if codec_id == codec.CODEC_MP3 else (hi, lo)


def _test_signal(sample_rate: int, duration_s: float = 1.0, seed: int = 0) -> np.ndarray:
    """Exponential chirp + low-passed noise under a 3 Hz envelope, up to min(0.4 fs, 8 kHz)."""
    rng = np.random.default_rng(seed)
    num_samples = int(duration_s * sample_rate)
    t = np.arange(num_samples) / sample_rate
    f_hi_hz = min(0.4 * sample_rate, 8000.0)
    freq_hz = 150.0 * (f_hi_hz / 150.0) ** (t / duration_s)
    chirp = np.sin(2 * np.pi * np.cumsum(freq_hz) / sample_rate)
    noise = scipy.signal.lfilter(
        scipy.signal.firwin(101, f_hi_hz / (sample_rate / 2)), 1.0, rng.standard_normal(num_samples)
    )
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t)
    return (0.25 * envelope * (chirp + noise)).astype(np.float32)


def _snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    ref, est = ref.astype(np.float64), est.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2)))


def _xcorr_peak_lag(ref: np.ndarray, est: np.ndarray, max_lag: int = 2000) -> int:
    """Lag (samples, est later = positive) of the cross-correlation peak within +-max_lag."""
    corr = scipy.signal.correlate(est.astype(np.float64), ref.astype(np.float64), method="fft")
    lags = np.arange(-ref.size + 1, est.size)
    keep = np.abs(lags) <= max_lag
    return int(lags[keep][np.argmax(np.abs(corr[keep]))])


def _single(x: np.ndarray, codec_id: int, qscale: int, sample_rate: int) -> np.ndarray:
    return codec.codec_numpy(x[None], [x.size], [codec_id], [qscale], [True], sample_rate)[0]


def _batch(num_rows: int = 6, num_samples: int = 4000, seed: int = 1):
    """A mixed padded batch at 16 kHz: codecs cycle, one inactive row, one silent row."""
    rng = np.random.default_rng(seed)
    x = (0.2 * rng.standard_normal((num_rows, num_samples))).astype(np.float32)
    x[4] = 0.0  # silent
    lengths = np.array([4000, 3001, 2500, 4000, 3500, 1234][:num_rows], np.int32)
    codec_id = (np.arange(num_rows) % 3).astype(np.int32)
    qscale = np.array([2, 9, -1, 5, 4, 0][:num_rows], np.int32)
    active = np.array([True, True, True, False, True, True][:num_rows])
    return x, lengths, codec_id, qscale, active


# --- quality mapping ---


def test_compression_level_mapping():
    for q in range(1, 10):  # LAME VBR -V q
        assert codec.compression_level(codec.CODEC_MP3, q) == pytest.approx(q / 10)
    for q in range(10):  # libvorbis quality q / 10
        assert codec.compression_level(codec.CODEC_VORBIS, q) == pytest.approx(1 - q / 10)
    assert codec.compression_level(codec.CODEC_VORBIS, -1) == 1.0
    assert codec.compression_level(codec.CODEC_MP3, 10) == 0.99  # 1.0 fails in libsndfile
    # Opus: 8 kbps at qscale -1, 128 kbps at 9 on libsndfile's 256 -> 6 kbps line.
    assert codec.compression_level(codec.CODEC_OPUS, -1) == pytest.approx((256 - 8) / 250)
    assert codec.compression_level(codec.CODEC_OPUS, 9) == pytest.approx((256 - 128) / 250)
    for codec_id in CODECS:
        lo, hi = codec.QSCALE_RANGES[codec_id]
        qscales = np.arange(lo, hi + 1)
        levels = codec.compression_level(np.full(qscales.shape, codec_id), qscales)
        assert isinstance(levels, np.ndarray) and levels.shape == qscales.shape
        assert np.all((levels >= 0) & (levels <= 1))
        steps = np.diff(levels)  # worse quality -> higher level
        assert np.all(steps >= 0) if codec_id == codec.CODEC_MP3 else np.all(steps <= 0)
        best, worst = _best_worst_qscale(codec_id)
        assert codec.compression_level(codec_id, best) < codec.compression_level(codec_id, worst)
    with pytest.raises(ValueError):
        codec.compression_level(3, 4)


@pytest.mark.parametrize("sample_rate", [16000, 48000])
@pytest.mark.parametrize("codec_id", CODECS)
def test_lower_quality_uses_fewer_bits(codec_id, sample_rate):
    x = _test_signal(sample_rate, duration_s=2.0)
    encoder_sr = codec.codec_sample_rate(codec_id, sample_rate)
    best, worst = _best_worst_qscale(codec_id)
    mid = (best + worst) // 2
    num_bytes = [
        len(codec._encode(x, codec_id, codec.compression_level(codec_id, q), encoder_sr))
        for q in (best, mid, worst)
    ]
    assert num_bytes[0] > num_bytes[1] > num_bytes[2]


# --- alignment and quality at every rate ---


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES)
@pytest.mark.parametrize("codec_id", CODECS)
def test_length_alignment_and_snr(codec_id, sample_rate):
    x = _test_signal(sample_rate)[: sample_rate - 7]  # odd length
    best, worst = _best_worst_qscale(codec_id)
    y_best = _single(x, codec_id, best, sample_rate)
    y_worst = _single(x, codec_id, worst, sample_rate)
    assert y_best.shape == y_worst.shape == x.shape
    assert y_best.dtype == np.float32 and np.all(np.isfinite(y_best))
    assert abs(_xcorr_peak_lag(x, y_best)) <= 1
    snr_best_db, snr_worst_db = _snr_db(x, y_best), _snr_db(x, y_worst)
    assert snr_best_db > 5.0
    # Opus is not waveform matching at low rates; its bits are checked above.
    if codec_id != codec.CODEC_OPUS:
        assert snr_worst_db < snr_best_db - 3.0


def test_opus_resampled_rates_are_mapped_up():
    rates = {sr: codec.codec_sample_rate(codec.CODEC_OPUS, sr) for sr in SAMPLE_RATES}
    assert rates == {
        8000: 8000,
        16000: 16000,
        22050: 24000,
        24000: 24000,
        32000: 48000,
        44100: 48000,
        48000: 48000,
    }
    assert codec.codec_sample_rate(codec.CODEC_MP3, 44100) == 44100


# --- batch semantics ---


def test_masking_padding_silence_and_determinism():
    x, lengths, codec_id, qscale, active = _batch()
    x_in = x.copy()
    x[:, 3900:] = 0.7  # garbage in the padding region of the shorter rows
    y, failed = codec.codec_numpy(x, lengths, codec_id, qscale, active, 16000, return_failures=True)
    assert y.shape == x.shape and y.dtype == np.float32 and not failed.any()
    np.testing.assert_array_equal(y[3], x[3])  # inactive: bitwise unchanged
    for b in np.flatnonzero(active):
        assert np.all(y[b, lengths[b] :] == 0.0)
        assert np.all(np.isfinite(y[b]))
    assert np.max(np.abs(y[4])) < 1e-6  # silent row stays silent
    for b in (0, 1, 2):
        assert not np.array_equal(y[b, : lengths[b]], x[b, : lengths[b]])
        assert _snr_db(x[b, : lengths[b]], y[b, : lengths[b]]) > 0.0
    y_again = codec.codec_numpy(x, lengths, codec_id, qscale, active, 16000)
    np.testing.assert_array_equal(y, y_again)
    np.testing.assert_array_equal(x[:, :3900], x_in[:, :3900])  # input not modified


def test_leading_dims_and_edge_lengths():
    x, lengths, codec_id, qscale, active = _batch()
    y = codec.codec_numpy(x, lengths, codec_id, qscale, active, 16000)
    lead = [a.reshape(2, 3) for a in (lengths, codec_id, qscale, active)]
    y_lead = codec.codec_numpy(x.reshape(2, 3, -1), *lead, 16000)
    np.testing.assert_array_equal(y_lead.reshape(y.shape), y)
    # Zero and one valid samples; a scalar codec/qscale/active broadcasts over rows.
    z = codec.codec_numpy(x[:3], [0, 1, 4000], codec.CODEC_OPUS, 5, True, 22050)
    assert np.all(z[0] == 0.0) and np.all(z[1, 1:] == 0.0) and np.all(np.isfinite(z))


def test_loud_rows_are_encoded_at_full_scale():
    x = 40.0 * _test_signal(16000, duration_s=0.5)  # peak ~ 20: LAME aborts on huge inputs
    for codec_id in CODECS:
        y = _single(x, codec_id, _best_worst_qscale(codec_id)[0], 16000)
        assert _snr_db(x, y) > 5.0


# --- failures ---


def test_encoder_failure_keeps_row_and_counts(monkeypatch):
    x, lengths, codec_id, qscale, active = _batch()
    codec_id[:] = codec.CODEC_MP3  # no resampling: the data written is the row itself
    bad = 1
    real_write = soundfile.write

    def flaky_write(file, data, *args, **kwargs):
        if data.size == lengths[bad] and np.array_equal(data, x[bad, : lengths[bad]]):
            raise RuntimeError("simulated encoder failure")
        return real_write(file, data, *args, **kwargs)

    monkeypatch.setattr(soundfile, "write", flaky_write)
    codec.reset_failures()
    y, failed = codec.codec_numpy(x, lengths, codec_id, qscale, active, 16000, return_failures=True)
    assert codec.num_failures() == 1
    np.testing.assert_array_equal(failed, np.arange(6) == bad)
    np.testing.assert_array_equal(y[bad], x[bad])
    for b in (0, 2, 5):
        assert not np.array_equal(y[b], x[b])
        assert np.all(y[b, lengths[b] :] == 0.0)
    # Through the jitted callback: same output, counted again.
    apply_jit = jax.jit(codec.apply_codec, static_argnums=5)
    y_jit = apply_jit(x, lengths, codec_id, qscale, active, 16000)
    np.testing.assert_array_equal(np.asarray(y_jit), y)
    assert codec.num_failures() == 2


def test_non_finite_row_is_kept_without_encoding():
    x, lengths, codec_id, qscale, active = _batch()
    codec_id[:] = codec.CODEC_MP3  # LAME would abort the whole process on NaN / inf
    x[0, 10] = np.nan
    x[2, 20] = np.inf
    codec.reset_failures()
    y, failed = codec.codec_numpy(x, lengths, codec_id, qscale, active, 16000, return_failures=True)
    np.testing.assert_array_equal(failed, [True, False, True, False, False, False])
    np.testing.assert_array_equal(y[[0, 2]], x[[0, 2]])
    assert codec.num_failures() == 2
    assert np.all(np.isfinite(y[[1, 4, 5]]))


# --- jax transforms ---


def test_jit_eager_vmap_agree_with_numpy():
    x, lengths, codec_id, qscale, active = _batch()
    expected = codec.codec_numpy(x, lengths, codec_id, qscale, active, 16000)
    eager = codec.apply_codec(x, lengths, codec_id, qscale, active, 16000)
    apply_jit = jax.jit(codec.apply_codec, static_argnums=5)
    jitted = apply_jit(x, lengths, codec_id, qscale, active, 16000)
    per_row = jax.jit(jax.vmap(lambda *a: codec.apply_codec(*a, sample_rate=16000)))
    rows = per_row(x, lengths, codec_id, qscale, active)
    for y in (eager, jitted, rows):
        assert y.shape == x.shape and y.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(y), expected)


def test_gradient_is_straight_through():
    x, lengths, codec_id, qscale, active = _batch()
    w = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)

    @jax.jit
    def loss(x):
        return jnp.sum(codec.apply_codec(x, lengths, codec_id, qscale, active, 16000) * w)

    np.testing.assert_array_equal(np.asarray(jax.grad(loss)(jnp.asarray(x))), w)


# --- sharding ---

_SHARDED_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from urgent_jax.simulation import codec

    rng = np.random.default_rng(0)
    num_rows, num_samples, sample_rate = 16, 2000, 22050
    x = (0.2 * rng.standard_normal((num_rows, num_samples))).astype(np.float32)
    lengths = rng.integers(500, num_samples + 1, num_rows).astype(np.int32)
    codec_id = (np.arange(num_rows) % 3).astype(np.int32)
    qscale = rng.integers(1, 10, num_rows).astype(np.int32)
    active = np.arange(num_rows) % 5 != 4
    expected = codec.codec_numpy(x, lengths, codec_id, qscale, active, sample_rate)

    calls = []
    host_fn = codec.codec_numpy
    def counting(x, *args, **kwargs):
        calls.append(np.shape(x))
        return host_fn(x, *args, **kwargs)
    codec.codec_numpy = counting

    assert len(jax.devices()) == 8
    mesh = Mesh(np.array(jax.devices()), ("data",))
    batch_sharding = NamedSharding(mesh, P("data"))
    args = [jax.device_put(a, batch_sharding) for a in (x, lengths, codec_id, qscale, active)]
    f = jax.jit(lambda *a: codec.apply_codec_sharded(*a, sample_rate=sample_rate, mesh=mesh))
    y = f(*args)
    np.testing.assert_array_equal(np.asarray(y), expected)
    assert y.sharding.is_equivalent_to(batch_sharding, 2), y.sharding
    assert sorted(calls) == [(2, num_samples)] * 8, calls  # one host call per shard
    print("SHARDED_OK")
    """
)


def test_sharded_callback_keeps_batch_sharding():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", _SHARDED_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0 and "SHARDED_OK" in result.stdout, result.stderr[-4000:]
