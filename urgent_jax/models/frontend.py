"""STFT front-end of the enhancement models (ESPnet STFTEncoder/STFTDecoder, REFERENCE.md §3.1).

Sizes are given at `default_fs` (48 kHz) and scaled to the input rate as ESPnet does:
n_fft' = n_fft·fs // default_fs, hop' and win' likewise, so every rate keeps the same window
duration and bin spacing. Periodic Hann window, reflect-centred frames, one-sided, not normalised;
spectra are laid out time-major, complex64 [batch, frames, bins]. Frames at or beyond an item's own
frame count are zeroed (the reference's length masking).

Padded batches are treated per item, so an item's spectrum and waveform are those it would have
alone: its last frames see its own reflect padding (the reference's see the batch's zero padding),
and decoding leaves frames beyond its count out of both the overlap-add and the window envelope and
zeroes samples beyond its length (torch.istft keeps them). Equal-length batches agree exactly.
Everything here runs in float32 whatever the model's compute dtype.

Inputs are checked where every enhancement model enters (`check_inputs`: `encode`, `decode` and
TF-GridNet call it): waveforms [batch, time], lengths [batch], sample_rate one of SAMPLE_RATES.
Concrete lengths must lie in [1, time]; traced lengths (under jit) cannot be checked when tracing
and are clipped to [0, time], so a length beyond the batch gives the result of length = time.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from urgent_jax.audio import stft as stft_lib
from urgent_jax.audio.levels import checked_lengths

DEFAULT_FS = 48000  # Hz, the rate at which front-end sizes are specified
SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)  # Hz, every rate URGENT uses


def check_sample_rate(sample_rate) -> int:
    """sample_rate as a Python int, one of SAMPLE_RATES (an integral float: 16000.0 -> 16000)."""
    is_number = isinstance(sample_rate, (int, float, np.number))
    if is_number and not isinstance(sample_rate, bool) and float(sample_rate) in SAMPLE_RATES:
        return int(sample_rate)
    rates = ", ".join(map(str, SAMPLE_RATES))
    raise ValueError(
        f"unsupported sampling rate {sample_rate!r} Hz: sample_rate must be one of {rates}"
    )


def check_inputs(wave, lengths, sample_rate, name: str = "noisy"):
    """Validated (wave, lengths int32 [B] or None, sample_rate int) of an enhancement model.

    wave must be [batch, time] (a single waveform needs a leading batch axis); lengths None or
    [batch]. Concrete lengths outside [1, time] raise; traced ones are clipped to [0, time]
    (urgent_jax.audio.levels.checked_lengths).
    """
    shape = tuple(jnp.shape(wave))
    if len(shape) != 2:
        raise ValueError(
            f"expected {name} waveforms as [batch, time] (one waveform: add a batch axis), "
            f"got shape {shape}"
        )
    lengths = checked_lengths(lengths, shape[0], shape[1], name="lengths")
    return wave, lengths, check_sample_rate(sample_rate)


def scaled_size(size: int, sample_rate: int, default_fs: int = DEFAULT_FS) -> int:
    """A size in samples at default_fs, rescaled to sample_rate: floor(size·fs / default_fs)."""
    return size * sample_rate // default_fs


def reflect_pad_per_item(wave, lengths, pad: int):
    """[B, T] -> [B, T + 2·pad]: reflect padding of `pad` samples at the start and each item's end.

    Equals jnp.pad(..., mode='reflect') for an item of full length; samples beyond an item's end
    plus its padding are zero.
    """
    num_samples = wave.shape[-1]
    pos = jnp.arange(num_samples + 2 * pad)[None, :] - pad  # signal position of each output sample
    end = lengths[:, None]
    src = jnp.where(pos < 0, -pos, jnp.where(pos < end, pos, 2 * end - 2 - pos))
    src = jnp.clip(src, 0, jnp.maximum(end - 1, 0))
    out = jnp.take_along_axis(wave, jnp.minimum(src, num_samples - 1), axis=-1)
    return jnp.where(pos < end + pad, out, 0.0)


@dataclasses.dataclass(frozen=True)
class STFTFrontEnd:
    """STFT analysis/synthesis pair whose window duration is fixed across sampling rates."""

    n_fft: int = 960  # samples at default_fs (960 = 20 ms at 48 kHz, BSRNN)
    hop_length: int = 480  # samples at default_fs
    win_length: int | None = None  # samples at default_fs; None: n_fft
    default_fs: int = DEFAULT_FS  # Hz

    def sizes(self, sample_rate: int) -> tuple[int, int, int]:
        """(n_fft, hop_length, win_length) in samples at sample_rate."""
        win = self.n_fft if self.win_length is None else self.win_length
        sizes = (self.n_fft, self.hop_length, win)
        n_fft, hop, win = (scaled_size(size, sample_rate, self.default_fs) for size in sizes)
        return n_fft, hop, win

    def num_bins(self, sample_rate: int) -> int:
        """One-sided bins at sample_rate."""
        return self.sizes(sample_rate)[0] // 2 + 1

    def num_frames(self, num_samples: int, sample_rate: int) -> int:
        """Frames of a num_samples signal (static)."""
        n_fft, hop, _ = self.sizes(sample_rate)
        return stft_lib.num_frames(num_samples, n_fft, hop)

    def frame_counts(self, lengths, sample_rate: int):
        """Valid frames per item for sample `lengths` [B] (int32 [B])."""
        n_fft, hop, _ = self.sizes(sample_rate)
        return stft_lib.frame_lengths(jnp.asarray(lengths), n_fft, hop).astype(jnp.int32)

    def window(self, sample_rate: int) -> np.ndarray:
        """Analysis/synthesis window of length n_fft (a shorter one centred with zeros), float64."""
        n_fft, _, win = self.sizes(sample_rate)
        w = stft_lib.hann_window(win)
        left = (n_fft - win) // 2
        return np.pad(w, (left, n_fft - win - left))

    def encode(self, wave, lengths, sample_rate: int):
        """wave float [B, T], lengths int [B] or None -> (complex64 [B, frames, bins], int32 [B]).

        Inputs are validated by `check_inputs`. Frames at or beyond each item's frame count are
        zero. With lengths, each item is reflect-padded at its own end, so the frames that straddle
        it are those of the item alone.
        """
        wave, lengths, sample_rate = check_inputs(wave, lengths, sample_rate)
        wave = jnp.asarray(wave, jnp.float32)
        n_fft, hop, win = self.sizes(sample_rate)
        if lengths is None:
            lengths = jnp.full(wave.shape[:1], wave.shape[-1], jnp.int32)
            spec = stft_lib.stft(wave, n_fft, hop, win_length=win, window="hann", center=True)
        else:
            padded = reflect_pad_per_item(wave, jnp.asarray(lengths), n_fft // 2)
            spec = stft_lib.stft(padded, n_fft, hop, win_length=win, window="hann", center=False)
        counts = self.frame_counts(lengths, sample_rate)
        return stft_lib.mask_frames(spec, counts), counts

    def decode(self, spec, lengths, sample_rate: int, num_samples: int):
        """complex [B, frames, bins], lengths int [B] or None -> float32 [B, num_samples].

        Windowed overlap-add divided by the squared-window envelope of each item's own valid frames.
        """
        sample_rate = check_sample_rate(sample_rate)
        n_fft, hop, _ = self.sizes(sample_rate)
        spec = jnp.asarray(spec, jnp.complex64)
        batch, count = spec.shape[0], spec.shape[-2]
        lengths = checked_lengths(lengths, batch, num_samples)
        if lengths is None:
            lengths = jnp.full((batch,), num_samples, jnp.int32)
        keep = jnp.arange(count)[None, :] < self.frame_counts(lengths, sample_rate)[:, None]
        keep = keep.astype(jnp.float32)[..., None]  # [B, frames, 1]
        w = jnp.asarray(self.window(sample_rate), jnp.float32)
        frames = jnp.fft.irfft(spec, n=n_fft, axis=-1).astype(jnp.float32) * w * keep
        wave = stft_lib.overlap_add(frames, hop)  # [B, n_fft + hop·(frames − 1)]
        envelope = stft_lib.overlap_add(jnp.broadcast_to(w**2 * keep, frames.shape), hop)
        wave = jnp.where(envelope > 1e-11, wave / jnp.maximum(envelope, 1e-11), 0.0)
        start = n_fft // 2
        wave = wave[:, start : start + num_samples]
        if wave.shape[-1] < num_samples:
            wave = jnp.pad(wave, ((0, 0), (0, num_samples - wave.shape[-1])))
        valid = jnp.arange(num_samples)[None, :] < jnp.asarray(lengths)[:, None]
        return jnp.where(valid, wave, 0.0)
