"""Audio file I/O through soundfile: read to float32 (channels, time), write wav/flac.

Every failure raises AudioFileError naming the file, so callers can report or skip it. Reads also
accept packed paths `packed:<DIR>#<uid>` (one utterance of an ArrayRecord pack, see
`urgent_jax.audio.packed`): `audio_info`, `read_audio` and `audio_exists` dispatch them there, so
any manifest may list packed utterances in place of files.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf

from urgent_jax.audio.packed import (
    PackedAudioError,
    is_packed,
    packed_exists,
    packed_info,
    read_packed,
)
from urgent_jax.audio.resample import resample, resampled_length


class AudioFileError(Exception):
    """A file that cannot be read or written as audio; the message names the file and the reason."""


def audio_exists(path: str | os.PathLike) -> bool:
    """Whether `path` is an existing file, or a packed path whose pack directory lists its uid."""
    path = os.fspath(path)
    return packed_exists(path) if is_packed(path) else os.path.exists(path)


def audio_info(path: str | os.PathLike) -> tuple[int, int, int]:
    """(sample_rate, num_samples, num_channels) from the file header, without reading samples
    (for a packed path: from the pack index; packed utterances have one channel)."""
    if is_packed(path):
        try:
            return packed_info(path)
        except PackedAudioError as e:
            raise AudioFileError(str(e)) from e
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types; give one with the path
        raise AudioFileError(f"{path}: cannot read audio header ({e})") from e
    return int(info.samplerate), int(info.frames), int(info.channels)


def _bucket(n: int) -> int:
    """Round n up to one of 8 sizes per octave (bounds the number of compiled resampler shapes)."""
    if n <= 1024:
        return 1024
    step = 1 << max(0, (n - 1).bit_length() - 3)
    return -(-n // step) * step


def resample_host(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Resample a host array [..., T] with `audio.resample`, padding T to a bucket so that reading many
    files of different lengths compiles a bounded number of shapes. Zero padding at the end does not
    change the kept outputs (the resampler zero-pads beyond the signal anyway)."""
    if orig_sr == new_sr:
        return np.asarray(x, np.float32)
    n = x.shape[-1]
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, _bucket(n) - n)])
    y = np.asarray(resample(padded, orig_sr, new_sr))
    return y[..., : resampled_length(n, orig_sr, new_sr)]


def read_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    first_channel: bool = False,
    start: int = 0,
    num_samples: int | None = None,
) -> tuple[np.ndarray, int]:
    """Read audio -> (float32 [channels, time], sample_rate).

    first_channel keeps only channel 0 ([1, time]). sample_rate resamples to that rate if the file's rate
    differs (then the returned rate is `sample_rate`). start / num_samples read a segment (in samples at
    the file's own rate) without decoding the rest. A packed path (`packed:<DIR>#<uid>`) reads the
    utterance from its pack (one channel).
    """
    if is_packed(path):
        try:
            data, sr = read_packed(path, start=int(start), num_samples=num_samples)
        except PackedAudioError as e:
            raise AudioFileError(str(e)) from e
    else:
        data, sr = _read_file(str(path), start, num_samples)
    if first_channel:
        data = data[:1]
    if sample_rate is not None and sr != sample_rate:
        data = resample_host(data, sr, sample_rate)
        sr = sample_rate
    return data, int(sr)


def _read_file(path: str, start: int, num_samples: int | None) -> tuple[np.ndarray, int]:
    """soundfile read -> (float32 [channels, time], rate)."""
    if not os.path.exists(path):
        raise AudioFileError(f"{path}: no such file")
    try:
        frames = -1 if num_samples is None else int(num_samples)
        data, sr = sf.read(path, start=int(start), frames=frames, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioFileError(f"{path}: cannot decode audio ({e})") from e
    return np.ascontiguousarray(data.T), int(sr)  # [channels, time]


def write_audio(
    path: str | os.PathLike, audio, sample_rate: int, subtype: str | None = None, make_dirs: bool = True
) -> None:
    """Write [channels, time] or [time] audio; the format follows the extension (.wav, .flac, ...).

    Float audio has full scale 1.0; int16 / int32 audio is written as PCM sample values (as
    soundfile does), so int16 samples are not mistaken for floats and clipped. Other integer dtypes
    raise AudioFileError. subtype defaults to soundfile's default for the format (16-bit PCM for wav
    and flac, as the reference).
    """
    path = str(path)
    x = np.asarray(audio)
    if x.dtype.kind in "iub":
        if x.dtype not in (np.int16, np.int32):
            raise AudioFileError(
                f"{path}: integer audio must be int16 or int32 PCM, got {x.dtype} "
                "(convert to float with full scale 1.0)"
            )
    else:
        x = x.astype(np.float32)
    if x.ndim == 2:
        x = x.T  # soundfile wants [time, channels]
    elif x.ndim != 1:
        raise AudioFileError(f"{path}: audio must be 1-D or [channels, time], got shape {x.shape}")
    if make_dirs:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        sf.write(path, x, int(sample_rate), subtype=subtype)
    except Exception as e:
        raise AudioFileError(f"{path}: cannot write audio ({e})") from e
