"""Lossy-codec distortion (MP3, Ogg Vorbis, Ogg Opus): the only host callback of the simulator.

Every other distortion is a pure jax function; a codec round trip needs the real encoders (LAME,
libvorbis, libopus through libsndfile), which run on the host. This module owns that boundary:
`codec_numpy` is the host function (numpy in, numpy out, never calls jax), `apply_codec` wraps it in
one `jax.pure_callback` per batch (jit- and vmap-able, straight-through gradient), and
`apply_codec_sharded` runs it per shard under `jax.shard_map` so that a batch sharded over a mesh
axis is not gathered onto one device (a plain callback under a sharded jit is; JAX_STACK_NOTES §4).

Encoding is in memory with soundfile (`sf.write` to a BytesIO, then `sf.read`), one row at a time,
only over the row's first `lengths[b]` samples; the output beyond the length is zero.

qscale -> compression_level. The official meta.tsv gives each codec item an integer qscale that
the reference hands to ffmpeg as the global quality (REFERENCE.md §2.1, §2.7). libsndfile instead
takes one `compression_level` in [0, 1] (0 = best) and interprets it per codec; the mapping below
reproduces the ffmpeg meaning where libsndfile can express it (checked: a file written with the
default settings, i.e. LAME -V4 and Vorbis q4, has the same size and decodes identically as one
written with compression_level 0.4 for MP3 and 0.6 for Vorbis):

* MP3, qscale 1..9 = LAME VBR quality (`-q:a` = `-V`, 0 best): libsndfile's default VBR mode uses
  compression_level * 10 as the LAME VBR quality, so level = qscale / 10, capped at 0.99 (1.0 makes
  libsndfile fail).
* Vorbis, qscale -1..9 = libvorbis quality (`-q:a`, 10 best): libsndfile encodes at VBR quality
  1 - compression_level, so level = 1 - qscale / 10. qscale -1 (quality -0.1) is below libsndfile's
  range and is clipped to level 1.0 (quality 0, the nearest).
* Opus, qscale -1..9: ffmpeg's libopus wrapper refuses to open with a non-zero global quality
  ("Quality-based encoding not supported"), so in the reference presumably only qscale 0 encoded
  (at ffmpeg's default bitrate) and the other draws raised (read from the ffmpeg source, not run;
  compare REFERENCE.md §6 item 5). We treat qscale as a quality index on the Vorbis scale: a target
  bitrate geometric from 8 kbps (qscale -1, narrow-band SILK) to 128 kbps (qscale 9, near
  transparent), kbps = 8 * 16 ** ((qscale + 1) / 10), converted with libsndfile's linear Opus law
  (level 0 -> 256 kbps, level 1 -> 6 kbps).

Measured bitrates (kbps incl. container; 42 s of NOIZEUS speech sp03-05, resampled for 48 kHz):

    codec   qscale  16 kHz  48 kHz      codec   qscale  16 kHz  48 kHz      codec  qscale  16/48 kHz
    mp3     1         60      79        vorbis  9         68      98        opus   9         130
    mp3     5         40      56        vorbis  4         41      52        opus   4        31 / 34
    mp3     9         27      39        vorbis  -1        25      39        opus   -1          8

Opus rates. libopus accepts only 8, 12, 16, 24 and 48 kHz. Other rates (22.05, 32, 44.1 kHz) are
resampled with `resample_numpy` up to the smallest supported rate above them (24, 48, 48 kHz),
encoded, decoded and resampled back.

Alignment. libsndfile already removes the encoder delay and padding (LAME/mpg123 gapless info, Ogg
pre-skip and granule position), so the decoded signal is sample-aligned with the input and has its
length; should a decoder ever return another length, the result is truncated or zero-padded at the
end, as the reference does (no delay compensation).

Robustness. The reference crashes when an encoder raises (REFERENCE.md §6 item 5). Here a row whose
round trip raises is returned unchanged, logged and counted (`num_failures`, or
`codec_numpy(..., return_failures=True)`). Rows with non-finite samples are such failures without
being encoded, because LAME aborts the whole process (a C assertion) on NaN or inf; rows louder than
full scale are scaled to peak 1 for the codec and back, since LAME also aborts on very large samples
and libsndfile's Opus path returns silence for them.
"""

from __future__ import annotations

import functools
import io
import logging
import threading

import jax
import jax.numpy as jnp
import numpy as np
import soundfile as sf
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from urgent_jax.audio.resample import resample_numpy

logger = logging.getLogger(__name__)

CODEC_MP3, CODEC_VORBIS, CODEC_OPUS = 0, 1, 2
CODEC_NAMES = ("mp3", "vorbis", "opus")
# Official qscale ranges (REFERENCE.md §2.1): mp3 randint[1, 10), ogg (vorbis/opus) randint[-1, 10).
QSCALE_RANGES = ((1, 9), (-1, 9), (-1, 9))  # (lowest, highest) per codec id, inclusive

