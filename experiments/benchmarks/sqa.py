"""SQA inference throughput: UniVersaExt (jax) vs an equivalent PyTorch model, in clips per second.

    python experiments/benchmarks/sqa.py [--frontends distillmos wavlm] [--batch 32] [--seconds 4]
        [--repeats 3] [--d_model 768] [--num_layers 6]

Both sides run the same network with the same weights on the same batch of `--batch` clips of
`--seconds` s at 16 kHz (lengths all full; one clip's worth of random speech-like noise each):
  distillmos  front-end: the Distill-MOS encoder with its shipped weights. Torch: distillmos's
              `ConvTransformerSQAModel` (cnn -> norm_input -> transformer -> norm_trans) on the
              clip zero-padded to one 7.68 s crop, peak-normalised, as in its forward; both sides
              pass only the frames up to the clip's end to the head. Ours also skips the CNN
              work on frames that see only the zero padding (`DistillMOS.embed(signal_samples=)`,
              same result).
  wavlm       front-end: WavLM base size (transformers `WavLMConfig()` defaults, random init).
              Torch: transformers `WavLMModel` with `output_hidden_states=True` and attention mask,
              weights converted to ours with `models.wavlm.convert_state_dict`.
Head on both sides: softmax layer weighting (WavLM), Linear + LayerNorm,
`torch.nn.TransformerEncoder` (post-norm, ReLU, key-padding mask; eval), masked mean pooling,
Linear, range activation (MOS 1..5);
the torch head's weights are copied into ours. Prints clips/s of both (median of `--repeats`
calls after a warm-up call that compiles; ours and torch alternate so that both see the same
machine load, each call SETTLE_S after the other side's), process CPU seconds per clip, the
speed-up ours vs torch in wall and CPU time, and the largest prediction difference. torch uses its
default thread count, XLA:CPU all cores. On a shared machine the CPU-time ratio is the steadier
figure. A second line per front-end gives the ceiling that the float32 matrix-product rate sets:
our FLOPs per clip (XLA's cost analysis) at XLA's best 2048 x 2048 product rate measured in the
same run, the largest speed-up over torch that this allows, and the fraction of that rate ours
reaches.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from urgent_jax import configure_cpu_kernels, configure_host_allocator  # noqa: E402
from urgent_jax.metrics import distillmos  # noqa: E402
from urgent_jax.models import sqa, wavlm  # noqa: E402

SAMPLE_RATE = 16000
SETTLE_S = 0.2  # pause before each timed call (timing.interleaved_median_times' settle_s)


def speech_like(batch: int, num_samples: int, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated coloured noise [B, T] (float32): enough for timing, no data files."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, num_samples)).astype(np.float32)
    x = np.cumsum(x, axis=1) * 0.02
    x -= x.mean(axis=1, keepdims=True)
    t = np.arange(num_samples) / SAMPLE_RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t + rng.uniform(0, 6, (batch, 1)))
    return (0.1 * x * envelope / np.abs(x).max(axis=1, keepdims=True)).astype(np.float32)


# --- torch side ---------------------------------------------------------------------------------


def torch_head(torch, in_dim: int, num_states: int, args):
    nn = torch.nn

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer_logits = nn.Parameter(torch.randn(num_states) * 0.1)
            self.projection = nn.Linear(in_dim, args.d_model)
            self.norm = nn.LayerNorm(args.d_model)
            layer = nn.TransformerEncoderLayer(
                args.d_model, args.num_heads, args.ffn_dim, dropout=0.1, batch_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, args.num_layers, enable_nested_tensor=False)
            self.head = nn.Linear(args.d_model, 1)

        def forward(self, states, mask):  # states [S, B, T, F], mask [B, T] bool
            w = torch.softmax(self.layer_logits, 0)
            x = torch.einsum("s,sbtf->btf", w, states) if states.shape[0] > 1 else states[0]
            x = self.norm(self.projection(x))
            x = self.encoder(x, src_key_padding_mask=~mask)
            x = x * mask[..., None]
            pooled = x.sum(1) / mask.sum(1, keepdim=True)
            return 1 + 4 * torch.sigmoid(self.head(pooled))

    return Head().eval()


def head_params(head, num_states: int) -> dict:
    """Torch head state -> the non-front-end params of UniVersaExt."""
    s = {k: v.detach().numpy() for k, v in head.state_dict().items()}
    p = {
        "projection": {"kernel": s["projection.weight"].T, "bias": s["projection.bias"]},
        "projection_norm": {"scale": s["norm.weight"], "bias": s["norm.bias"]},
        "head": {"kernel": s["head.weight"].T, "bias": s["head.bias"]},
    }
    if num_states > 1:
        p["layer_weights"] = s["layer_logits"]
    for i in range(len(head.encoder.layers)):
        src = f"encoder.layers.{i}"
        w = lambda n: s[f"{src}.{n}.weight"]  # noqa: E731
        b = lambda n: s[f"{src}.{n}.bias"]  # noqa: E731
        lin = lambda n: {"kernel": w(n).T, "bias": b(n)}  # noqa: E731
        norm = lambda n: {"scale": w(n), "bias": b(n)}  # noqa: E731
        p[f"encoder_layers_{i}"] = {
            "in_proj": {
                "kernel": s[f"{src}.self_attn.in_proj_weight"].T,
                "bias": s[f"{src}.self_attn.in_proj_bias"],
            },
            "out_proj": lin("self_attn.out_proj"),
            "linear1": lin("linear1"),
            "linear2": lin("linear2"),
            "norm1": norm("norm1"),
            "norm2": norm("norm2"),
        }
    return p


def build_distillmos(torch, args):
    stub = "torchaudio" not in sys.modules  # distillmos.sqa imports torchaudio only for file I/O
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    try:
        from distillmos.sqa import ConvTransformerSQAModel
    finally:
        if stub:
            del sys.modules["torchaudio"]
    ref = ConvTransformerSQAModel(load_weights=True).eval()
    head = torch_head(torch, 200, 1, args)
    crop = distillmos.CROP_SAMPLES

    def torch_fn(audio):  # [B, T] tensor, T <= 7.68 s
        x = torch.nn.functional.pad(audio, (0, crop - audio.shape[1]))
        x = x / (x.abs().max(dim=1, keepdim=True).values + 1e-8)
        feat = ref.cnn(x).permute(0, 2, 1)  # [B, 384, 1024]
        tpa = ref.transformer_pool_attn
        h = tpa.norm_input(feat.transpose(-1, -2)).transpose(-1, -2)
        h = tpa.norm_trans(tpa.transformer(h).transpose(-1, -2)).transpose(-1, -2)
        frames = -(-audio.shape[1] // 320)
        h = h[:, :frames]  # the frames after the clip's end (masked anyway), as ours drops them
        mask = torch.ones(h.shape[:2], dtype=torch.bool)
        return head(h[None], mask)[:, 0]

    model = sqa.UniVersaExt(
        frontend="distillmos",
        d_model=args.d_model,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        ffn_dim=args.ffn_dim,
    )
    loaded = sqa.load_frontend("distillmos")
    variables = {k: {"frontend": v} for k, v in loaded.items()}
    variables["params"].update(head_params(head, 1))
    return model, variables, torch_fn


def build_wavlm(torch, args):
    import transformers

    torch.manual_seed(0)
    ref = transformers.WavLMModel(transformers.WavLMConfig()).eval()
    config = wavlm.WavLMConfig()
    head = torch_head(torch, config.hidden_size, config.num_hidden_layers + 1, args)

    def torch_fn(audio):
        n = audio.shape[1]
        attention_mask = torch.ones_like(audio, dtype=torch.long)
        out = ref(audio, attention_mask=attention_mask, output_hidden_states=True)
        states = torch.stack(out.hidden_states)  # [L + 1, B, T', D]
        frames = wavlm.conv_output_lengths(n, config.conv_kernel, config.conv_stride)
        mask = (torch.arange(states.shape[2]) < frames)[None].expand(audio.shape[0], -1)
        return head(states, mask)[:, 0]

    model = sqa.UniVersaExt(
        frontend="wavlm",
        d_model=args.d_model,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        ffn_dim=args.ffn_dim,
    )
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    params = {"frontend": {"wavlm": wavlm.convert_state_dict(config, state)}}
    params.update(head_params(head, config.num_hidden_layers + 1))
    return model, {"params": params}, torch_fn


# --- main ---------------------------------------------------------------------------------------


def clip_flops(model, variables, num_samples: int) -> float:
    """Floating-point operations of one clip through our network (XLA's cost analysis)."""
    x, n = jnp.zeros((1, num_samples), jnp.float32), jnp.full((1,), num_samples, jnp.int32)
    apply = jax.jit(lambda v, x, n: model.apply(v, x, n, train=False))
    cost = apply.lower(variables, x, n).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def matmul_rates(torch, size: int = 2048, repeats: int = 10) -> tuple[float, float]:
    """Best float32 FLOP/s of a size x size matrix product: (XLA, torch), measured now."""
    a = jnp.ones((size, size), jnp.float32)
    product = jax.jit(lambda a: a @ a)
    product(a).block_until_ready()
    ta = torch.ones(size, size)
    # one side after the other: right after a torch call its idle threads still spin for a while
    # and slow XLA's next product down (~15% here)
    best = (
        min(timed(lambda: product(a).block_until_ready())[0] for _ in range(repeats)),
        min(timed(lambda: ta @ ta)[0] for _ in range(repeats)),
    )
    return tuple(2 * size**3 / t for t in best)


def timed(fn) -> tuple[float, float]:
    """(wall s, process CPU s, all threads) of one call of fn."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frontends", nargs="+", default=["distillmos", "wavlm"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--chunk", type=int, default=0,
        help="examples per inference step (0: make_predict's default, 2 on CPU, all on GPU)",
    )
    parser.add_argument("--d_model", type=int, default=768)
    parser.add_argument("--num_layers", type=int, default=6)
    parser.add_argument("--num_heads", type=int, default=8)
    parser.add_argument("--ffn_dim", type=int, default=2048)
    args = parser.parse_args(argv)

    import torch

    configure_cpu_kernels()  # before the first computation
    configure_host_allocator()
    num_samples = int(args.seconds * SAMPLE_RATE)
    audio = speech_like(args.batch, num_samples)
    lengths = np.full((args.batch,), num_samples, np.int32)
    print(
        f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), cpus {os.cpu_count()}, "
        f"load {os.getloadavg()[0]:.1f}; "
        f"batch {args.batch} x {args.seconds:g} s at 16 kHz, median of {args.repeats}"
    )
    builders = {"distillmos": build_distillmos, "wavlm": build_wavlm}
    for name in args.frontends:
        model, variables, torch_fn = builders[name](torch, args)
        variables = jax.tree_util.tree_map(jnp.asarray, variables)
        apply = sqa.make_predict(model, args.chunk or None)  # as sqa.infer runs it
        x, n, x_torch = jnp.asarray(audio), jnp.asarray(lengths), torch.from_numpy(audio)
        ours = lambda: np.asarray(apply(variables, x, n))[:, 0]  # noqa: E731
        with torch.inference_mode():
            ref = lambda: torch_fn(x_torch).numpy()  # noqa: E731
            pred, pred_ref = ours(), ref()  # warm-up (compiles)
            times = {"ours": [], "torch": []}  # interleaved: both see the same machine load
            for _ in range(args.repeats):
                for key, fn in (("ours", ours), ("torch", ref)):
                    time.sleep(SETTLE_S)  # the other side's thread pools stop spinning
                    times[key].append(timed(fn))
        (wall, cpu), (wall_ref, cpu_ref) = (np.median(times[k], axis=0) for k in ("ours", "torch"))
        print(
            f"{name:10s} ours {args.batch / wall:7.2f} clips/s ({cpu / args.batch:6.2f} CPU-s/clip)"
            f"   torch {args.batch / wall_ref:7.2f} clips/s "
            f"({cpu_ref / args.batch:6.2f} CPU-s/clip)"
            f"   ratio {wall_ref / wall:5.2f}x (CPU time {cpu_ref / cpu:5.2f}x)"
            f"   max |pred diff| {np.max(np.abs(pred - pred_ref)):.2e}",
            flush=True,
        )
        # What the float32 matrix-product rate allows: our FLOPs at XLA's best 2048^2 rate
        flops = clip_flops(model, variables, num_samples)
        rate, rate_torch = matmul_rates(torch)
        floor = flops / rate  # s per clip
        print(
            f"{'':10s} ceiling: {flops / 1e9:.1f} GFLOP/clip (XLA cost analysis); at XLA's "
            f"{rate / 1e9:.0f} GFLOP/s (2048^2 float32; torch {rate_torch / 1e9:.0f}) >= "
            f"{1e3 * floor:.0f} ms/clip, so at most {wall_ref / args.batch / floor:.2f}x "
            f"torch's {1e3 * wall_ref / args.batch:.0f} ms/clip; ours reaches "
            f"{flops * args.batch / wall / rate:.0%} of that rate",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
