"""Metric throughput: our batched jax metrics vs the reference packages, in clips per second.

    python experiments/benchmarks/metrics.py [--fs 16000 48000] [--batch 16] [--seconds 4]
        [--metrics estoi sdr pesq lsd mcd dnsmos distill_mos] [--repeats 5] [--ref_clips 4] [--quick]

Clips are the NOIZEUS (clean, noisy) pairs in ../shared/data/noizeus, resampled from 16 kHz with soxr
HQ, circularly shifted and tiled to `--seconds`. Ours: one batch of `--batch` clips through the jitted
metric, warm (a first call compiles); PESQ goes through `PesqPool` (one
worker process per core). Reference: the packages of REFERENCE.md §4, in this process, one clip at a
time as the official scripts call them, on the first `--ref_clips` clips (at most 2 for MCD, whose
reference runs at about one clip per second). Both warm up with one call and size their turns on
a second, then take turns for `--repeats` rounds (so that both see the same machine load), each
turn 0.2 s after the last (so that the other side's thread pools have stopped spinning) and calling
back to back for ~0.25 s after one untimed call (at least one timed call; the slow references in
as many rounds as fit in 3 s, at least one); each side gets the median of its turns' mean call
times (`timing.interleaved_median_times`):

    estoi        pystoi.stoi(extended=True)
    sdr          fast_bss_eval.bss_eval_sources (filter_length 512, clamp_db 50) with its torch
                 backend on float32 tensors (its numpy backend fails under numpy 2)
    pesq         pesq.pesq, single process (soxr HQ to 16 kHz first above 16 kHz)
    lsd          numpy + librosa STFT, REFERENCE.md §4.1
    mcd          pysptk.mcep + fastdtw, REFERENCE.md §4.1
    dnsmos       speechmos.dnsmos.run: onnxruntime on the same ONNX files (soxr HQ to 16 kHz first)
    distill_mos  the distillmos torch model, all reference clips in one call (soxr HQ to 16 kHz first;
                 the reference CLI resamples with torchaudio, which is not installed)

Prints clips per second for both and the ratio ours / reference. torch and onnxruntime use their
default thread counts. `--quick` is a smoke run: 2 clips of 2 s, one repeat, one reference clip.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import types

import jax
import numpy as np
import soundfile as sf

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))

from timing import interleaved_median_times, median_time  # noqa: E402

from urgent_jax import configure_cpu_kernels, configure_host_allocator  # noqa: E402
from urgent_jax.metrics import dnsmos, distillmos  # noqa: E402
from urgent_jax.metrics.lsd import lsd  # noqa: E402
from urgent_jax.metrics.mcd import MCEP_PARAMS, mcd  # noqa: E402
from urgent_jax.metrics.pesq import PesqPool  # noqa: E402
from urgent_jax.metrics.sdr import sdr  # noqa: E402
from urgent_jax.metrics.stoi import estoi  # noqa: E402

METRICS = ("estoi", "sdr", "pesq", "lsd", "mcd", "dnsmos", "distill_mos")
SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")
PAIRS = [("sp04", "sp04_casino_sn0"), ("sp03", "sp03_casino_sn5"), ("sp05", "sp05_casino_sn-5")]


def load_clips(sample_rate: int, batch: int, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Real speech: (clean [B, T], noisy [B, T]) float32 at sample_rate, T = seconds * rate."""
    import soxr

    root = os.environ.get("URGENT_SHARED_DATA", SHARED_DATA)
    pairs = []
    for clean_name, noisy_name in PAIRS:
        clean, fs = sf.read(os.path.join(root, "noizeus", f"{clean_name}.wav"), dtype="float32")
        noisy, _ = sf.read(os.path.join(root, "noizeus", f"{noisy_name}.wav"), dtype="float32")
        n = min(len(clean), len(noisy))
        pair = (clean[:n], noisy[:n])
        if sample_rate != fs:
            pair = tuple(soxr.resample(x, fs, sample_rate, "HQ").astype(np.float32) for x in pair)
        pairs.append(pair)
    num_samples = int(seconds * sample_rate)
    refs, ests = [], []
    for i in range(batch):
        clean, noisy = pairs[i % len(pairs)]
        shift = (i // len(pairs)) * int(0.37 * sample_rate)  # different content per clip
        refs.append(np.resize(np.roll(clean, -shift), num_samples))
        ests.append(np.resize(np.roll(noisy, -shift), num_samples))
    return np.stack(refs), np.stack(ests)


# --- ours -----------------------------------------------------------------------------------------


def ours(name: str, sample_rate: int, state: dict):
    """fn(ref, est, lengths) -> result (blocked on), for our implementation of metric `name`."""
    if name == "pesq":
        pool = state.setdefault("pesq_pool", PesqPool())
        return lambda ref, est, lengths: pool(ref, est, lengths, sample_rate)[0]
    if name == "dnsmos":
        params = dnsmos.load_dnsmos_params()

        def run_dnsmos(ref, est, lengths):
            segs = dnsmos.required_segments(lengths, sample_rate)
            return dnsmos.dnsmos(est, lengths, sample_rate, params=params, max_segs=segs)

        return lambda *args: jax.block_until_ready(run_dnsmos(*args))
    if name == "distill_mos":
        params = distillmos.load_params()
        fn = jax.jit(distillmos.distill_mos, static_argnames="sample_rate")
        return lambda ref, est, lengths: jax.block_until_ready(
            fn(est, lengths, sample_rate=sample_rate, params=params)
        )
    metric = {"estoi": estoi, "sdr": sdr, "lsd": lsd, "mcd": mcd}[name]
    fn = jax.jit(functools.partial(metric, sample_rate=sample_rate))
    return lambda ref, est, lengths: jax.block_until_ready(fn(ref, est, lengths))


# --- references -----------------------------------------------------------------------------------


def _to_16k(x: np.ndarray, sample_rate: int) -> np.ndarray:
    import soxr

    return x if sample_rate == 16000 else soxr.resample(x, sample_rate, 16000, "HQ").astype(np.float32)


def reference(name: str, sample_rate: int, state: dict):
    """fn(refs [n, T], ests [n, T]) scoring the clips the way the reference packages do."""
    from tests.metrics.references import reference_lsd, reference_mcd  # the tests' own references
    if name == "estoi":
        from pystoi import stoi

        return lambda refs, ests: [stoi(r, e, sample_rate, extended=True) for r, e in zip(refs, ests)]
    if name == "sdr":
        import fast_bss_eval
        import torch

        def run_sdr(r, e):
            r, e = torch.from_numpy(r)[None], torch.from_numpy(e)[None]
            return fast_bss_eval.bss_eval_sources(
                r, e, filter_length=512, zero_mean=False, compute_permutation=False, clamp_db=50
            )[0]

        return lambda refs, ests: [run_sdr(r, e) for r, e in zip(refs, ests)]
    if name == "pesq":
        from pesq import pesq

        mode = "nb" if sample_rate == 8000 else "wb"
        rate = 8000 if sample_rate == 8000 else 16000
        def run_pesq(r, e):
            return pesq(rate, _to_16k(r, sample_rate), _to_16k(e, sample_rate), mode)

        return lambda refs, ests: [run_pesq(r, e) for r, e in zip(refs, ests)]
    if name == "lsd":
        return lambda refs, ests: [reference_lsd(r, e, sample_rate) for r, e in zip(refs, ests)]
    if name == "mcd":
        import fastdtw, pysptk  # noqa: F401  (reference_mcd imports them when called)

        return lambda refs, ests: [reference_mcd(r, e, sample_rate) for r, e in zip(refs, ests)]
    if name == "dnsmos":
        from speechmos import dnsmos as speechmos_dnsmos

        return lambda refs, ests: [speechmos_dnsmos.run(_to_16k(e, sample_rate), 16000) for e in ests]
    if name == "distill_mos":
        import torch

        if "distill_model" not in state:
            # distillmos.sqa imports torchaudio (not installed) only for file I/O and resampling.
            stub = "torchaudio" not in sys.modules
            sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
            from distillmos.sqa import ConvTransformerSQAModel

            if stub:
                del sys.modules["torchaudio"]
            state["distill_model"] = ConvTransformerSQAModel(load_weights=True).eval()
        model = state["distill_model"]

        def run_distill(refs, ests):
            x = np.stack([_to_16k(e, sample_rate) for e in ests])
            with torch.no_grad():
                return model(torch.from_numpy(np.ascontiguousarray(x))).numpy()

        return run_distill
    raise ValueError(f"unknown metric {name!r}")


# --- benchmark ------------------------------------------------------------------------------------


def run(name: str, sample_rate: int, args, state: dict, rows: list) -> None:
    refs, ests = load_clips(sample_rate, args.batch, args.seconds)
    lengths = np.full(args.batch, refs.shape[1], np.int32)
    ours_fn = ours(name, sample_rate, state)
    run_ours = lambda: ours_fn(refs, ests, lengths)  # noqa: E731
    num_ref = min(args.ref_clips, 2 if name == "mcd" else args.ref_clips, args.batch)
    try:
        ref_fn = reference(name, sample_rate, state)
    except ImportError as err:  # e.g. a reference package without a wheel for this Python
        print(f"  {name:12s} {sample_rate:6d} Hz: reference unavailable ({err}); ours only")
        t_ours = median_time(run_ours, args.repeats)
        rows.append((name, sample_rate, args.batch / t_ours, float("nan"), 0))
        return
    run_ref = lambda: ref_fn(refs[:num_ref], ests[:num_ref])  # noqa: E731
    t_ours, t_ref = interleaved_median_times([run_ours, run_ref], args.repeats, budget_s=3.0)
    rows.append((name, sample_rate, args.batch / t_ours, num_ref / t_ref, num_ref))
    print(f"  {name:12s} {sample_rate:6d} Hz: ours {t_ours:.3f} s / {args.batch} clips, "
          f"reference {t_ref:.3f} s / {num_ref} clips", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fs", type=int, nargs="+", default=[16000, 48000])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--metrics", nargs="+", default=list(METRICS), choices=METRICS)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median)")
    parser.add_argument("--ref_clips", type=int, default=4, help="clips scored by the reference")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 clips of 2 s, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.seconds, args.repeats, args.ref_clips = 2, 2.0, 1, 1
    configure_cpu_kernels()  # before the first computation
    configure_host_allocator()  # process-wide: applies to both sides
    state: dict = {}
    rows: list = []
    try:
        for sample_rate in args.fs:
            for name in args.metrics:
                run(name, sample_rate, args, state, rows)
    finally:
        if "pesq_pool" in state:
            state["pesq_pool"].close()
    device = f"{jax.default_backend()} ({jax.devices()[0].device_kind})"
    print(f"\nbackend: {device}, {os.cpu_count()} CPU cores, batch {args.batch} x {args.seconds:g} s, "
          "NOIZEUS speech")  # fmt: skip
    header = f"{'ours clips/s':>13s} {'ref clips/s':>12s} {'ratio':>8s}  ref clips"
    print(f"{'metric':12s} {'rate':>6s} {header}")
    for name, sample_rate, ours_rate, ref_rate, num_ref in rows:
        print(f"{name:12s} {sample_rate // 1000:4d}k {ours_rate:13.2f} {ref_rate:12.2f} "
              f"{ours_rate / ref_rate:7.1f}x  {num_ref}")  # fmt: skip


if __name__ == "__main__":
    main()
