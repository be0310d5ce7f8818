"""Generative BSRNN-FlowSE: flow matching on compressed spectra (REFERENCE.md §3.3).

The network predicts the vector field v(x_t, t, y) from the current state x_t and the noisy
conditioner y (both compressed complex spectra [B, T, F]): two band-splits (x_t, y) are concatenated
and projected to N, six dual-path layers add a fixed Gaussian Fourier embedding of t after each
time-path norm, and two "GradDecoder" heads (per-band 1x1 conv to 16w, tanh, a 5x5 conv over
(freq, time), GLU) give a mask m and residual r; g = m·x_t + r and v = −g.

Flow matching (sigma_min 0.05, sigma_max 0.5, t in (0.03, 1]): μ_t = (1−t)x₀ + t·y,
σ_t = (1−t)σ_min + t·σ_max, x_t = μ_t + σ_t·z with z complex normal (variance ½ per part), target
u = (σ_max − σ_min)·z + (y − x₀), loss = batch mean of ½·Σ_{T,F}|v − u|². Sampling integrates
x ← x − Δ·v from x = y + σ_max·z over τ = linspace(1, 0.03, N) (Euler; the last step is Δ = 0.03).

Functions, not module methods, own the sampler and the draws: `enhance(model, variables, ...)`,
`sample_time` and `complex_normal` are pure functions of (variables, batch, key). The training
objective is `urgent_jax.losses.flow.flow_matching_loss(model, variables, ...)` (losses rank above
models, so the loss imports this module, never the reverse). The fixed Fourier weights live in the
'constants' collection, so variables = {'params': ..., 'constants': ...} and optimisers only see
'params'.

Deliberate difference for padded batches: padded frames are masked out of the loss and the noise
(`losses.flow`; the reference gives them pure-noise targets, REFERENCE.md §6.12); norms use valid
frames only, the time BLSTM stops at each item's end and the decoder's 2-D conv sees zeros beyond
it, so padding does not change valid outputs.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from urgent_jax.audio.spectral import compress_spec, decompress_spec
from urgent_jax.models import layers
from urgent_jax.models.frontend import STFTFrontEnd

# Bins per band of the 48 kHz, 1536-point STFT (769 bins, 48 bands, 31.25 Hz per bin): 0–125 Hz,
# 26×4 bins to 3375 Hz, 10×10 to 6500 Hz, 10×50 to 22125 Hz, 22125–24000 Hz.
BANDS_769 = (5,) + (4,) * 26 + (10,) * 10 + (50,) * 10 + (60,)


def _to_re_im(spec):
    """complex [B, T, F] -> float32 [B, T, F, 2] (re, im)."""
    return jnp.stack([spec.real, spec.imag], axis=-1).astype(jnp.float32)


class FourierTimeEmbedding(nn.Module):
    """Fixed Gaussian Fourier features of t: [sin(2πtW), cos(2πtW)], W ~ N(0, scale²)^(N/2).

    W is a 'constants' variable: drawn at init, never trained.
    """

    num_features: int  # N (W has N/2 entries)
    scale: float = 1.0  # std of W

    @nn.compact
    def __call__(self, t):  # t [B] -> [B, N] float32
        half = self.num_features // 2
        w = self.variable(
            "constants",
            "W",
            lambda: self.scale * jax.random.normal(self.make_rng("params"), (half,), jnp.float32),
        ).value
        proj = t.astype(jnp.float32)[:, None] * w[None, :] * 2.0 * jnp.pi
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class GradDecoderHead(nn.Module):
    """One GradDecoder head: per band norm1d → 1x1 N→Cw → tanh; [B, T, F', C] → 5x5 conv → 4 → GLU.

    C = sub_channels (16) is the outer index of a band's C·w outputs, as the reference views them.
    Frames beyond each item's count are zeroed before the conv so padding cannot leak into them.
    """

    band_widths: tuple[int, ...]  # whole layout
    num_channels: int  # N
    sub_channels: int = 16  # C
    norm_type: str = "GN"  # "GN" | "cLN"
    dtype: layers.Dtype = jnp.float32
    param_dtype: layers.Dtype = jnp.float32

    @nn.compact
    def __call__(self, z, frame_mask):  # z [B, T, K, N] -> [B, T, sum(widths[:K]), 2] float32
        batch, frames, bands, n = z.shape
        c = self.sub_channels
        all_bands = len(self.band_widths)
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        (z,) = layers.BandNorm((n,) * all_bands, self.norm_type, name="norm", **kw)([z], frame_mask)
        runs = layers.band_runs(self.band_widths[:bands])
        parts = [z[:, :, b0 : b0 + count] for b0, count, _, _ in runs]
        out_features = tuple(c * w for w in self.band_widths)
        fc = layers.BandDense((n,) * all_bands, out_features, ("embed", "channel"), name="fc", **kw)
        maps = []
        for h, (_, count, width, _) in zip(fc(parts), runs):
            h = jnp.tanh(h.astype(jnp.float32)).reshape(batch, frames, count, c, width)
            maps.append(h.transpose(0, 1, 2, 4, 3).reshape(batch, frames, count * width, c))
        h = jnp.concatenate(maps, axis=2) * frame_mask[:, :, None, None]  # [B, T, F', C]
        specs = [  # Conv2d(C, 4, 5x5): kernel [time, freq, in, out], fan-in C·25
            ("kernel", (5, 5, c, 4), c * 25, (None, None, "channel", None)),
            ("bias", (4,), c * 25, (None,)),
        ]
        kernel, bias = layers.torch_uniform_params(self, specs, self.param_dtype)
        out = jax.lax.conv_general_dilated(
            h.astype(self.dtype),
            kernel.astype(self.dtype),
            window_strides=(1, 1),
            padding=((2, 2), (2, 2)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        out = out.astype(jnp.float32) + bias.astype(jnp.float32)  # [B, T, F', 4]
        return layers.glu(out)  # [B, T, F', 2] (re, im)


class GradDecoder(nn.Module):
    """Two GradDecoder heads: mask m and residual r."""

    band_widths: tuple[int, ...]
    num_channels: int
    sub_channels: int = 16
    norm_type: str = "GN"
    dtype: layers.Dtype = jnp.float32
    param_dtype: layers.Dtype = jnp.float32

    def setup(self):
        args = (self.band_widths, self.num_channels, self.sub_channels, self.norm_type)
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        self.mask = GradDecoderHead(*args, **kw)
        self.residual = GradDecoderHead(*args, **kw)

    def __call__(self, z, frame_mask):
        return self.mask(z, frame_mask), self.residual(z, frame_mask)


class FlowSE(nn.Module):
    """BSRNN-FlowSE vector field v(x_t, y, t) on compressed spectra, plus its front-end settings.

    `__call__(x_t, y, t, frame_counts)` is the network; `encode`/`decode` (no parameters) map
    between waveforms and compressed spectra at every supported rate; see `enhance` and
    `losses.flow.flow_matching_loss`.
    """

    num_channels: int = 384  # N (`bsrnn_hidden`); ≈103.2 M parameters at 6 layers
    num_layers: int = 6  # dual-path layers
    band_widths: tuple[int, ...] = BANDS_769  # bins per band at default_fs
    sub_channels: int = 16  # GradDecoder channels before the 5x5 conv
    is_causal: bool = False  # unidirectional time LSTM
    norm_type: str = "GN"  # "GN" | "cLN" | "cfLN"
    fourier_scale: float = 1.0  # std of the fixed Fourier weights
    n_fft: int = 1536  # STFT size at default_fs (32 ms)
    hop_length: int = 384  # STFT hop at default_fs (8 ms)
    default_fs: int = 48000  # Hz
    spec_exponent: float = 0.667  # compression |X|^e
    spec_factor: float = 0.065  # compression scale
    sigma_min: float = 0.05  # flow-matching std at t = 0
    sigma_max: float = 0.5  # flow-matching std at t = 1 (and the prior's)
    t_eps: float = 0.03  # smallest t (training draw and last sampler time)
    t_max: float = 1.0  # largest t (T_rev)
    use_remat: bool = False  # recompute dual-path layers in the backward pass; no gain on XLA:CPU
    dtype: layers.Dtype = jnp.float32  # compute dtype; STFT, loss and sampler state stay float32
    param_dtype: layers.Dtype = jnp.float32

    def setup(self):
        layers.check_band_layout(self.band_widths, self.n_fft)
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        norm1d = "cLN" if self.norm_type == "cfLN" else self.norm_type
        n = self.num_channels
        self.band_split_x = layers.BandSplit(self.band_widths, n, norm1d, **kw)
        self.band_split_y = layers.BandSplit(self.band_widths, n, norm1d, **kw)
        self.condition_fc = layers.Linear(n, ("mlp", "embed"), **kw)
        self.time_embeddings = [
            FourierTimeEmbedding(n, self.fourier_scale) for _ in range(self.num_layers)
        ]
        block = nn.remat(layers.DualPathBlock) if self.use_remat else layers.DualPathBlock
        self.layers = [
            block(n, self.is_causal, self.norm_type, **kw) for _ in range(self.num_layers)
        ]
        self.grad_decoder = GradDecoder(self.band_widths, n, self.sub_channels, norm1d, **kw)

    def __call__(self, x_t, y, t, frame_counts):
        """x_t, y compressed spectra complex [B, T, F], t [B], frame_counts [B] -> v [B, T, F]."""
        frames, bins = x_t.shape[1], x_t.shape[2]
        frame_mask = jnp.arange(frames)[None, :] < frame_counts[:, None]
        zx = self.band_split_x(_to_re_im(x_t), frame_mask)  # [B, T, K, N]
        zy = self.band_split_y(_to_re_im(y), frame_mask)
        z = self.condition_fc(jnp.concatenate([zx, zy], axis=-1)).astype(jnp.float32)
        for embed, block in zip(self.time_embeddings, self.layers):
            z = block(z, frame_counts, embed(t))
        m, r = self.grad_decoder(z, frame_mask)  # [B, T, F', 2] each
        m = jnp.asarray(m[:, :, :bins, 0] + 1j * m[:, :, :bins, 1], jnp.complex64)
        r = jnp.asarray(r[:, :, :bins, 0] + 1j * r[:, :, :bins, 1], jnp.complex64)
        return -(m * x_t + r)

    # --- front-end (no parameters; usable on an unbound module) ---

    @property
    def frontend(self) -> STFTFrontEnd:
        return STFTFrontEnd(self.n_fft, self.hop_length, None, self.default_fs)

    def encode(self, wave, lengths, sample_rate: int):
        """wave [B, T] -> (compressed spectrum complex64 [B, frames, bins], frame counts [B])."""
        spec, counts = self.frontend.encode(wave, lengths, sample_rate)
        return compress_spec(spec, self.spec_exponent, self.spec_factor), counts

    def decode(self, spec, lengths, sample_rate: int, num_samples: int):
        """Compressed spectrum [B, frames, bins] -> waveform float32 [B, num_samples]."""
        spec = decompress_spec(spec, self.spec_exponent, self.spec_factor)
        return self.frontend.decode(spec, lengths, sample_rate, num_samples)

    def example_inputs(self, sample_rate: int = 48000, batch_size: int = 1, num_samples=None):
        """(args, kwargs) of `__call__` for init/eval_shape: 0.1 s of zeros by default."""
        num_samples = num_samples or sample_rate // 10
        frames = self.frontend.num_frames(num_samples, sample_rate)
        spec = jnp.zeros((batch_size, frames, self.frontend.num_bins(sample_rate)), jnp.complex64)
        t = jnp.ones((batch_size,), jnp.float32)
        return (spec, spec, t, jnp.full((batch_size,), frames, jnp.int32)), {}


def sample_time(key, batch_size: int, t_eps: float = 0.03, t_max: float = 1.0):
    """Training times t = (1 − U[0, 1))·(t_max − t_eps) + t_eps ∈ (t_eps, t_max], float32 [B]."""
    u = jax.random.uniform(key, (batch_size,), jnp.float32)
    return jnp.minimum((1.0 - u) * (t_max - t_eps) + t_eps, t_max)


def complex_normal(key, shape):
    """Complex standard normal: real and imaginary parts of variance ½ (torch complex randn)."""
    parts = jax.random.normal(key, (2,) + tuple(shape), jnp.float32) * jnp.sqrt(0.5)
    return jax.lax.complex(parts[0], parts[1])


def sampler_steps(num_steps: int, t_eps: float = 0.03, t_max: float = 1.0):
    """Euler sampler (times τ_i, steps Δ_i): τ = linspace(t_max, t_eps, N), Δ_{N−1} = τ_{N−1}."""
    times = jnp.linspace(t_max, t_eps, num_steps, dtype=jnp.float32)
    steps = jnp.concatenate([times[:-1] - times[1:], times[-1:]])
    return times, steps


@functools.partial(jax.jit, static_argnames=("model", "sample_rate", "num_steps"))
def enhance(model: FlowSE, variables, noisy, lengths, sample_rate: int, key, num_steps: int = 15):
    """Euler-sampled enhancement, entirely under jit: noisy [B, T] -> enhanced float32 [B, T].

    num_steps ≥ 1 Euler steps (static); inputs are checked as the front-end does (`encode`).
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int (Euler steps), got {num_steps!r}")
    y, counts = model.encode(noisy, lengths, sample_rate)
    x = y + model.sigma_max * complex_normal(key, y.shape)
    times, steps = sampler_steps(num_steps, model.t_eps, model.t_max)

    def body(i, x):
        t = jnp.full((y.shape[0],), times[i])
        return x - steps[i] * model.apply(variables, x, y, t, counts)

    x = jax.lax.fori_loop(0, num_steps, body, x)
    return model.decode(x, lengths, sample_rate, noisy.shape[-1])
