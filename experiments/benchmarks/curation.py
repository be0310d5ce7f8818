"""Curation throughput: hours of audio scored per hour of wall time, ours vs a per-file reference
pipeline, and ArrayRecord read throughput vs per-file soundfile reads.

    python experiments/benchmarks/curation.py [--corpus DIR] [--num_utts 40] [--batch_size 8]

Corpus: the demo corpus's train speech (built in a temporary directory if --corpus is not
given), restricted to 16 kHz files so the reference pipeline needs no resampling.
- reference: per file, soundfile read, speechmos DNSMOS (onnxruntime, the official models) and
  the §5.1 bandwidth estimate in numpy, the way the URGENT 2025 utilities run (one file at a time).
- ours: urgent_jax.curation.score.score_corpus (DNSMOS, Distill-MOS, bandwidth, VAD, clipping,
  SNR, DC): a cold run (compiles included) and a warm run (same shapes, compiled) into fresh
  outputs; and, like for like, a warm run of only the reference's scores (DNSMOS + bandwidth)
  on the same planned batches, reads included. The reference loads its ONNX sessions before
  its timing starts.
- reads: every file once through soundfile vs the packed ArrayRecord shards (PackedSource).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def numpy_bandwidth(x: np.ndarray, fs: int) -> float:
    n_fft, hop = int(512 * fs / 16000), int(256 * fs / 16000)
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    num_frames = 1 + (len(padded) - n_fft) // hop
    index = np.arange(num_frames)[:, None] * hop + np.arange(n_fft)[None, :]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    power = np.mean(np.abs(np.fft.rfft(padded[index] * window, axis=-1)) ** 2, axis=0)
    return np.flatnonzero(power > power.max() * 1e-5).max() * fs / n_fft


def reference_pipeline(entries) -> float:
    from speechmos import dnsmos

    x, fs = sf.read(entries[0][2], dtype="float32")
    dnsmos.run(x, fs)  # loads the ONNX sessions once, outside the timing
    start = time.perf_counter()
    for _, _, path in entries:
        x, fs = sf.read(path, dtype="float32")
        dnsmos.run(x, fs)
        numpy_bandwidth(x, fs)
    return time.perf_counter() - start


def same_scores_pipeline(scp: Path, scorer, batch_size: int) -> tuple[float, int]:
    """Ours on the reference's scores only (DNSMOS + bandwidth), batched as score_corpus plans it,
    reads included: (seconds of a warm run, number of batches)."""
    from urgent_jax.audio.bandwidth import estimate_bandwidth
    from urgent_jax.curation.score import (
        _header,
        _LoadBatch,
        fill_rows,
        plan_batches,
        read_speech_scp,
    )
    from urgent_jax.metrics import dnsmos

    listed = read_speech_scp(scp)
    batches = plan_batches([_header(u, *listed[u]) for u in sorted(listed)], batch_size)
    load = _LoadBatch(batch_size)

    def run() -> None:
        for batch in batches:
            _, audio, lengths, _ = load(batch)
            fs = batch[0].fs
            index = fill_rows(np.flatnonzero(lengths), len(lengths))
            audio, lengths = audio[index], lengths[index]
            segs = dnsmos.required_segments(lengths, fs)
            mos = dnsmos.dnsmos(audio, lengths, fs, params=scorer._dnsmos_params, max_segs=segs)
            np.asarray(mos["ovrl"]), np.asarray(estimate_bandwidth(audio, lengths, fs))

    run()  # compiles
    start = time.perf_counter()
    run()
    return time.perf_counter() - start, len(batches)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", default=None)
    parser.add_argument("--num_utts", type=int, default=40)
    parser.add_argument("--batch_size", type=int, default=8)
    args = parser.parse_args()

    import jax

    from urgent_jax import configure_cpu_kernels, configure_host_allocator
    from urgent_jax.curation.score import Scorer, score_corpus
    from urgent_jax.data.pack import PackedSource, pack

    configure_cpu_kernels()  # as the urgent_jax commands run
    configure_host_allocator()
    work = Path(tempfile.mkdtemp(prefix="curation_bench_"))
    corpus = args.corpus
    if corpus is None:
        from urgent_jax.data.demo_corpus import build_demo_corpus

        corpus = work / "demo"
        build_demo_corpus(corpus, size="small", use_progress_bar=False)
    lines = Path(corpus, "train_sources", "speech_sources.scp").read_text().split("\n")
    entries = [ln.split() for ln in lines if ln.split() and ln.split()[1] == "16000"]
    entries = sorted(entries)[: args.num_utts]
    scp = work / "speech.scp"
    scp.write_text("".join(" ".join(e) + "\n" for e in entries))
    audio_h = sum(sf.info(p).duration for _, _, p in entries) / 3600
    print(f"device: {jax.devices()[0].platform} x{jax.device_count()}, cpus: {os.cpu_count()}, "
          f"{len(entries)} utterances at 16 kHz, {audio_h * 3600:.1f} s of audio")

    ref_s = reference_pipeline(entries)
    scorer = Scorer()
    kwargs = dict(batch_size=args.batch_size, shard_index=0, shard_count=1,
                  use_progress_bar=False, scorer=scorer)
    cold = score_corpus(scp, work / "cold" / "scores.tsv", **kwargs)
    warm = score_corpus(scp, work / "warm" / "scores.tsv", **kwargs)
    rate_ref = audio_h / (ref_s / 3600)
    rate_cold = audio_h / (cold["elapsed_s"] / 3600)
    rate_warm = audio_h / (warm["elapsed_s"] / 3600)
    print(f"reference (speechmos DNSMOS + numpy bandwidth, per file): {ref_s:.1f} s, "
          f"{rate_ref:.1f} h audio / h")
    print(f"ours cold (all scores, {len(cold['shapes'])} compiled shapes): "
          f"{cold['elapsed_s']:.1f} s, {rate_cold:.1f} h audio / h, "
          f"ratio {rate_cold / rate_ref:.2f}x")
    print(f"ours warm (all scores, compiled): {warm['elapsed_s']:.1f} s, {rate_warm:.1f} h audio "
          f"/ h, ratio {rate_warm / rate_ref:.2f}x")
    same_s, num_batches = same_scores_pipeline(scp, scorer, args.batch_size)
    rate_same = audio_h / (same_s / 3600)
    print(f"ours warm, the reference's scores only (DNSMOS + bandwidth, {num_batches} batches): "
          f"{same_s:.1f} s, {rate_same:.1f} h audio / h, ratio {rate_same / rate_ref:.2f}x")

    packed = work / "packed"
    pack(scp, packed, 4)
    start = time.perf_counter()
    for _, _, path in entries:
        sf.read(path, dtype="float32")
    file_s = time.perf_counter() - start
    source = PackedSource(packed)
    start = time.perf_counter()
    for i in range(len(source)):
        source[i]
    packed_s = time.perf_counter() - start
    print(f"reads: soundfile per file {audio_h / (file_s / 3600):.0f} h audio / h, "
          f"ArrayRecord (FLAC records) {audio_h / (packed_s / 3600):.0f} h audio / h, "
          f"ratio {file_s / packed_s:.2f}x")


if __name__ == "__main__":
    main()
