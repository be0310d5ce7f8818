"""Distill-MOS (REFERENCE.md §4.3): `distillmos.ConvTransformerSQAModel` in flax, with its weights.

Non-intrusive MOS in [1, 5] from 16 kHz speech. `distill_mos(est, lengths, sample_rate)` scores a
padded batch; `DistillMOS` is the network on normalised 7.68 s crops (`DistillMOS.embed` gives the
[N, 384, 200] frame features before pooling, for fine-tuning); `load_params` converts the shipped
torch checkpoint (`distillmos/weights/distill_mos_v7.pt`, distillmos 0.9.1) once and caches it.

Per example (reference `ConvTransformerSQAModel.forward` with segmenting on):
  1. resample to 16 kHz with torchaudio's `Resample` defaults, as the reference CLI does (one file at
     a time): `audio.resample_sinc_hann` (Hann-windowed sinc, 6 zero crossings, rolloff 0.99), on the
     batch with the samples past each example's length zeroed, so each example's first
     `sinc_hann_resampled_lengths` outputs (torchaudio's output length) are the reference's;
  2. crops of 122880 samples: shorter input is zero-padded at the end; input with overlength
     O = L - 122880 gives n = ceil(O / 16000) + 1 crops starting at int(c * O) for c in
     linspace(0, 1, n) (float64 rounding reproduced exactly, see `crop_starts`);
  3. each crop divided by max|x| + 1e-8; network -> sigmoid output q; MOS = 1 + 4 * mean_crops(q).

Details from distillmos/sqa.py and xls_r_sqa (sqa_model, transformer_wrapper, pool_att_ff, config)
that REFERENCE.md §4.3 leaves implicit:
  - features: reflect pad (320 - 160) / 2 = 80, torch.stft(n_fft = win = 320, hop 160, periodic
    Hann, center=False) -> 768 frames x 161 bins; mag = sqrt(re^2 + im^2) clipped at 1e-12, output
    mag^0.3 * (re, im) / mag (channel 0 real, 1 imaginary);
  - CNN: Conv2d layers at Sequential indices 0, 2, ..., 10 of `cnn.cnn` (LeakyReLU in between);
  - the two BatchNorm1d(1024) are `transformer_pool_attn.norm_input` (SingleLayerModel) and
    `transformer_pool_attn.transformer.norm` (TransformerWrapper); every BatchNorm has eps 1e-5;
  - transformer: torch `TransformerEncoderLayer` defaults (post-norm, LayerNorm eps 1e-5, ReLU,
    FFN 2 * 200; dropout 0.0 from xls_r_sqa's Config), packed q/k/v `in_proj`, scores scaled by
    1/sqrt(200 / 8), no final LayerNorm;
  - positions: buffer `pe`, seq_len = FEAT_SEQ_LEN = 384, frequencies exp(-2i ln(2 * 384) / 200),
    added after `linear_proj`. The reference computes it in float32 (up to 3e-5 off the formula) and
    the checkpoint stores it; that stored table is used (collection 'buffers');
  - pooling (NISQA PoolAttFF): softmax over time of linear2(ReLU(linear1(x))) (200 -> 400 -> 1),
    weighted sum of x, linear3 (200 -> 1); no masking (crops are always full length).
Differences beyond float rounding: none in the scores; a padded batch gets the longest example's crop
count for every example, the extra crops are masked out of the mean.

Layout: time-major, the spectrum is [N, 768 frames, 161 bins, 2] (NHWC for the convolutions)
instead of the reference [N, 2, 161, 768]; the CNN output is flattened channel-major then frequency
as in the reference, so the head's weights keep their meaning.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import os
import tempfile
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

import urgent_jax
from urgent_jax.audio.resample import resample_sinc_hann, sinc_hann_resampled_lengths
from urgent_jax.audio.stft import stft
from urgent_jax.metrics import torch_checkpoint
from urgent_jax.metrics.conv import conv3x3

DISTILLMOS_INSTALL_HINT = "pip install --no-deps distillmos==0.9.1"
SAMPLE_RATE = 16000  # Hz, the model's rate
CROP_SAMPLES = 122880  # 7.68 s window (SEQ_LEN)
CROP_HOP_SAMPLES = 16000  # longest distance between crop starts (MAX_HOP_LEN)
N_FFT = 320  # = win_length, 20 ms
HOP_LENGTH = 160  # 10 ms
_CONVERSION_VERSION = "v1"  # bump when the torch -> flax conversion changes (invalidates the cache)

Precision = Any  # jax.lax.Precision | str | None


# --- network ----------------------------------------------------------------------------------


def compressed_spectrum(crops: jax.Array) -> jax.Array:
    """Power-law compressed complex STFT: [N, 122880] -> [N, 768 frames, 161 bins, 2 (re, im)].

    |X|^0.3 * X / |X| with |X| clipped at 1e-12; STFT 320/160 periodic Hann, no centring, of the
    crop reflect-padded by 80 samples each side (the reference `_complex_compressed`).
    """
    pad = (N_FFT - HOP_LENGTH) // 2
    x = jnp.pad(crops, ((0, 0), (pad, pad)), mode="reflect")
    spec = stft(x, N_FFT, HOP_LENGTH, window="hann", center=False)  # [N, 768, 161] complex
    ri = jnp.stack([spec.real, spec.imag], axis=-1)  # [N, T, F, 2]
    mag = jnp.maximum(jnp.sqrt(jnp.sum(ri**2, axis=-1, keepdims=True)), 1e-12)
    return mag**0.3 * ri / mag


class Conv3x3(nn.Module):
    """nn.Conv(features, (3, 3), strides, padding ((1, 1), (0, 0))) with the same parameters
    ('kernel' [3, 3, C, O], 'bias'), optionally computed with Winograd F(m, 3) along time."""

    features: int
    strides: tuple[int, int] = (1, 1)  # (time, frequency)
    precision: Precision = None
    winograd: int = 0  # m, output frames per Winograd group (4 or 6); 0: direct

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (3, 3, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        y = conv3x3(
            x,
            kernel,
            time_pad=(1, 1),
            freq_pad=(0, 0),
            strides=self.strides,
            precision=self.precision,
            winograd=self.winograd,
        )
        return y + bias


class ComplexSpecCNN(nn.Module):
    """Six 3x3 convolutions with LeakyReLU(0.1) on the spectrum (reference `_ComplexSpecCNN`).

    Padding 0 on frequency and 1 on time; frequency stride 2 after the first layer, time stride 2 in
    the last: [N, 768, 161, 2] -> [N, 384, 4, 256] -> [N, 384, 1024] (channel-major, then freq).
    """

    channels: tuple[int, ...] = (64, 64, 128, 256, 256, 256)  # per layer
    freq_strides: tuple[int, ...] = (1, 2, 2, 2, 2, 2)
    time_strides: tuple[int, ...] = (1, 1, 1, 1, 1, 2)
    negative_slope: float = 0.1  # LeakyReLU
    precision: Precision = None  # of the convolutions (None: backend default)

    def setup(self) -> None:
        # Winograd F(6, 3) along time (metrics/conv.py) on the time-stride-1 layers with >= 32
        # input channels: the four middle layers, ~40% faster there on 2 CPU cores.
        inputs = (2, *self.channels[:-1])
        self.convs = [
            Conv3x3(c, (ts, fs), self.precision, winograd=6 if ts == 1 and i >= 32 else 0)
            for c, i, fs, ts in zip(self.channels, inputs, self.freq_strides, self.time_strides)
        ]

    def _layers(self, x: jax.Array) -> jax.Array:
        for conv in self.convs:
            x = nn.leaky_relu(conv(x), self.negative_slope)
        return x  # [N, T, F, C] -> [N, T / 2, F', C']

    def __call__(self, spec: jax.Array, active_frames: int | None = None) -> jax.Array:
        """spec [N, T, F, 2] -> [N, T / 2, C * F'].

        active_frames (static): every frame from this index on is zero in all inputs (zero-padded
        short clips). The convolutions then run only on the frames that can reach signal; the other
        outputs are those of an all-zero input, computed once on a zero block ending at the last
        frame (so the end padding matches). Same result up to float rounding, fewer FLOPs.
        """
        n, t, _, _ = spec.shape
        # Output j of the stack (time strides 1, ..., 1, s; kernel 3, padding 1) depends on input
        # frames [s j - L, s j + L], L = number of layers: it sees only zeros from j = first_zero
        # on, and is unaffected by cutting the input after frame s * first_zero + L - 1.
        down, reach = self.time_strides[-1], len(self.channels)
        tail = 16 * down  # zero block; its first ceil(L / s) outputs see its artificial start edge
        skip = -(-reach // down)
        use_cut = (
            active_frames is not None
            and all(s == 1 for s in self.time_strides[:-1])
            and t % down == 0
            and down * (-(-(active_frames + reach) // down)) + reach + tail <= t
        )
        if not use_cut:
            x = self._layers(spec)
        else:
            first_zero = -(-(active_frames + reach) // down)
            head = self._layers(spec[:, : down * first_zero + reach])[:, :first_zero]
            zero = self._layers(jnp.zeros((1, tail, *spec.shape[2:]), spec.dtype))[0, skip:]
            num_steady = t // down - first_zero - zero.shape[0]
            steady = jnp.broadcast_to(zero[:1], (num_steady, *zero.shape[1:]))
            rest = jnp.concatenate([steady, zero], axis=0)  # outputs [first_zero, T / s)
            x = jnp.concatenate([head, jnp.broadcast_to(rest, (n, *rest.shape))], axis=1)
        n, t, f, c = x.shape
        return x.transpose(0, 1, 3, 2).reshape(n, t, c * f)  # [N, T, F, C] -> [N, T, C * F]


def positional_table(num_frames: int, dim: int) -> np.ndarray:
    """Sinusoidal positions [T, dim]: even dims sin, odd dims cos of t * exp(-2i ln(2 T) / dim).

    xls_r_sqa PositionalEncoding (seq_len = T) in float64. The reference computes it in float32
    (up to 3e-5 off) and the checkpoint stores that table, which `load_params` puts in the 'buffers'
    collection; this one only initialises the buffer.
    """
    position = np.arange(num_frames)[:, None]
    div_term = np.exp(np.arange(0, dim, 2) * (-math.log(2 * num_frames) / dim))
    table = np.zeros((num_frames, dim))
    table[:, 0::2] = np.sin(position * div_term)
    table[:, 1::2] = np.cos(position * div_term)
    return table.astype(np.float32)


ONES_COLUMN_MAX_DIM = 32  # value head widths below this get their softmax sums from a ones column


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    key_mask: jax.Array | None = None,
    bias: jax.Array | None = None,
    dropout: Any = None,
    precision: Precision = None,
) -> jax.Array:
    """Multi-head softmax attention: q, k [N, T, H, Dh], v [N, T, H, Dv] -> [N, T, H * Dv].

    Weights softmax_k(q.k / sqrt(Dh) + bias) over the keys, in float32; bias broadcasts to
    [N, H, T, T]; keys where key_mask [N, T] is False get weight 0; `dropout` (a function, or None)
    is applied to the normalised weights. The products run head-major ([N, H, T, Dh] operands: plain
    batched matmuls), and the softmax is normalised after the second product ([T, Dv] divisions,
    not [T, T]). For value heads narrower than ONES_COLUMN_MAX_DIM (and no dropout) the
    denominators come out of that product too, from a column of ones appended to v; for wider ones
    a separate sum over the weights is faster. Per call on 2 CPU cores, 2 examples (ones column /
    separate sum): 384 frames, 8 heads of 25 (Distill-MOS): 2.8 / 3.1 ms; 200 frames, 8 heads of 96
    (Uni-VERSA-Ext head): 2.4 / 2.0 ms; 200 frames, 12 heads of 64 (WavLM base): 2.5 / 2.1 ms.
    """
    value_dim = v.shape[-1]
    dtype = v.dtype
    q = q.transpose(0, 2, 1, 3) * np.asarray(q.shape[-1] ** -0.5, q.dtype)  # [N, H, T, Dh]
    k_t = k.transpose(0, 2, 3, 1)  # [N, H, Dh, T]
    v = v.transpose(0, 2, 1, 3)  # [N, H, T, Dv]
    scores = jnp.matmul(q, k_t, precision=precision).astype(jnp.float32)  # [N, H, T, T]
    if bias is not None:
        scores = scores + bias
    if key_mask is not None:
        scores = jnp.where(key_mask[:, None, None, :], scores, -jnp.inf)
    weights = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
    if dropout is None and value_dim < ONES_COLUMN_MAX_DIM:
        v = jnp.concatenate([v, jnp.ones((*v.shape[:-1], 1), dtype)], axis=-1)  # [N, H, T, Dv + 1]
        out = jnp.matmul(
            weights.astype(dtype), v, precision=precision, preferred_element_type=jnp.float32
        )
        out = out[..., :value_dim] / out[..., value_dim:]
    else:  # dropout of normalised weights == dropout of unnormalised ones, then the same division
        total = jnp.sum(weights, axis=-1, keepdims=True)
        if dropout is not None:
            weights = dropout(weights)
        out = jnp.matmul(
            weights.astype(dtype), v, precision=precision, preferred_element_type=jnp.float32
        )
        out = out / total
    n, h, t, _ = out.shape
    return out.astype(dtype).transpose(0, 2, 1, 3).reshape(n, t, h * value_dim)


class SelfAttention(nn.Module):
    """Multi-head self-attention with packed q/k/v projection (torch nn.MultiheadAttention)."""

    dim: int = 200  # model width
    num_heads: int = 8
    precision: Precision = None

    @nn.compact
    def __call__(self, x: jax.Array, num_queries: int | None = None) -> jax.Array:
        """[N, T, D] -> [N, T, D], or only the first num_queries (static) frames' outputs."""
        n, t, _ = x.shape
        head_dim = self.dim // self.num_heads
        qkv = nn.Dense(3 * self.dim, precision=self.precision, name="in_proj")(x)  # [N, T, 3D]
        qkv = qkv.reshape(n, t, 3, self.num_heads, head_dim)  # [N, T, qkv, H, Dh]
        out = dot_product_attention(
            qkv[:, :num_queries, 0], qkv[:, :, 1], qkv[:, :, 2], precision=self.precision
        )
        return nn.Dense(self.dim, precision=self.precision, name="out_proj")(out)


class EncoderLayer(nn.Module):
    """Post-norm transformer layer (torch nn.TransformerEncoderLayer defaults, dropout 0)."""

    dim: int = 200  # model width
    num_heads: int = 8
    ffn_dim: int = 400  # 2 * dim
    epsilon: float = 1e-5  # LayerNorm
    precision: Precision = None

    @nn.compact
    def __call__(self, x: jax.Array, num_queries: int | None = None) -> jax.Array:
        """[N, T, D] -> [N, T, D], or only the first num_queries (static) frames' outputs (all
        frames still serve as keys and values)."""
        attn = SelfAttention(self.dim, self.num_heads, self.precision, name="self_attn")(
            x, num_queries
        )
        x = x[:, :num_queries]
        x = nn.LayerNorm(self.epsilon, use_fast_variance=False, name="norm1")(x + attn)
        h = nn.relu(nn.Dense(self.ffn_dim, precision=self.precision, name="linear1")(x))
        h = nn.Dense(self.dim, precision=self.precision, name="linear2")(h)
        return nn.LayerNorm(self.epsilon, use_fast_variance=False, name="norm2")(x + h)


class TransformerEncoder(nn.Module):
    """BatchNorm -> Linear -> + positions -> post-norm layers (xls_r_sqa TransformerWrapper)."""

    dim: int = 200  # model width
    num_heads: int = 8
    num_layers: int = 7
    num_frames: int = 384  # length of the positional table = input frames
    epsilon: float = 1e-5  # BatchNorm and LayerNorm
    precision: Precision = None

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, num_queries: int | None = None
    ) -> jax.Array:
        """[N, T, C] -> [N, T, D]; num_queries (static): the last layer computes only the first
        num_queries frames' outputs (-> [N, num_queries, D])."""
        x = _batch_norm(self.epsilon, "norm")(x, use_running_average=not train)  # [N, T, C]
        x = nn.Dense(self.dim, precision=self.precision, name="linear_proj")(x)  # [N, T, D]
        pe = self.variable(
            "buffers", "pe", lambda: jnp.asarray(positional_table(self.num_frames, self.dim))
        )
        x = x + pe.value  # [N, T, D] + [T, D]
        for i in range(self.num_layers):
            layer = EncoderLayer(
                self.dim,
                self.num_heads,
                2 * self.dim,
                self.epsilon,
                self.precision,
                name=f"layers_{i}",
            )
            x = layer(x, num_queries if i == self.num_layers - 1 else None)
        return x


