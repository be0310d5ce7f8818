"""Training throughput of an experiment config: audio-seconds trained per wall-second, with dynamic mixing
in the Grain loader (host CPU) or inside the jitted train step, and data-parallel scaling over N devices.

    python experiments/benchmarks/train_throughput.py [--config configs/se/bsrnn.py:baseline] \
        [--sources DIR] [--fs 16000] [--batch 2] [--num_samples 64000] [--steps 3] \
        [--mixing loader step] [--devices 1 8]

Every row runs in a fresh process (N fake CPU devices via XLA_FLAGS on a CPU host; the real devices on
an accelerator) that builds the loop's own pieces (EnhancementTask, make_train_fns, the real loader over
the demo corpus or --sources), compiles once, then times --steps steps including the loader. The global
batch is --batch per device. Scaling efficiency = throughput(N) / (N x throughput(1)) at equal work per
device; on a CPU host the N fake devices share the same cores, so it measures the sharding overhead,
not a speed-up. The reference's figure for scale (REFERENCE.md §3.5 sizes, ESPnet BSRNN, torch 2.13 CPU,
2 threads, batch 2 x 4 s at 16 kHz): about 52 s per step, i.e. 0.15 audio-s/s.

--torch_reference {cpu,cuda} also times the PyTorch reference training step in the same run (ESPnet
BSRNNSeparator + STFT + MultiResL1SpecLoss of the same size, batch and crop; train_step.py's torch
worker) and prints ours / reference. The reference row is the model step alone (no loading, no
mixing); ours includes the loader. On a GPU host:

    python experiments/benchmarks/train_throughput.py --devices 1 --torch_reference cuda
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def worker(args) -> dict:
    sys.path.insert(0, REPO)
    import jax
    import numpy as np

    from urgent_jax import prepare_runtime
    from urgent_jax.enhance.task import EnhancementTask
    from urgent_jax.train import sharding
    from urgent_jax.train.config_file import load_config
    from urgent_jax.train.loop import make_train_fns
    from urgent_jax.train.optim import make_optimizer

    prepare_runtime()
    config = load_config(args.config)
    n = jax.device_count()
    config.data.update(kind="dynamic_mixing", mixing=args.mixing_one, sources_dir=args.sources,
                       sample_rates=(args.fs,), batch_size=args.batch * n, max_num_samples=args.num_samples,
                       num_buckets=1, num_workers=0)
    task = EnhancementTask(config)
    data = task.train_data(0, 0, 1)
    tx, _ = make_optimizer(**{**config.optim.to_dict(), "steps_per_epoch": 1000})
    mesh = sharding.make_mesh(1)
    example, rate = task.example_batch()
    fns = make_train_fns(task, tx, mesh, 0, example, rate)
    state = fns.init()

    def one_step(state):
        device, fs, _ = task.split_batch(next(data))
        state, metrics = fns.step(state, sharding.global_batch(device, mesh), fs)
        jax.block_until_ready(metrics["loss"])
        return state, task.audio_seconds(device, fs)

    t0 = time.perf_counter()
    state, _ = one_step(state)  # compile (simulator and step) + first step
    compile_s = time.perf_counter() - t0
    audio, t0 = 0.0, time.perf_counter()
    for _ in range(args.steps):
        state, seconds = one_step(state)
        audio += seconds
    elapsed = time.perf_counter() - t0
    import resource

    data.close()
    return {"devices": n, "mixing": args.mixing_one, "global_batch": args.batch * n,
            "step_s": elapsed / args.steps, "audio_s_per_s": audio / elapsed, "first_step_s": compile_s,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "num_params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params))),
            "backend": f"{jax.default_backend()} ({jax.devices()[0].device_kind})",
            "model": config.model.to_dict()}


def torch_reference(args, model: dict) -> dict:
    """The PyTorch reference step (train_step.py's torch worker) at this run's size, batch and crop."""
    if model["name"] != "bsrnn":
        raise SystemExit(f"--torch_reference knows BSRNN only, not {model['name']!r}")
    sys.path.insert(0, os.path.dirname(__file__))
    import train_step

    kwargs = model.get("kwargs", {})
    step_args = argparse.Namespace(
        sizes={"bsrnn": (kwargs.get("num_channels", 196), kwargs.get("num_layers", 6))},
        batch=args.batch, seconds=args.num_samples / args.fs, steps=args.steps,
        threads=os.cpu_count() if args.torch_reference == "cuda" else 2, keep_denormals=False,
        device=args.torch_reference, timeout=3600.0)
    result = train_step.spawn("torch", "bsrnn", args.fs, step_args)
    if "error" in result:
        raise SystemExit(f"torch reference failed: {result['error']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/se/bsrnn.py:baseline")
    parser.add_argument("--sources", default=None, help="Track 1 source directory (default: demo corpus)")
    parser.add_argument("--fs", type=int, default=16000)
    parser.add_argument("--batch", type=int, default=2, help="examples per device")
    parser.add_argument("--num_samples", type=int, default=64000, help="crop length in samples (4 s at 16 kHz)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--mixing", nargs="+", default=["loader", "step"], choices=("loader", "step"))
    parser.add_argument("--devices", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--torch_reference", choices=("cpu", "cuda"), default=None,
                        help="also time the PyTorch reference step on this device, same run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mixing_one", default="loader", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return
    if args.sources is None:
        sys.path.insert(0, REPO)
        from urgent_jax.data.demo_corpus import build_demo_corpus

        root = os.path.join(tempfile.gettempdir(), "urgent_jax_bench_corpus")
        build_demo_corpus(root, seed=0, size="small", use_progress_bar=False)
        args.sources = os.path.join(root, "train_sources")
    rows = []
    for mixing in args.mixing:
        for n in args.devices if mixing == args.mixing[0] else args.devices[:1]:
            env = dict(os.environ)
            if n > 1:
                env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
            cmd = [sys.executable, __file__, "--worker", f"--mixing_one={mixing}", f"--config={args.config}",
                   f"--sources={args.sources}", f"--fs={args.fs}", f"--batch={args.batch}",
                   f"--num_samples={args.num_samples}", f"--steps={args.steps}"]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"worker failed: {' '.join(cmd)}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{args.config} fs={args.fs} devices={r['devices']} mixing={r['mixing']}: "
                  f"{r['audio_s_per_s']:.3f} audio-s/s, {r['step_s']:.2f} s/step (global batch "
                  f"{r['global_batch']} x {args.num_samples / args.fs:.1f} s), first step {r['first_step_s']:.0f} s, "
                  f"peak RSS {r['peak_rss_gb']:.1f} GB, {r['backend']}", flush=True)
    base = next(r for r in rows if r["devices"] == 1 and r["mixing"] == args.mixing[0])
    print(f"\nparameters: {base['num_params']:,}")
    for r in rows:
        if r["devices"] > 1:
            eff = r["audio_s_per_s"] / (r["devices"] * base["audio_s_per_s"])
            print(f"scaling 1 -> {r['devices']} devices ({r['mixing']} mixing): efficiency {eff:.2f} "
                  f"({r['audio_s_per_s']:.3f} vs {base['audio_s_per_s']:.3f} audio-s/s)")
    if args.torch_reference:
        ref = torch_reference(args, base["model"])
        ref_rate = args.batch * args.num_samples / args.fs / ref["step_s"]
        print(f"PyTorch reference step ({ref['backend']}, batch {args.batch} x {args.num_samples / args.fs:.1f} s, "
              f"model step only): {ref_rate:.3f} audio-s/s, {ref['step_s']:.3f} s/step")
        for r in rows:
            if r["devices"] == 1:
                print(f"ours / PyTorch reference ({r['mixing']} mixing, 1 device): "
                      f"{r['audio_s_per_s'] / ref_rate:.2f}x")
        return
    ref = 4.0 * 2 / 52.0
    print(f"reference for scale (ESPnet BSRNN baseline, torch CPU, 2 threads; compare with :baseline): {ref:.3f} audio-s/s; "
          f"ours / reference: {base['audio_s_per_s'] / ref:.2f}x ({args.mixing[0]} mixing, 1 device)")


if __name__ == "__main__":
    main()
