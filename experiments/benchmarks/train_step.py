"""Forward+backward training-step cost of BSRNN and FlowSE: urgent_jax against PyTorch references.

    python experiments/benchmarks/train_step.py                          # 2 x 4 s, 16 and 48 kHz
    python experiments/benchmarks/train_step.py --models bsrnn --fs 16000 --steps 3
    python experiments/benchmarks/train_step.py --quick                  # tiny configs, 1 s, 16 kHz
    python experiments/benchmarks/train_step.py --models bsrnn --fs 16000 --remat both --no_torch
    python experiments/benchmarks/train_step.py --device cuda --steps 5   # both sides on the GPU

Sizes are the official ones (BSRNN N = 196, 6 layers; FlowSE N = 384, 6 layers) unless --quick,
which uses the registry's TINY sizes for both sides. Every (implementation, model, rate) runs in its
own subprocess, so its peak resident memory (getrusage ru_maxrss) is its own.

- jax: `jit(value_and_grad(loss))` of the training loss (BSRNN: the multi-resolution L1 loss on the
  enhanced waveform; FlowSE: `losses.flow.flow_matching_loss`). "compile s" is lower + compile;
  "step s" the median of --steps calls after one warm-up call. "XLA GiB" is the compiled program's
  temp + argument bytes.
- torch: ESPnet STFTEncoder + BSRNNSeparator + STFTDecoder with ESPnet's MultiResL1SpecLoss as the
  official baseline configures it (REFERENCE.md §3.4), or the FlowSE network of
  flowse_reference.py with its flow-matching loss and ESPnet's compressing STFTEncoder; eager CPU,
  torch.set_num_threads(--threads). "compile s" is its first (warm-up) step. "step s" as above.
  Subnormal floats are flushed to zero (torch.set_flush_denormal), as XLA:CPU does: with random
  weights some steps otherwise ran 10x slower (tiny FlowSE: 0.3 s or 3.1 s per step from run to
  run); --keep_denormals measures stock torch.

With --device cuda the torch side runs on the GPU (default precision settings of both libraries)
and "dev GiB" is each side's device-allocator peak (torch.cuda.max_memory_allocated; jax
memory_stats peak_bytes_in_use with preallocation off); the memory ratio then uses it.

"CPU s" is the process CPU time (all threads) of a step, median: on a shared machine it moves less
with other jobs' load than the wall time does. Ratios are jax / torch (below 1: ours is faster or
smaller): wall time, CPU time, peak RSS. Random weights and audio; loss values are printed only to
show that both sides ran.

Measured 2026-11-26 on the shared 2-core CPU (jax 0.10.2, torch 2.13 CPU), `--models bsrnn --fs
16000 --steps 3`, both sides under a load average of 3.6-5.7 from other jobs: torch 166.4 s/step,
7.89 GiB peak RSS; jax 89.8 s/step (0.54x wall, 0.52x CPU), compile 18.3 s, 5.47 GiB (0.69x), XLA
temp + arguments 4.23 GiB. Wall times swing 3x with that load (torch 29-166 s/step over four runs),
so only ratios from one run mean anything. remat=on: no memory gain on XLA:CPU, 1.6x the time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZES = {"bsrnn": (196, 6), "flowse": (384, 6)}  # official (channels N, dual-path layers)


def peak_rss_gib() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def signals(batch: int, num_samples: int):
    """(clean, noisy) float32 [batch, num_samples], the same on both sides."""
    rng = np.random.default_rng(0)
    clean = (rng.standard_normal((batch, num_samples)) * 0.1).astype(np.float32)
    noisy = clean + (rng.standard_normal((batch, num_samples)) * 0.05).astype(np.float32)
    return clean, noisy


def run_jax(model_name, fs, batch, seconds, steps, channels, layers, use_remat) -> dict:
    import jax
    import jax.numpy as jnp

    import urgent_jax
    from urgent_jax import models
    from urgent_jax.losses.flow import flow_matching_loss
    from urgent_jax.losses.spectral import multi_resolution_l1

    urgent_jax.configure_cpu_kernels()  # as every urgent_jax command does
    urgent_jax.configure_host_allocator()
    n = int(seconds * fs)
    clean, noisy = (jnp.asarray(x) for x in signals(batch, n))
    lengths = jnp.full((batch,), n, jnp.int32)
    model = models.build(
        model_name, num_channels=channels, num_layers=layers, use_remat=use_remat
    )
    variables = models.init_variables(model, jax.random.key(0), fs)
    constants = {k: v for k, v in variables.items() if k != "params"}

    def loss_fn(params, clean, noisy, lengths, key):
        full = {"params": params, **constants}
        if model_name == "flowse":
            return flow_matching_loss(model, full, clean, noisy, lengths, fs, key)
        est = model.apply(full, noisy, lengths, sample_rate=fs)
        return jnp.mean(multi_resolution_l1(clean, est, lengths))

    args = (variables["params"], clean, noisy, lengths, jax.random.key(1))
    t0 = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(loss_fn)).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()  # None where the backend does not report it
    xla_gib = None if mem is None else (mem.temp_size_in_bytes + mem.argument_size_in_bytes) / 2**30
    jax.block_until_ready(compiled(*args))  # warm-up
    times, cpu_times = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss, grads = compiled(*args)
        jax.block_until_ready(grads)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    stats = jax.devices()[0].memory_stats() or {}  # accelerators report their allocator's peak
    return {
        "step_s": float(np.median(times)),
        "cpu_s": float(np.median(cpu_times)),
        "compile_s": compile_s,
        "peak_rss_gib": peak_rss_gib(),
        "xla_gib": xla_gib,
        "device_gib": stats["peak_bytes_in_use"] / 2**30 if "peak_bytes_in_use" in stats else None,
        "backend": f"{jax.default_backend()} ({jax.devices()[0].device_kind})",
        "loss": float(loss),
    }


def run_torch(
    model_name, fs, batch, seconds, steps, channels, layers, threads, flush_denormal, device
) -> dict:
    # espnet2's time_domain criteria module imports ci_sdr, which only CISDRLoss needs
    sys.modules.setdefault("ci_sdr", types.ModuleType("ci_sdr"))
    import torch
    from espnet2.enh.decoder.stft_decoder import STFTDecoder
    from espnet2.enh.encoder.stft_encoder import STFTEncoder

    torch.set_num_threads(threads)
    torch.set_flush_denormal(flush_denormal)
    torch.manual_seed(0)
    n = int(seconds * fs)
    clean, noisy = (torch.from_numpy(x).to(device) for x in signals(batch, n))
    lengths = torch.full((batch,), n, device=device)

    if model_name == "flowse":
        sys.path.insert(0, str(HERE))
        import flowse_reference

        net = flowse_reference.FlowSEBSRNN(num_channel=channels, num_layer=layers).to(device)
        encoder = STFTEncoder(
            n_fft=1536,
            hop_length=384,
            use_builtin_complex=True,
            default_fs=48000,
            spec_transform_type="exponent",
            spec_abs_exponent=0.667,
            spec_factor=0.065,
        ).to(device)

        def loss_fn():
            return flowse_reference.flow_matching_loss(net, encoder, clean, noisy, lengths, fs)

        params = list(net.parameters())
    else:
        from espnet2.enh.loss.criterions.time_domain import MultiResL1SpecLoss
        from espnet2.enh.separator.bsrnn_separator import BSRNNSeparator

        encoder = STFTEncoder(n_fft=960, hop_length=480, use_builtin_complex=True, default_fs=48000)
        decoder = STFTDecoder(n_fft=960, hop_length=480, default_fs=48000)
        separator = BSRNNSeparator(
            481, num_spk=1, num_channels=channels, num_layers=layers, causal=False
        )
        criterion = MultiResL1SpecLoss(
            window_sz=[256, 512, 768, 1024],
            time_domain_weight=0.5,
            normalize_variance=True,
            eps=1e-6,
            reduction="sum",
        )
        encoder, decoder, separator, criterion = (
            m.to(device) for m in (encoder, decoder, separator, criterion)
        )

        def loss_fn():
            spec, flens = encoder(noisy, lengths, fs=fs)
            est = decoder(separator(spec, flens)[0][0], lengths, fs=fs)[0]
            return criterion(clean, est).mean()

        params = list(separator.parameters())

    def step():
        for p in params:
            p.grad = None
        loss = loss_fn()
        loss.backward()
        return float(loss)  # .item() waits for the device

    cuda = str(device).startswith("cuda")

    t0 = time.perf_counter()
    loss = step()  # warm-up (first-call allocations)
    first_s = time.perf_counter() - t0
    times, cpu_times = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    return {
        "step_s": float(np.median(times)),
        "cpu_s": float(np.median(cpu_times)),
        "compile_s": first_s,
        "peak_rss_gib": peak_rss_gib(),
        "xla_gib": None,
        "device_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "backend": f"torch {torch.__version__} "
        + (f"cuda ({torch.cuda.get_device_name()})" if cuda else "cpu"),
        "loss": loss,
    }


# --- driver ----------------------------------------------------------------------------------


def spawn(impl: str, model: str, fs: int, args, use_remat: bool = False) -> dict:
    """Run one configuration in a fresh interpreter; its RESULT line as a dict, or {'error'}."""
    channels, layers = args.sizes[model]
    cmd = [sys.executable, __file__, "--worker", impl, "--model", model, "--rate", str(fs)]
    cmd += ["--batch", str(args.batch), "--seconds", str(args.seconds), "--steps", str(args.steps)]
    cmd += ["--threads", str(args.threads), "--channels", str(channels), "--layers", str(layers)]
    cmd += ["--remat", "on" if use_remat else "off"]
    cmd += ["--keep_denormals"] if args.keep_denormals else []
    cmd += ["--device", args.device]
    env = dict(os.environ)
    if impl == "torch":
        env["OMP_NUM_THREADS"] = str(args.threads)
    elif args.device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    else:
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # the allocator's peak is then what it used
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=args.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": " | ".join(tail) or f"exit status {proc.returncode}"}


def format_row(model, fs, impl, res, ref) -> str:
    if "error" in res:
        return f"{model:<7} {fs:>6} {impl:<15} failed: {res['error']}"
    ratio_t = ratio_c = ratio_m = ""
    if impl != "torch" and ref and "error" not in ref:
        ratio_t = f"{res['step_s'] / ref['step_s']:.2f}"
        ratio_c = f"{res['cpu_s'] / ref['cpu_s']:.2f}"
        mem_key = "device_gib" if res.get("device_gib") and ref.get("device_gib") else "peak_rss_gib"
        ratio_m = f"{res[mem_key] / ref[mem_key]:.2f}"
    xla = "" if res["xla_gib"] is None else f"{res['xla_gib']:.2f}"
    dev = "" if res.get("device_gib") is None else f"{res['device_gib']:.2f}"
    return (
        f"{model:<7} {fs:>6} {impl:<15} {res['step_s']:>8.2f} {res['cpu_s']:>7.1f} "
        f"{res['compile_s']:>9.1f} {res['peak_rss_gib']:>8.2f} {xla:>8} {dev:>8} {ratio_t:>7} "
        f"{ratio_c:>6} {ratio_m:>6} {res['loss']:>11.5g}  {res.get('backend', '')}"
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bsrnn,flowse", help="comma list: bsrnn, flowse")
    parser.add_argument("--fs", default=None, help="comma list of Hz (default 16000,48000)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 3)")
    parser.add_argument("--quick", action="store_true", help="TINY sizes, 1 s, 16 kHz, 1 step")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=None, help="audio per item (default 4)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--remat", choices=["off", "on", "both"], default="off", help="jax side")
    parser.add_argument("--no_torch", action="store_true", help="skip the PyTorch references")
    parser.add_argument(
        "--keep_denormals", action="store_true", help="torch: do not flush subnormals to zero"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="per configuration, s")
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: torch on the GPU and jax on its default accelerator; peak memory is then the "
        "device allocator's peak (torch.cuda.max_memory_allocated, jax memory_stats)",
    )
    # one configuration per process (used by the driver)
    parser.add_argument("--worker", choices=["jax", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--channels", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--layers", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    args.fs = args.fs or ("16000" if quick else "16000,48000")
    args.steps = args.steps or (1 if quick else 3)
    args.seconds = args.seconds or (1.0 if quick else 4.0)
    unknown = set(args.models.split(",")) - set(SIZES)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {sorted(SIZES)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        kw = dict(
            model_name=args.model,
            fs=args.rate,
            batch=args.batch,
            seconds=args.seconds,
            steps=args.steps,
            channels=args.channels,
            layers=args.layers,
        )
        if args.worker == "torch":
            result = run_torch(
                **kw,
                threads=args.threads,
                flush_denormal=not args.keep_denormals,
                device=args.device,
            )
        else:
            result = run_jax(**kw, use_remat=args.remat == "on")
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    if args.quick:
        from urgent_jax import models  # the registry's test sizes

        tiny = {m: models.TINY[m] for m in SIZES}
        args.sizes = {m: (t["num_channels"], t["num_layers"]) for m, t in tiny.items()}
    else:
        args.sizes = SIZES
    remats = {"off": [False], "on": [True], "both": [False, True]}[args.remat]
    print("command: python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:]))
    print(
        f"batch {args.batch} x {args.seconds:g} s, {args.steps} timed step(s) after a warm-up; "
        f"sizes (N, layers) {args.sizes}; torch threads {args.threads}, "
        f"{'stock denormals' if args.keep_denormals else 'denormals flushed'}; "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(
        f"{'model':<7} {'fs':>6} {'impl':<15} {'step s':>8} {'CPU s':>7} {'compile s':>9} "
        f"{'RSS GiB':>8} {'XLA GiB':>8} {'dev GiB':>8} {'time x':>7} {'CPU x':>6} {'mem x':>6} "
        f"{'loss':>11}  backend"
    )
    for model in args.models.split(","):
        for fs in (int(r) for r in args.fs.split(",")):
            ref = None if args.no_torch else spawn("torch", model, fs, args)
            if ref is not None:
                print(format_row(model, fs, "torch", ref, ref), flush=True)
            for use_remat in remats:
                res = spawn("jax", model, fs, args, use_remat)
                impl = f"jax remat={'on' if use_remat else 'off'}"
                print(format_row(model, fs, impl, res, ref), flush=True)
    print(f"load average at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
