"""Discriminative band-split RNN (BSRNN), the URGENT 2026 Track 1 baseline (REFERENCE.md §3.2).

ESPnet `BSRNNSeparator` between an STFT encoder/decoder: the noisy spectrum X is split into bands,
processed by dual-path RNN layers, and two decoder heads predict a complex mask m and residual r;
the output spectrum is m·X + r. Sizes are fields; the defaults are the official baseline
(N = 196, 6 layers, 37,800,844 parameters). `is_causal=True` uses a unidirectional time LSTM as
ESPnet's causal option does; ESPnet leaves the norm to `norm_type`, whose "GN" looks at the whole
utterance, so a truly causal model also needs a per-frame norm ("cLN", the `bsrnn_causal` entry).

Padded batches: norm statistics use valid frames only and the time BLSTM stops at each item's
last valid frame, so padding does not change an item's output (the reference includes padding;
equal-length batches give identical results).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from urgent_jax.models import layers
from urgent_jax.models.frontend import STFTFrontEnd

# Bins per band of the 48 kHz, 960-point STFT (481 bins, 34 bands): 0–200 Hz, 19×200 Hz to 4 kHz,
# 6×500 Hz to 7 kHz, 7×2 kHz to 21 kHz, 21–24 kHz (ESPnet BandSplit for input_dim 481).
BANDS_481 = (5,) + (4,) * 19 + (10,) * 6 + (40,) * 7 + (60,)


class DecoderHead(nn.Module):
    """A mask-decoder head, per band: norm1d → 1x1 N→4N → tanh → 1x1 4N→4w → GLU → (bin, re/im)."""

    band_widths: tuple[int, ...]  # whole layout
    num_channels: int  # N
    norm_type: str = "GN"  # "GN" | "cLN"
    dtype: layers.Dtype = jnp.float32
    param_dtype: layers.Dtype = jnp.float32

    @nn.compact
    def __call__(self, z, frame_mask):  # z [B, T, K, N] -> [B, T, sum(widths[:K]), 2] float32
        batch, frames, bands, n = z.shape
        all_bands = len(self.band_widths)
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        (z,) = layers.BandNorm((n,) * all_bands, self.norm_type, name="norm", **kw)([z], frame_mask)
        fc1 = layers.BandDense(
            (n,) * all_bands, (4 * n,) * all_bands, ("embed", "mlp"), name="fc1", **kw
        )
        (h,) = fc1([z])
        h = jnp.tanh(h)  # [B, T, K, 4N]
        runs = layers.band_runs(self.band_widths[:bands])
        parts = [h[:, :, b0 : b0 + count] for b0, count, _, _ in runs]
        out_features = tuple(4 * w for w in self.band_widths)
        fc2 = layers.BandDense(
            (4 * n,) * all_bands, out_features, ("mlp", "channel"), name="fc2", **kw
        )
        # per run [B, T, c, 4w] -> GLU -> [B, T, c, 2w] -> [B, T, c·w, 2]
        outs = [layers.glu(o.astype(jnp.float32)).reshape(batch, frames, -1, 2) for o in fc2(parts)]
        return jnp.concatenate(outs, axis=2)


class MaskDecoder(nn.Module):
    """Two independent heads: complex mask m and residual r, each [B, T, F', 2]."""

    band_widths: tuple[int, ...]
    num_channels: int
    norm_type: str = "GN"
    dtype: layers.Dtype = jnp.float32
    param_dtype: layers.Dtype = jnp.float32

    def setup(self):
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        self.mask = DecoderHead(self.band_widths, self.num_channels, self.norm_type, **kw)
        self.residual = DecoderHead(self.band_widths, self.num_channels, self.norm_type, **kw)

    def __call__(self, z, frame_mask):
        return self.mask(z, frame_mask), self.residual(z, frame_mask)


class BSRNN(nn.Module):
    """BSRNN enhancement model: noisy waveform [B, T] (+ lengths) -> enhanced waveform [B, T].

    `sample_rate` is a static Python int; STFT sizes scale with it (960/480 samples at 48 kHz) and
    the bands are consumed until the input's bins are covered.
    """

    num_channels: int = 196  # N, band feature size (official baseline 196; 37,800,844 parameters)
    num_layers: int = 6  # dual-path layers
    band_widths: tuple[int, ...] = BANDS_481  # bins per band at default_fs
    is_causal: bool = False  # unidirectional time LSTM (ESPnet `causal`)
    norm_type: str = "GN"  # "GN" | "cLN" | "cfLN" (band split/decoder use cLN for cfLN, as ESPnet)
    n_fft: int = 960  # STFT size at default_fs (20 ms)
    hop_length: int = 480  # STFT hop at default_fs (10 ms)
    default_fs: int = 48000  # Hz
    use_remat: bool = False  # recompute dual-path layers in the backward pass; no gain on XLA:CPU
    dtype: layers.Dtype = jnp.float32  # compute dtype (e.g. bfloat16 on accelerators); STFT in fp32
    param_dtype: layers.Dtype = jnp.float32  # parameter storage dtype

    def setup(self):
        layers.check_band_layout(self.band_widths, self.n_fft)
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        norm1d = "cLN" if self.norm_type == "cfLN" else self.norm_type
        self.band_split = layers.BandSplit(self.band_widths, self.num_channels, norm1d, **kw)
        block = nn.remat(layers.DualPathBlock) if self.use_remat else layers.DualPathBlock
        # setup names the entries layers_0, layers_1, ... with or without remat: same tree
        self.layers = [
            block(self.num_channels, self.is_causal, self.norm_type, **kw)
            for _ in range(self.num_layers)
        ]
        self.mask_decoder = MaskDecoder(self.band_widths, self.num_channels, norm1d, **kw)

    @property
    def frontend(self) -> STFTFrontEnd:
        return STFTFrontEnd(self.n_fft, self.hop_length, None, self.default_fs)

    def separate(self, spec, frame_counts):
        """Noisy spectrum complex64 [B, T, F], valid frame counts [B] -> enhanced [B, T, F]."""
        frames, bins = spec.shape[1], spec.shape[2]
        frame_mask = jnp.arange(frames)[None, :] < frame_counts[:, None]
        spec_ri = jnp.stack([spec.real, spec.imag], axis=-1)  # [B, T, F, 2]
        z = self.band_split(spec_ri, frame_mask)  # [B, T, K, N]
        for block in self.layers:
            z = block(z, frame_counts)
        m, r = self.mask_decoder(z, frame_mask)  # [B, T, F', 2] each, F' ≥ F
        m = jnp.asarray(m[:, :, :bins, 0] + 1j * m[:, :, :bins, 1], jnp.complex64)
        r = jnp.asarray(r[:, :, :bins, 0] + 1j * r[:, :, :bins, 1], jnp.complex64)
        return m * spec + r

    def __call__(self, noisy, lengths=None, *, sample_rate: int = 48000):
        """noisy float [B, T], lengths int [B] or None -> enhanced float32 [B, T]."""
        frontend = self.frontend
        spec, counts = frontend.encode(noisy, lengths, sample_rate)  # [B, frames, bins] complex64
        enhanced = self.separate(spec, counts)
        return frontend.decode(enhanced, lengths, sample_rate, noisy.shape[-1])

    def example_inputs(self, sample_rate: int = 48000, batch_size: int = 1, num_samples=None):
        """(args, kwargs) for init/eval_shape: 0.1 s of silence by default."""
        num_samples = num_samples or sample_rate // 10
        noisy = jnp.zeros((batch_size, num_samples), jnp.float32)
        lengths = jnp.full((batch_size,), num_samples, jnp.int32)
        return (noisy, lengths), {"sample_rate": sample_rate}
