"""Independent reference implementations of REFERENCE.md §4.1 (numpy, librosa, pysptk, fastdtw,
fast_bss_eval) and a padding helper, shared by the metric tests and
experiments/benchmarks/metrics.py. Test-only dependencies."""

import librosa
import numpy as np

# Mel-cepstrum (order, all-pass constant) by sampling rate, REFERENCE.md §4.1 (MCD row), written
# here rather than taken from urgent_jax.metrics.mcd so that the code's table is under test.
MCEP_PARAMS = {
    8000: (13, 0.31),
    16000: (23, 0.42),
    22050: (34, 0.45),
    24000: (34, 0.46),
    32000: (36, 0.50),
    44100: (39, 0.53),
    48000: (39, 0.55),
}


def reference_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """The reference call of REFERENCE.md §4.1 for one source: fast_bss_eval through its torch
    backend (its numpy backend fails under numpy 2), in float64."""
    import fast_bss_eval
    import torch

    r = torch.from_numpy(np.asarray(ref, np.float64))[None]
    e = torch.from_numpy(np.asarray(est, np.float64))[None]
    out = fast_bss_eval.bss_eval_sources(
        r, e, filter_length=512, zero_mean=False, compute_permutation=False, clamp_db=50
    )
    return float(out[0][0])


def reference_lsd(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> float:
    ref = np.asarray(ref, np.float32)
    est = np.asarray(est, np.float32)
    est = est * (np.sum(ref * est) / (np.sum(est**2) + np.float32(1e-8)))
    n_fft, hop = int(0.032 * sample_rate), int(0.016 * sample_rate)

    def magnitude(x):
        spec = librosa.stft(
            x, n_fft=n_fft, hop_length=hop, window="hann", center=True, pad_mode="constant"
        )
        return np.abs(spec)  # [bins, frames]

    log_ratio = np.log(magnitude(ref) ** 2 / (magnitude(est) + 1e-8) ** 2 + 1e-8)
    return float(np.mean(np.sqrt(np.mean(log_ratio**2, axis=0))))


def reference_mcd(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> float:
    """§4.1: gain-matched est, pysptk mel-cepstra of unpadded 1024/256 frames, fastdtw path mean."""
    # imported here so that the other references work where pysptk does not install;
    # pysptk 1.0.1 needs pkg_resources: setuptools < 81 (pinned by the Makefile's test install)
    import pysptk
    from fastdtw import fastdtw
    from scipy.spatial.distance import euclidean

    ref = np.asarray(ref, np.float64)
    est = np.asarray(est, np.float64)
    est = est * (np.sum(ref * est) / (np.sum(est**2) + 1e-8))
    order, alpha = MCEP_PARAMS[sample_rate]
    window = pysptk.hamming(1024)  # SPTK default normalisation (unit power)

    def cepstra(x):
        frames = np.lib.stride_tricks.sliding_window_view(x, 1024)[::256] * window
        return np.stack([pysptk.mcep(f, order=order, alpha=alpha, eps=1e-6, etype=1) for f in frames])

    c_ref, c_est = cepstra(ref), cepstra(est)
    _, path = fastdtw(c_ref, c_est, dist=euclidean)
    dist = [np.sqrt(2.0 * np.sum((c_ref[i] - c_est[j]) ** 2)) for i, j in path]
    return float(10.0 / np.log(10.0) * np.mean(dist))


def pad_batch(pairs, fill=0.0):
    """[(ref, est), ...] -> float32 [B, T] arrays (tails set to `fill`) and lengths."""
    lengths = np.array([len(r) for r, _ in pairs], np.int32)
    refs = np.full((len(pairs), lengths.max()), fill, np.float32)
    ests = np.full_like(refs, fill)
    for i, (r, e) in enumerate(pairs):
        refs[i, : len(r)] = r
        ests[i, : len(e)] = e
    return refs, ests, lengths
