"""Synthetic room impulse responses for the demo corpus (a stand-in for the simulated SLR28 RIRs).

An RIR here is a band-limited direct path after a propagation delay, a handful of discrete early
reflections, and a diffuse late tail: noise split into octave bands, each band decaying
exponentially with its own reverberation time (the requested RT60 up to 1 kHz, shorter above, as
air and wall absorption make real rooms less reverberant at high frequencies). The tail energy
relative to the direct path follows a drawn direct-to-reverberant ratio. The result is scaled to
peak 1, which is the direct path.
"""

from __future__ import annotations

import numpy as np

OCTAVE_CENTRES_HZ = (125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0)
_DECAY_DB = 60.0  # the RT60 definition: time for the energy to fall by 60 dB
_SINC_HALF_WIDTH = 8  # samples each side of a fractional-delay impulse


def band_rt60_s(rt60_s: float, centres_hz) -> np.ndarray:
    """Reverberation time (s) per band: rt60_s up to 1 kHz, then 15 % less per octave (>= 40 %)."""
    octaves_above_1k = np.maximum(np.log2(np.asarray(centres_hz, np.float64) / 1000.0), 0.0)
    return rt60_s * np.maximum(1.0 - 0.15 * octaves_above_1k, 0.4)


def _add_impulse(rir: np.ndarray, position: float, amplitude: float) -> None:
    """Add a Hann-windowed sinc (a fractional delay of `position` samples) into rir, in place."""
    centre = int(np.floor(position))
    n = np.arange(centre - _SINC_HALF_WIDTH + 1, centre + _SINC_HALF_WIDTH + 1)
    offset = n - position
    taps = np.sinc(offset) * (0.5 + 0.5 * np.cos(np.pi * offset / _SINC_HALF_WIDTH))
    keep = (n >= 0) & (n < rir.size)
    rir[n[keep]] += amplitude * taps[keep]


def _octave_masks(num_samples: int, sample_rate: int, centres_hz: np.ndarray) -> np.ndarray:
    """Complementary band weights [bands, rfft bins]: cos^2 / sin^2 cross-fades in log frequency
    between neighbouring centres (they sum to 1 above 20 Hz), bins below 20 Hz removed."""
    freqs = np.fft.rfftfreq(num_samples, 1.0 / sample_rate)
    num_bands = len(centres_hz)
    position = np.log2(np.maximum(freqs, 1e-3) / centres_hz[0])
    position = np.clip(position, 0.0, num_bands - 1)
    lower = np.minimum(np.floor(position).astype(int), num_bands - 1)
    upper = np.minimum(lower + 1, num_bands - 1)
    fade = 0.5 * np.pi * (position - lower)
    bins = np.arange(freqs.size)
    masks = np.zeros((num_bands, freqs.size))
    np.add.at(masks, (lower, bins), np.cos(fade) ** 2)
    np.add.at(masks, (upper, bins), np.sin(fade) ** 2)
    masks[:, freqs < 20.0] = 0.0
    return masks


def synthesize_rir(
    sample_rate: int,
    rt60_s: float,
    rng: np.random.Generator,
    delay_s: float | None = None,
    drr_db: float | None = None,
) -> np.ndarray:
    """One synthetic RIR -> float32 [num_samples], peak 1 at the direct path.

    rt60_s is the reverberation time up to 1 kHz; delay_s the direct-path delay (default U[1, 6] ms,
    0.3-2 m); drr_db the direct-to-reverberant energy ratio (default U[-6, 3] dB). The length is the
    delay plus 1.2 rt60_s plus 50 ms, with a 10 ms fade-out.
    """
    if rt60_s <= 0:
        raise ValueError(f"rt60_s must be positive, got {rt60_s}")
    delay_s = rng.uniform(0.001, 0.006) if delay_s is None else float(delay_s)
    drr_db = rng.uniform(-6.0, 3.0) if drr_db is None else float(drr_db)
    num_samples = int(np.ceil((delay_s + 1.2 * rt60_s + 0.05) * sample_rate))
    direct_pos = delay_s * sample_rate
    t = (np.arange(num_samples) - direct_pos) / sample_rate  # s after the direct path

    # Late tail: octave-band noise with band-specific exponential decay, pink-ish spectrum (equal
    # energy per octave, random high-frequency tilt) and a short build-up after the direct path.
    centres = np.array([c for c in OCTAVE_CENTRES_HZ if c / np.sqrt(2.0) < sample_rate / 2.0])
    masks = _octave_masks(num_samples, sample_rate, centres)
    noise_spec = np.fft.rfft(rng.standard_normal(num_samples))
    bands = np.fft.irfft(noise_spec[None, :] * masks, n=num_samples)  # [bands, T]
    bands /= np.sqrt(np.mean(bands**2, axis=-1, keepdims=True)) + 1e-12
    tilt_db = rng.uniform(1.0, 4.0) * np.maximum(np.log2(centres / 1000.0), 0.0)  # dB per octave
    # amplitude decay rate (1/s): 20 log10(e) * rate * rt60 = 60 dB
    decay_rate = _DECAY_DB / (20.0 * np.log10(np.e) * band_rt60_s(rt60_s, centres))
    late_t = np.maximum(t, 0.0)
    envelope = np.exp(-decay_rate[:, None] * late_t[None, :]) * 10.0 ** (-tilt_db[:, None] / 20.0)
    build_up_s = rng.uniform(0.002, 0.01)
    tail = np.sum(bands * envelope, axis=0) * (1.0 - np.exp(-late_t / build_up_s)) * (t > 0)
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / (np.sum(tail**2) + 1e-12))  # direct energy ~ 1

    # Early reflections: 4-12 image-like arrivals within 40 ms, decaying with the room.
    reflections = np.zeros(num_samples)
    num_reflections = int(rng.integers(4, 13))
    arrivals_s = np.sort(rng.uniform(0.001, 0.04, num_reflections))
    gains = rng.uniform(0.1, 0.5, num_reflections) * rng.choice([-1.0, 1.0], num_reflections)
    gains *= np.exp(-arrivals_s * _DECAY_DB / (20.0 * np.log10(np.e) * rt60_s))
    for arrival_s, gain in zip(arrivals_s, gains):
        position = direct_pos + arrival_s * sample_rate
        if position < num_samples - _SINC_HALF_WIDTH:
            _add_impulse(reflections, position, gain)

    direct = np.zeros(num_samples)
    _add_impulse(direct, direct_pos, 1.0)
    rest = tail + reflections
    # Keep the direct path the strongest sample (it is band-limited, so its peak may be < 1).
    direct_peak = np.max(np.abs(direct))
    rest_peak = np.max(np.abs(rest))
    if rest_peak > 0.8 * direct_peak:
        rest *= 0.8 * direct_peak / rest_peak
    rir = direct + rest
    fade = min(int(0.01 * sample_rate), num_samples // 4)
    rir[num_samples - fade :] *= np.linspace(1.0, 0.0, fade)
    return (rir / np.max(np.abs(rir))).astype(np.float32)