class AttentionPooling(nn.Module):
    """Attention pooling over time + Linear to one value (NISQA PoolAttFF): [N, T, D] -> [N]."""

    dim: int = 200  # input width
    precision: Precision = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        att = nn.relu(nn.Dense(2 * self.dim, precision=self.precision, name="linear1")(x))
        att = nn.Dense(1, precision=self.precision, name="linear2")(att)[..., 0]  # [N, T]
        att = jax.nn.softmax(att, axis=-1)
        pooled = jnp.einsum("nt,ntd->nd", att, x, precision=self.precision)  # [N, D]
        return nn.Dense(1, precision=self.precision, name="linear3")(pooled)[..., 0]


def _batch_norm(epsilon: float, name: str) -> nn.BatchNorm:
    # torch BatchNorm1d: momentum 0.1 on the new value == flax momentum 0.9 on the old one.
    return nn.BatchNorm(momentum=0.9, epsilon=epsilon, name=name)


class DistillMOS(nn.Module):
    """ConvTransformerSQAModel: normalised 16 kHz crops [N, 122880] -> quality in (0, 1), [N].

    MOS = 1 + 4 * output. `train=True` uses batch statistics in the BatchNorms (and updates
    `batch_stats` when that collection is mutable); inference uses the running statistics.
    """

    cnn_channels: tuple[int, ...] = (64, 64, 128, 256, 256, 256)
    dim: int = 200  # transformer width
    num_heads: int = 8
    num_layers: int = 7
    num_frames: int = 384  # CNN output frames of one crop
    epsilon: float = 1e-5  # BatchNorm and LayerNorm
    precision: Precision = None  # matmul/conv precision (None: backend default, e.g. TF32 on GPU)

    def setup(self) -> None:
        self.cnn = ComplexSpecCNN(self.cnn_channels, precision=self.precision)
        self.norm_input = _batch_norm(self.epsilon, "norm_input")
        self.transformer = TransformerEncoder(
            self.dim, self.num_heads, self.num_layers, self.num_frames, self.epsilon, self.precision
        )
        self.norm_trans = _batch_norm(self.epsilon, "norm_trans")
        self.pool = AttentionPooling(self.dim, self.precision)

    def embed(
        self,
        crops: jax.Array,
        train: bool = False,
        signal_samples: int | None = None,
        output_frames: int | None = None,
    ) -> jax.Array:
        """Frame features before pooling: [N, 122880] -> [N, 384, dim].

        signal_samples (static): all crops are zero from this sample on (zero-padded short clips);
        the CNN then skips the frames that see only zeros (same result, fewer FLOPs).
        output_frames (static): only the first output_frames frames' features, [N, output_frames,
        dim]; with running statistics (train=False) the last transformer layer computes no others
        (every frame still serves as key and value), with batch statistics all are computed.
        """
        active_frames = None
        if signal_samples is not None:  # frame t covers samples [160 t - 80, 160 t + 240)
            active_frames = -(-(signal_samples + (N_FFT - HOP_LENGTH) // 2) // HOP_LENGTH)
        feat = self.cnn(compressed_spectrum(crops), active_frames)  # [N, 384, 1024]
        x = self.norm_input(feat, use_running_average=not train)
        x = self.transformer(x, train, None if train else output_frames)
        return self.norm_trans(x, use_running_average=not train)[:, :output_frames]

    def __call__(
        self, crops: jax.Array, train: bool = False, signal_samples: int | None = None
    ) -> jax.Array:
        return jax.nn.sigmoid(self.pool(self.embed(crops, train, signal_samples)))


# --- crops ------------------------------------------------------------------------------------


def num_crops(num_samples: int) -> int:
    """Crops the reference takes from num_samples at 16 kHz (the static count of a padded batch)."""
    overlength = max(num_samples - CROP_SAMPLES, 0)
    return -(-overlength // CROP_HOP_SAMPLES) + 1


@functools.lru_cache(maxsize=16)
def _rounding_thresholds(max_crops: int) -> np.ndarray:
    """Thresholds tau [n, k] (float32) for the float64 rounding of int(linspace(0, 1, n)[k] * O).

    int() gives m - 1 instead of m = k O / (n - 1) exactly when (n - 1) divides k O, m > 0 and the
    binary mantissa f in [1, 2) of m satisfies f > tau (or f = 1 and tau < 2); otherwise it gives
    floor(k O / (n - 1)). Why: c = linspace(0, 1, n)[k] is k / (n - 1) (1 - rho). If (n - 1) | k O,
    c O = m (1 - rho) is below the integer m for rho > 0, and its float64 rounding stays below m iff
    m rho exceeds half the spacing of doubles below m: f rho > 2^-53 (2^-54 for f = 1); ties round
    to m (even mantissa). Otherwise the fractional part is >= 1 / (n - 1), far above rounding
    errors. tau = 4 means never.
    """
    tau = np.full((max_crops + 1, max_crops), 4.0, np.float32)
    for n in range(2, max_crops + 1):
        grid = np.linspace(0, 1, n)
        for k in range(1, n - 1):
            exact = Fraction(k, n - 1)
            rho = (exact - Fraction(float(grid[k]))) / exact
            if rho <= 0:
                continue
            t = Fraction(1, 2**53) / rho
            t32 = np.float32(float(t))  # then the largest float32 <= t, so f > t <=> f > t32
            while Fraction(float(t32)) > t:
                t32 = np.nextafter(t32, np.float32(-np.inf))
            while Fraction(float(np.nextafter(t32, np.float32(np.inf)))) <= t:
                t32 = np.nextafter(t32, np.float32(np.inf))
            tau[n, k] = min(float(t32), 4.0)
    return tau


def crop_starts(lengths: jax.Array, max_crops: int) -> tuple[jax.Array, jax.Array]:
    """Crop start samples [B, max_crops] (int32) and which crops exist [B, max_crops] (bool).

    lengths: samples at 16 kHz, [B]. Reproduces the reference's `int(c * O)` with c from float64
    `np.linspace` exactly: integer arithmetic plus the rounding correction of
    `_rounding_thresholds` (exact for starts below 2^24 samples, 17 min).
    """
    lengths = jnp.asarray(lengths, jnp.int32)
    overlength = jnp.maximum(lengths - CROP_SAMPLES, 0)  # O, [B]
    n = (overlength + CROP_HOP_SAMPLES - 1) // CROP_HOP_SAMPLES + 1  # [B]
    k = jnp.arange(max_crops, dtype=jnp.int32)[None, :]  # [1, K]
    d = jnp.maximum(n - 1, 1)[:, None]  # [B, 1]
    a, b = overlength[:, None] // d, overlength[:, None] % d
    kb = k * b  # < (n - 1)^2: no int32 overflow where k * O would
    m = k * a + kb // d  # floor(k O / (n - 1)), [B, K]
    mantissa = 2.0 * jnp.frexp(m.astype(jnp.float32))[0]  # in [1, 2) for m > 0
    tau = jnp.asarray(_rounding_thresholds(max_crops))[jnp.minimum(n, max_crops)]  # [B, K]
    rounds_down = (mantissa > tau) | ((mantissa == 1.0) & (tau < 2.0))
    rounds_down = rounds_down & (kb % d == 0) & (m > 0)
    valid = k < n[:, None]
    starts = jnp.where(valid, m - rounds_down.astype(jnp.int32), 0)
    return starts, valid


# --- metric -----------------------------------------------------------------------------------


def distill_mos(
    est: jax.Array,
    lengths: jax.Array,
    sample_rate: int,
    params: dict[str, Any] | None = None,
    crops_per_call: int | None = None,
) -> jax.Array:
    """Distill-MOS of a padded batch: est [B, T] at sample_rate Hz (static), lengths [B] -> MOS [B].

    Samples past an example's length are ignored; other rates than 16 kHz are resampled as
    torchaudio's `Resample` does (module docstring, step 1).

    params: variables from `load_params` (default: the shipped weights, loaded at trace time).
    The crops of the batch (B x the longest example's crop count) go through the network in steps
    of crops_per_call crops (`lax.map`); None picks `urgent_jax.inference_chunk(1)`: one crop per
    step on CPU (cache-sized working set, 1.55x faster than 16 crops at once on 2 cores), all crops
    in one step on accelerators. Matmuls and
    convolutions run at HIGHEST precision (no TF32 on GPU) to stay within 0.01 MOS of the reference.
    """
    if params is None:
        params = load_params()
    x = jnp.asarray(est, jnp.float32)
    lengths = jnp.asarray(lengths, jnp.int32)
    if x.ndim != 2:
        raise ValueError(f"est must be [batch, time], got shape {x.shape}")
    if sample_rate != SAMPLE_RATE:
        # The reference resamples each file alone (zeros after its end): zero the padding first,
        # then everything past the example's resampled length is cut (masked below).
        x = jnp.where(jnp.arange(x.shape[1])[None, :] < lengths[:, None], x, 0.0)
        x = resample_sinc_hann(x, sample_rate, SAMPLE_RATE)
        lengths = sinc_hann_resampled_lengths(lengths, sample_rate, SAMPLE_RATE)
    batch, num_samples = x.shape
    lengths = jnp.minimum(lengths, num_samples)
    x = jnp.where(jnp.arange(num_samples)[None, :] < lengths[:, None], x, 0.0)
    if num_samples < CROP_SAMPLES:
        x = jnp.pad(x, ((0, 0), (0, CROP_SAMPLES - num_samples)))
    max_crops = num_crops(num_samples)
    starts, valid = crop_starts(lengths, max_crops)  # [B, K]

    def take(row: jax.Array, start: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice_in_dim(row, start, CROP_SAMPLES)

    crops = jax.vmap(jax.vmap(take, in_axes=(None, 0)))(x, starts)  # [B, K, 122880]
    crops = crops.reshape(batch * max_crops, CROP_SAMPLES)
    crops = crops / (jnp.max(jnp.abs(crops), axis=-1, keepdims=True) + 1e-8)
    model = DistillMOS(precision="highest")
    signal = num_samples if num_samples < CROP_SAMPLES else None  # crops are zero from here on

    def net(c: jax.Array) -> jax.Array:
        return model.apply(params, c, signal_samples=signal)

    if crops_per_call is None:
        crops_per_call = urgent_jax.inference_chunk(1)
    if crops_per_call is None or crops_per_call >= crops.shape[0]:
        quality = net(crops)
    else:
        quality = jax.lax.map(lambda c: net(c[None])[0], crops, batch_size=crops_per_call)
    quality = quality.reshape(batch, max_crops)
    mean = jnp.sum(jnp.where(valid, quality, 0.0), axis=1) / jnp.sum(valid, axis=1)
    return 1.0 + 4.0 * mean


# --- weights ----------------------------------------------------------------------------------


def default_checkpoint_path() -> Path:
    """distill_mos_v7.pt inside the installed distillmos wheel (found without importing it)."""
    spec = importlib.util.find_spec("distillmos")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"Distill-MOS weights need the distillmos wheel: {DISTILLMOS_INSTALL_HINT} "
            "(or pass the path of distill_mos_v7.pt)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "distill_mos_v7.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing; reinstall with: {DISTILLMOS_INSTALL_HINT}")
    return path


def cache_dir() -> Path:
    """$URGENT_JAX_CACHE, else ~/.cache/urgent_jax."""
    return Path(os.environ.get("URGENT_JAX_CACHE") or Path.home() / ".cache" / "urgent_jax")


def _dense(weight: np.ndarray) -> np.ndarray:
    return weight.T  # torch [out, in] -> flax [in, out]


def convert_state_dict(state: dict[str, np.ndarray]) -> dict[str, Any]:
    """Torch ConvTransformerSQAModel state dict -> flax variables of DistillMOS.

    {'params': weights, 'batch_stats': BatchNorm running mean/var, 'buffers': the positional table}.
    """
    state = dict(state)
    params: dict[str, np.ndarray] = {}
    stats: dict[str, np.ndarray] = {}

    def pop(key: str) -> np.ndarray:
        return np.asarray(state.pop(key), np.float32)

    def linear(torch_name: str, flax_name: str) -> None:
        params[f"{flax_name}/kernel"] = _dense(pop(f"{torch_name}.weight"))
        params[f"{flax_name}/bias"] = pop(f"{torch_name}.bias")

    def norm(torch_name: str, flax_name: str, running: bool) -> None:
        params[f"{flax_name}/scale"] = pop(f"{torch_name}.weight")
        params[f"{flax_name}/bias"] = pop(f"{torch_name}.bias")
        if running:
            stats[f"{flax_name}/mean"] = pop(f"{torch_name}.running_mean")
            stats[f"{flax_name}/var"] = pop(f"{torch_name}.running_var")
            state.pop(f"{torch_name}.num_batches_tracked", None)

    for i in range(6):  # Conv2d at Sequential indices 0, 2, ..., 10 (LeakyReLU between)
        w = pop(f"cnn.cnn.{2 * i}.weight")  # [O, I, kF, kT]
        params[f"cnn/convs_{i}/kernel"] = w.transpose(3, 2, 1, 0)  # [kT, kF, I, O]
        params[f"cnn/convs_{i}/bias"] = pop(f"cnn.cnn.{2 * i}.bias")
    head = "transformer_pool_attn"
    norm(f"{head}.norm_input", "norm_input", True)
    norm(f"{head}.transformer.norm", "transformer/norm", True)
    linear(f"{head}.transformer.linear_proj", "transformer/linear_proj")
    pe = pop(f"{head}.transformer.position_encoding.pe")[0]  # [384, 200], float32-rounded formula
    if np.max(np.abs(pe - positional_table(*pe.shape))) > 1e-4:
        raise ValueError("checkpoint positional table differs from the sinusoidal formula")
    i = 0
    while f"{head}.transformer.transformer_encoder.layers.{i}.norm1.weight" in state:
        src, dst = f"{head}.transformer.transformer_encoder.layers.{i}", f"transformer/layers_{i}"
        params[f"{dst}/self_attn/in_proj/kernel"] = _dense(pop(f"{src}.self_attn.in_proj_weight"))
        params[f"{dst}/self_attn/in_proj/bias"] = pop(f"{src}.self_attn.in_proj_bias")
        linear(f"{src}.self_attn.out_proj", f"{dst}/self_attn/out_proj")
        linear(f"{src}.linear1", f"{dst}/linear1")
        linear(f"{src}.linear2", f"{dst}/linear2")
        norm(f"{src}.norm1", f"{dst}/norm1", False)
        norm(f"{src}.norm2", f"{dst}/norm2", False)
        i += 1
    norm(f"{head}.norm_trans", "norm_trans", True)
    for name in ("linear1", "linear2", "linear3"):
        linear(f"{head}.pool.{name}", f"pool/{name}")
    if state:
        raise ValueError(f"unconverted checkpoint entries: {sorted(state)[:5]}")
    return {
        "params": traverse_util.unflatten_dict(params, sep="/"),
        "batch_stats": traverse_util.unflatten_dict(stats, sep="/"),
        "buffers": {"transformer": {"pe": pe}},
    }


def _check_structure(variables: dict[str, Any]) -> None:
    """Raise unless variables match DistillMOS's parameter tree (names and shapes)."""
    crops = jax.ShapeDtypeStruct((1, CROP_SAMPLES), jnp.float32)
    expected = jax.eval_shape(DistillMOS().init, jax.random.key(0), crops)
    want = {k: v.shape for k, v in traverse_util.flatten_dict(expected, sep="/").items()}
    got = {k: np.shape(v) for k, v in traverse_util.flatten_dict(variables, sep="/").items()}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))[:5]
        raise ValueError(f"converted Distill-MOS weights do not match the flax module: {diff}")


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    """Flax variables {'params', 'batch_stats', 'buffers'} of DistillMOS from a torch checkpoint.

    path: distill_mos_v7.pt (default: the one in the distillmos wheel). The conversion runs once per
    checkpoint content; the result is cached as `distillmos_<version>_<sha256[:16]>.npz` under
    `cache_dir()` and read from there afterwards.
    """
    path = Path(path) if path is not None else default_checkpoint_path()
    if not path.exists():
        raise FileNotFoundError(
            f"Distill-MOS checkpoint {path} not found ({DISTILLMOS_INSTALL_HINT})"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    cached = cache_dir() / f"distillmos_{_CONVERSION_VERSION}_{digest}.npz"
    if cached.exists():
        with np.load(cached) as data:
            variables = traverse_util.unflatten_dict({k: data[k] for k in data.files}, sep="/")
    else:
        variables = convert_state_dict(torch_checkpoint.load_torch_state_dict(path, key="model"))
        flat = traverse_util.flatten_dict(variables, sep="/")
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=cached.parent, suffix=".npz", delete=False) as f:
                np.savez(f, **flat)
            os.replace(f.name, cached)
        except OSError as e:  # read-only home etc.: keep working without the cache
            warnings.warn(f"could not cache Distill-MOS weights at {cached}: {e}", stacklevel=2)
    _check_structure(variables)
    return jax.tree_util.tree_map(jnp.asarray, variables)