OPUS_SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)  # Hz, the rates libopus encodes
OPUS_KBPS_AT_QSCALE = (8.0, 128.0)  # target bitrate at qscale -1 and 9, kbps (geometric in between)
_OPUS_LEVEL_KBPS = (256.0, 6.0)  # libsndfile Opus bitrate at compression_level 0 and 1, kbps
_MP3_MAX_LEVEL = 0.99  # compression_level 1.0 makes libsndfile's MP3 encoder fail

_SOUNDFILE_FORMATS = {  # codec id -> (format, subtype)
    CODEC_MP3: ("MP3", "MPEG_LAYER_III"),
    CODEC_VORBIS: ("OGG", "VORBIS"),
    CODEC_OPUS: ("OGG", "OPUS"),
}

_failures_lock = threading.Lock()  # callbacks of different shards may run concurrently
_num_failures = 0


def num_failures() -> int:
    """Rows whose round trip failed (returned unchanged) since import or `reset_failures`."""
    return _num_failures


def reset_failures() -> None:
    """Set the failure counter to zero (e.g. at the start of an epoch or a test)."""
    global _num_failures
    with _failures_lock:
        _num_failures = 0


def _count_failures(count: int) -> None:
    global _num_failures
    if count:
        with _failures_lock:
            _num_failures += count


def compression_level(codec_id, qscale) -> float | np.ndarray:
    """libsndfile compression_level in [0, 1] (0 = best) for an official qscale (module docstring).

    Host-side numpy; codec_id and qscale broadcast against each other. Scalars give a float.
    Increasing qscale lowers the quality for MP3 and raises it for Vorbis and Opus.
    """
    codec_id = np.asarray(codec_id)
    qscale = np.asarray(qscale, np.float64)
    mp3 = np.clip(qscale / 10.0, 0.0, _MP3_MAX_LEVEL)
    vorbis = np.clip(1.0 - qscale / 10.0, 0.0, 1.0)
    kbps_lo, kbps_hi = OPUS_KBPS_AT_QSCALE
    opus_kbps = kbps_lo * (kbps_hi / kbps_lo) ** ((qscale + 1.0) / 10.0)
    level0_kbps, level1_kbps = _OPUS_LEVEL_KBPS
    opus = np.clip((level0_kbps - opus_kbps) / (level0_kbps - level1_kbps), 0.0, 1.0)
    is_known = (codec_id == CODEC_MP3) | (codec_id == CODEC_VORBIS) | (codec_id == CODEC_OPUS)
    if not np.all(is_known):
        raise ValueError(
            f"unknown codec id in {codec_id.tolist()}; expected 0 (mp3), 1 (vorbis) or 2 (opus)"
        )
    level = np.where(codec_id == CODEC_MP3, mp3, np.where(codec_id == CODEC_VORBIS, vorbis, opus))
    return float(level) if level.ndim == 0 else level


def codec_sample_rate(codec_id: int, sample_rate: int) -> int:
    """Rate the encoder runs at: sample_rate, except Opus at a rate it lacks (next higher one)."""
    if codec_id != CODEC_OPUS or sample_rate in OPUS_SAMPLE_RATES:
        return sample_rate
    higher = [r for r in OPUS_SAMPLE_RATES if r >= sample_rate]
    if not higher:
        raise ValueError(f"Opus cannot encode {sample_rate} Hz (max {OPUS_SAMPLE_RATES[-1]} Hz)")
    return higher[0]


def _encode(x: np.ndarray, codec_id: int, level: float, sample_rate: int) -> bytes:
    """One mono signal [T] -> the bytes of an MP3 / Ogg file."""
    fmt, subtype = _SOUNDFILE_FORMATS[codec_id]
    buf = io.BytesIO()
    # No bitrate_mode: it is ignored for MP3 unless set with a level and raises for Ogg (notes §4).
    sf.write(buf, x, sample_rate, format=fmt, subtype=subtype, compression_level=level)
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    y, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return y[:, 0]


def _fit_length(y: np.ndarray, num_samples: int) -> np.ndarray:
    """Truncate or zero-pad at the end (the reference's alignment; no delay compensation)."""
    if y.size >= num_samples:
        return y[:num_samples]
    return np.pad(y, (0, num_samples - y.size))


