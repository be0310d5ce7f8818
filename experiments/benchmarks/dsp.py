"""DSP throughput: ours (jit, one batch of 16 x 4 s) vs scipy/numpy/soxr one example at a time.

    python experiments/benchmarks/dsp.py [--batch 16] [--seconds 4] [--repeats 5]

Prints audio-seconds processed per wall-second for STFT, iSTFT, resampling 48k -> 16k and FFT
convolution with a 1 s RIR, side by side, and the ratio ours / reference. The reference runs each
example separately on the host, the way per-utterance data pipelines call it.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np
import scipy.signal

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))

from timing import median_time  # noqa: E402

from urgent_jax.audio import filters, resample, stft  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    rows = []

    def bench(name, fs, ours_fn, ref_fn, x):
        audio_s = x.shape[0] * x.shape[-1] / fs
        ours = jax.jit(ours_fn)
        t_ours = median_time(lambda: jax.block_until_ready(ours(x)), args.repeats)
        t_ref = median_time(lambda: [ref_fn(row) for row in x], args.repeats)
        rows.append((name, audio_s / t_ours, audio_s / t_ref))

    for fs, n_fft, hop in ((16000, 320, 160), (48000, 960, 480)):
        x = rng.standard_normal((args.batch, int(args.seconds * fs))).astype(np.float32)
        bench(
            f"STFT {fs // 1000} kHz ({n_fft}/{hop})",
            fs,
            lambda a, n_fft=n_fft, hop=hop: stft.stft(a, n_fft, hop),
            lambda r, n_fft=n_fft, hop=hop: scipy.signal.stft(
                r, nperseg=n_fft, noverlap=n_fft - hop, boundary="even", padded=False
            ),
            x,
        )
        spec = np.asarray(stft.stft(x, n_fft, hop))
        ref_specs = np.swapaxes(spec, -1, -2)
        n = x.shape[-1]

        def ours_istft(s, n_fft=n_fft, hop=hop, n=n):
            return stft.istft(s, n_fft, hop, length=n)

        t_ours = median_time(lambda: jax.block_until_ready(jax.jit(ours_istft)(spec)), args.repeats)
        t_ref = median_time(
            lambda: [scipy.signal.istft(s, nperseg=n_fft, noverlap=n_fft - hop) for s in ref_specs],
            args.repeats,
        )
        audio_s = args.batch * args.seconds
        rows.append((f"iSTFT {fs // 1000} kHz ({n_fft}/{hop})", audio_s / t_ours, audio_s / t_ref))

    x48 = rng.standard_normal((args.batch, int(args.seconds * 48000))).astype(np.float32)
    up, down, _ = resample.design_resampler(48000, 16000)
    bench(
        "resample 48k->16k vs resample_poly",
        48000,
        lambda a: resample.resample(a, 48000, 16000),
        lambda r: scipy.signal.resample_poly(r, up, down),
        x48,
    )
    try:
        import soxr

        bench(
            "resample 48k->16k vs soxr HQ",
            48000,
            lambda a: resample.resample(a, 48000, 16000),
            lambda r: soxr.resample(r, 48000, 16000, "HQ"),
            x48,
        )
    except ImportError:
        print("soxr not installed: skipping the soxr comparison")

    for fs in (16000, 48000):
        x = rng.standard_normal((args.batch, int(args.seconds * fs))).astype(np.float32)
        rir = (rng.standard_normal(fs) * np.exp(-np.arange(fs) / (0.1 * fs))).astype(np.float32)
        bench(
            f"FFT conv, 1 s RIR, {fs // 1000} kHz",
            fs,
            lambda a, rir=rir: filters.fft_convolve(a, rir, mode="truncated"),
            lambda r, rir=rir: scipy.signal.fftconvolve(r, rir)[: len(r)],
            x,
        )

    print(f"\nbackend: {jax.default_backend()} ({jax.devices()[0].device_kind}), batch {args.batch} x "
          f"{args.seconds:g} s, median of {args.repeats}")
    print(f"{'operation':40s} {'ours audio-s/s':>15s} {'ref audio-s/s':>15s} {'ratio':>8s}")
    for name, ours, ref in rows:
        print(f"{name:40s} {ours:15.0f} {ref:15.0f} {ours / ref:7.2f}x")


if __name__ == "__main__":
    main()
