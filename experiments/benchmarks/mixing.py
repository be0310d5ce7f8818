"""Dynamic-mixing throughput: our batched jit simulator vs a per-example numpy/scipy renderer.

    python experiments/benchmarks/mixing.py [--batch 16] [--seconds 4] [--repeats 3] [--rates 16000 48000]

Both sides render the same sources with the same drawn parameters (official training distribution,
REFERENCE.md §2.1): 70 Hz high-pass (filtfilt), RIR + early-RIR convolution, noise at an SNR on active
regions (or wind noise through the side-chain compressor), augmentations in drawn order, joint peak
normalisation. The reference does it one example at a time on the CPU the way the official
`DynamicMixingDataset` does (scipy filtfilt / convolve, librosa resampling for the bandwidth
limitation, numpy quantiles, a per-sample compressor loop for wind, soundfile for codecs). Sources are
in memory on both sides (file reading excluded). Rows: all distortions but codec, then with codec.
Prints audio-seconds rendered per wall-second and the ratio.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))

from timing import median_time  # noqa: E402

from urgent_jax import configure_cpu_kernels, configure_host_allocator  # noqa: E402
from urgent_jax.audio.filters import highpass_taps  # noqa: E402
from urgent_jax.simulation import codec as codec_lib  # noqa: E402
from urgent_jax.simulation.mixer import Sources, simulate  # noqa: E402
from urgent_jax.simulation.params import RESAMPLE_METHODS, sample_batch_params  # noqa: E402
from urgent_jax.simulation.wind import generate_wind_noise  # noqa: E402


# --- per-example reference renderer ---------------------------------------------------------------


def _non_silence(x, threshold=0.01, frame=1024, shift=512):
    n = len(x)
    if n < frame:
        return np.ones(n, bool)
    nadd = (-(n - frame) % shift) % frame
    xp = np.concatenate([x, np.zeros(nadd)])
    frames = np.lib.stride_tricks.sliding_window_view(xp, frame)[::shift]
    power = (frames**2).mean(-1)
    if power.mean() == 0:
        return np.ones(n, bool)
    det = np.repeat(power / power.mean() > threshold, shift)
    return np.concatenate([det, np.full(n - len(det), det[-1])])


def _early(h, fs):
    a = np.abs(h)
    m = np.argmax(a)
    n0 = np.argmax(a[: m + 1] > 0.1 * a[m])
    out = h.copy()
    out[n0 + int(0.05 * fs) :] = 0
    return out


def _compress(main, side, fs, threshold, ratio, attack, release, sc_gain, knee=2.82843):
    thres = np.log(threshold)
    ks, kt = np.log(threshold / np.sqrt(knee)), np.log(threshold * np.sqrt(knee))
    adj = (threshold / np.sqrt(knee)) ** 2
    ck = (kt - thres) / ratio + thres
    ac = min(1.0, 1.0 / (attack * fs / 4000.0))
    rc = min(1.0, 1.0 / (release * fs / 4000.0))
    out = np.empty_like(main)
    env = 0.0
    for i in range(len(main)):
        a = (side[i] * sc_gain) ** 2
        env += (a - env) * (ac if a > env else rc)
        g = 1.0
        if env > 0 and env > adj:
            s = 0.5 * np.log(env)
            gain = (s - thres) / ratio + thres
            if s < kt:
                w = kt - ks
                t = (s - ks) / w
                m0, m1 = w, w / ratio
                gain = ((2 * ks + m0 - 2 * ck + m1) * t**3 + (-3 * ks - 2 * m0 + 3 * ck - m1) * t**2
                        + m0 * t + ks)
            g = np.exp(gain - s)
        out[i] = main[i] * g
    return out


def reference_render(speech, noise, rir, p, fs, use_codec):
    """One example, numpy/scipy, in the official order (REFERENCE.md §2.3)."""
    import librosa

    speech = scipy.signal.filtfilt(highpass_taps(fs), 1.0, speech.astype(np.float64))
    n = len(speech)
    if p["use_rir"]:
        noisy = scipy.signal.convolve(speech, rir)[:n]
        target = scipy.signal.convolve(speech, _early(rir, fs))[:n]
    else:
        noisy, target = speech, speech
    rng = np.random.default_rng(0)
    if len(noise) > n:
        off = rng.integers(0, len(noise) - n)
        noise = noise[off : off + n]
    p_s = np.mean(noisy[_non_silence(noisy)] ** 2)
    p_n = np.mean(noise[_non_silence(noise)] ** 2)
    noise = noise * 10 ** (-p["snr_db"] / 20) * np.sqrt(p_s) / np.sqrt(max(p_n, 1e-10))
    if p["use_wind"]:
        k = 0.9 / max(np.abs(noisy).max(), np.abs(noise).max())
        comp = _compress(noisy * k, noise * k, fs, p["wind_threshold"], p["wind_ratio"],
                         p["wind_attack_ms"], p["wind_release_ms"], p["wind_sc_gain"]) / k
        mix = comp + noise
        if p["wind_clipping"]:
            c = p["wind_clipping_threshold"]
            mix = np.maximum(mix, c * mix.min())
            mix = np.minimum(mix, c * mix.max())
    else:
        mix = noisy + noise
    order = sorted((s, t) for t, s in enumerate(p["aug_position"]) if s >= 0)
    for _, kind in order:
        if kind == 0 and p["bw_method"] >= 0:
            method = RESAMPLE_METHODS[p["bw_method"]]
            res_type = {"scipy": "fft", "polyphase": "polyphase"}.get(method, method)
            try:
                y = librosa.resample(mix, orig_sr=fs, target_sr=int(p["bw_fs_new"]), res_type=res_type)
                y = librosa.resample(y, orig_sr=int(p["bw_fs_new"]), target_sr=fs, res_type=res_type)
            except Exception:  # kaiser_* need resampy
                y = librosa.resample(mix, orig_sr=fs, target_sr=int(p["bw_fs_new"]), res_type="soxr_hq")
                y = librosa.resample(y, orig_sr=int(p["bw_fs_new"]), target_sr=fs, res_type="soxr_hq")
            mix = y[:n]
        elif kind == 1:
            lo, hi = np.quantile(mix, [p["clip_q_min"], p["clip_q_max"]])
            mix = np.clip(mix, lo, hi)
        elif kind == 2 and use_codec:
            mix = codec_lib.codec_numpy(mix[None].astype(np.float32), [n], [p["codec_id"]],
                                        [p["codec_qscale"]], [True], fs)[0].astype(np.float64)
        elif kind == 3:
            packet = 20 * fs // 1000
            for i in np.flatnonzero(p["packet_lost"]):
                mix[i * packet : (i + 1) * packet] = 0
    scale = 0.9 / max(np.abs(mix).max(), np.abs(target).max(), np.abs(noise).max(), 1e-6)
    return target * scale, mix * scale


# --- benchmark ------------------------------------------------------------------------------------


def _sources(rng, batch, n, fs):
    t = np.arange(n) / fs
    speech = np.stack([
        (np.sin(2 * np.pi * (120 + 40 * rng.random()) * t) * (np.sin(2 * np.pi * 3 * t) > 0)
         + 0.05 * rng.standard_normal(n)) for _ in range(batch)]).astype(np.float32)  # fmt: skip
    noise = rng.standard_normal((batch, n + fs)).astype(np.float32)
    wind = generate_wind_noise((n + fs) / fs, fs, 5.0, 0)
    rir_len = fs // 2
    decay = np.exp(-np.arange(rir_len) / (0.06 * fs))
    rir = (rng.standard_normal((batch, rir_len)) * decay).astype(np.float32)
    rir[:, int(0.004 * fs)] = 1.5
    return speech, noise, wind, rir


def run(fs, args, use_codec, rows):
    rng = np.random.default_rng(0)
    n = int(args.seconds * fs)
    speech, noise, wind, rir = _sources(rng, args.batch, n, fs)
    cfg = {} if use_codec else {"aug_weights": (1.0, 1.0, 0.0, 1.0)}
    params = sample_batch_params(jax.random.PRNGKey(1), jnp.full((args.batch,), n), sample_rate=fs,
                                 max_num_samples=n, **cfg)
    noise_in = np.where(np.asarray(params.use_wind)[:, None], wind[None], noise)
    src = Sources(speech, np.full(args.batch, n, np.int32), noise_in,
                  np.full(args.batch, n + fs, np.int32), rir, np.full(args.batch, rir.shape[1], np.int32))
    src = jax.device_put(src)
    fn = jax.jit(functools.partial(simulate, sample_rate=fs))
    t_ours = median_time(lambda: jax.block_until_ready(fn(jax.random.PRNGKey(0), src, params)), args.repeats)
    host = jax.tree.map(np.asarray, params)
    per_example = [{k: getattr(host, k)[i] for k in host._fields} for i in range(args.batch)]
    t_ref = median_time(lambda: [reference_render(speech[i], noise_in[i], rir[i], per_example[i], fs, use_codec)
                           for i in range(args.batch)], max(1, args.repeats // 2))
    audio_s = args.batch * args.seconds
    rows.append((f"{fs // 1000} kHz, {'with' if use_codec else 'no'} codec", audio_s / t_ours, audio_s / t_ref))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rates", type=int, nargs="+", default=[16000, 48000])
    args = parser.parse_args()
    configure_cpu_kernels()  # before the first computation
    configure_host_allocator()  # process-wide: applies to both sides
    rows = []
    for fs in args.rates:
        for use_codec in (False, True):
            run(fs, args, use_codec, rows)
    print(f"\nbackend: {jax.default_backend()} ({jax.devices()[0].device_kind}), batch {args.batch} x "
          f"{args.seconds:g} s, one process")
    print(f"{'setting':24s} {'ours audio-s/s':>15s} {'per-example ref':>16s} {'ratio':>8s}")
    for name, ours, ref in rows:
        print(f"{name:24s} {ours:15.1f} {ref:16.1f} {ours / ref:7.1f}x")


if __name__ == "__main__":
    main()