def _roundtrip(x: np.ndarray, codec_id: int, qscale: int, sample_rate: int) -> np.ndarray:
    """Encode and decode one mono signal [T] -> float32 [T]; raises on any failure."""
    num_samples = x.size
    if num_samples == 0:
        return np.zeros(0, np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("non-finite samples (LAME would abort the process)")
    level = compression_level(codec_id, qscale)
    codec_sr = codec_sample_rate(codec_id, sample_rate)
    peak = float(np.max(np.abs(x)))
    gain = 1.0 / peak if peak > 1.0 else 1.0  # keep the codec input within full scale
    y = x.astype(np.float64) * gain
    if codec_sr != sample_rate:
        y = resample_numpy(y, sample_rate, codec_sr)
    y = _decode(_encode(y.astype(np.float32), codec_id, level, codec_sr))
    if codec_sr != sample_rate:
        y = resample_numpy(y, codec_sr, sample_rate)
    y = _fit_length(y, num_samples)
    return (y.astype(np.float64) / gain).astype(np.float32)


def codec_numpy(
    x: np.ndarray,
    lengths,
    codec_id,
    qscale,
    active,
    sample_rate: int,
    *,
    return_failures: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Codec round trip of a padded batch on the host.

    x: float32 [..., T]; lengths (valid samples), codec_id, qscale (official meta.tsv value) and
    active (bool) broadcast to x.shape[:-1]. Active rows get their first lengths[b] samples encoded
    and decoded, zeros after; inactive rows and rows whose round trip fails are returned unchanged.
    Returns float32 [..., T], plus a bool [...] failure mask if return_failures.
    """
    x = np.asarray(x, np.float32)
    lead, num_samples = x.shape[:-1], x.shape[-1]
    rows = x.reshape(-1, num_samples)
    lengths, codec_id, qscale = (
        np.broadcast_to(a, lead).ravel() for a in (lengths, codec_id, qscale)
    )
    active = np.broadcast_to(np.asarray(active, bool), lead).ravel()
    out = rows.copy()
    failed = np.zeros(rows.shape[0], bool)
    for i, (length, cid, q, is_active) in enumerate(zip(lengths, codec_id, qscale, active)):
        if not is_active:
            continue
        n = int(np.clip(length, 0, num_samples))
        try:
            y = _roundtrip(rows[i, :n], int(cid), int(q), int(sample_rate))
        except Exception as e:  # noqa: BLE001 - any codec error keeps the row (REFERENCE.md §6.5)
            failed[i] = True
            logger.warning(
                "codec %s (qscale %s) failed on row %d (%d samples at %d Hz), kept unchanged: %r",
                CODEC_NAMES[cid] if 0 <= cid < len(CODEC_NAMES) else cid,
                q,
                i,
                n,
                sample_rate,
                e,
            )
            continue
        out[i, :n] = y
        out[i, n:] = 0.0
    _count_failures(int(failed.sum()))
    out = out.reshape(x.shape)
    return (out, failed.reshape(lead)) if return_failures else out


def _codec_callback(x, lengths, codec_id, qscale, active, sample_rate: int):
    # broadcast_all: under vmap the host gets the whole (broadcast) batch in one call.
    return jax.pure_callback(
        functools.partial(codec_numpy, sample_rate=sample_rate),
        jax.ShapeDtypeStruct(x.shape, jnp.float32),
        x,
        lengths,
        codec_id,
        qscale,
        active,
        vmap_method="broadcast_all",
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _codec_straight_through(x, lengths, codec_id, qscale, active, sample_rate: int):
    return _codec_callback(x, lengths, codec_id, qscale, active, sample_rate)


def _codec_fwd(x, lengths, codec_id, qscale, active, sample_rate: int):
    y = _codec_callback(x, lengths, codec_id, qscale, active, sample_rate)
    return y, (lengths, codec_id, qscale, active)


def _codec_bwd(sample_rate: int, residuals, y_bar):
    # Straight-through: identity for x; integer / bool arguments take float0 zero cotangents.
    del sample_rate
    return (y_bar, *(np.zeros(a.shape, jax.dtypes.float0) for a in residuals))


_codec_straight_through.defvjp(_codec_fwd, _codec_bwd)


def _as_row_args(x, lengths, codec_id, qscale, active) -> tuple:
    lead = jnp.shape(x)[:-1]
    return (
        jnp.broadcast_to(jnp.asarray(lengths, jnp.int32), lead),
        jnp.broadcast_to(jnp.asarray(codec_id, jnp.int32), lead),
        jnp.broadcast_to(jnp.asarray(qscale, jnp.int32), lead),
        jnp.broadcast_to(jnp.asarray(active, jnp.bool_), lead),
    )


def apply_codec(x, lengths, codec_id, qscale, active, sample_rate: int):
    """`codec_numpy` as one host callback per batch: x [..., T] -> same shape and dtype.

    lengths, codec_id, qscale (int) and active (bool) broadcast to x.shape[:-1]; sample_rate is
    static. Works under jit and vmap; the gradient is straight-through (identity for x).
    """
    x = jnp.asarray(x)
    y = _codec_straight_through(
        x.astype(jnp.float32), *_as_row_args(x, lengths, codec_id, qscale, active), int(sample_rate)
    )
    return y.astype(x.dtype)


def apply_codec_sharded(
    x,
    lengths,
    codec_id,
    qscale,
    active,
    sample_rate: int,
    mesh: Mesh,
    axis: str | tuple[str, ...] = "data",
):
    """`apply_codec` per shard of the batch dimension over mesh axis `axis`: one host call per
    shard, output sharded like the input (P(axis)). x [B, ...] with B divisible by the axis size."""
    x = jnp.asarray(x)
    args = (x, *_as_row_args(x, lengths, codec_id, qscale, active))
    spec = P(axis)
    per_shard = jax.shard_map(
        functools.partial(apply_codec, sample_rate=int(sample_rate)),
        mesh=mesh,
        in_specs=(spec,) * len(args),
        out_specs=spec,
        # The callback's output carries no varying-axis type, so with the check on, the
        # straight-through cotangent (typed like the output) would not match x's type.
        check_vma=False,
    )
    return per_shard(*args)
