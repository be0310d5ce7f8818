"""Uni-VERSA-Ext multi-metric speech-quality regressor (REFERENCE.md §3.7) and its front-ends.

`UniVersaExt(audio [B, T] 16 kHz, lengths [B]) -> [B, M]` predictions, one per metric, each in its
range. Boxes of the reference, in order:
  front-end -> hidden states [S, B, T', F] and frame lengths [B] (20 ms frames);
  layer weighting (S > 1): softmax of learnable logits (init 0) over the S states, weighted sum;
    the gradient into the front-end's states is scaled by `frontend_grad_scale` (0.1);
  projection Linear(F -> d_model) + LayerNorm;
  transformer encoder: post-norm layers (ReLU, LayerNorm eps 1e-5, dropout), key-padding mask;
  masked mean pooling over valid frames; head Linear(d_model -> M); `range_activation`.
Front-ends (`frontend=`), parameters under the params subtree "frontend":
  'wavlm'      `models.wavlm.WavLM` (frontend_kwargs = WavLMConfig fields; default wavlm-base(-plus)
               sizes; do_normalize: the checkpoint's per-utterance input normalisation over the
               valid samples); 13 hidden states of width 768; pretrained weights via `load_frontend`;
  'distillmos' the Distill-MOS encoder (`metrics.distillmos.DistillMOS.embed`): the audio is cut
               into consecutive 7.68 s crops (zero-padded at the end), each normalised by its peak
               as in Distill-MOS, 384 frames of width 200 per crop (20 ms); shipped weights via
               `load_frontend('distillmos')`; BatchNorm running statistics in "batch_stats";
  'conv'       log-mel features and a small 1-D conv stack trained from scratch (`ConvFrontend`),
               20 ms frames.
Padded samples (beyond `lengths`) are zeroed before the front-end, so their values never matter;
padded frames are masked as attention keys and in the pooling. (WavLM base's first GroupNorm still
sees the amount of padding, as in transformers and the reference.)
Front-end dropout runs only when `frontend_train=True` (the reference's frozen WavLM stays in train
mode, REFERENCE.md §6.19; off by default here).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import urgent_jax
from urgent_jax.metrics import distillmos
from urgent_jax.models import wavlm

Dtype = Any
SAMPLE_RATE = 16000  # Hz, all front-ends
FRONTENDS = ("wavlm", "distillmos", "conv")


def range_activation(x: jax.Array, ranges) -> jax.Array:
    """Map raw outputs [..., M] into per-metric ranges ((min, max), ...) with ±inf for open bounds.

    Both finite: min + (max - min) sigmoid(x); only min: min + softplus(x - min); only max:
    max - softplus(max - x); neither: x (REFERENCE.md §3.7). Branches are chosen per metric at
    trace time, so no inf ever enters the arithmetic (and gradients stay finite).
    """
    if x.shape[-1] != len(ranges):
        raise ValueError(f"{x.shape[-1]} outputs for {len(ranges)} ranges")
    cols = []
    for m, (lo, hi) in enumerate(ranges):
        lo, hi, v = float(lo), float(hi), x[..., m]
        if math.isfinite(lo) and math.isfinite(hi):
            v = lo + (hi - lo) * jax.nn.sigmoid(v)
        elif math.isfinite(lo):
            v = lo + jax.nn.softplus(v - lo)
        elif math.isfinite(hi):
            v = hi - jax.nn.softplus(hi - v)
        cols.append(v)
    return jnp.stack(cols, axis=-1)


def _scale_gradient(x: jax.Array, scale: float) -> jax.Array:
    """Identity forward; gradient multiplied by scale."""
    if scale == 1.0:
        return x
    return jax.lax.stop_gradient(x) + scale * (x - jax.lax.stop_gradient(x))


def _dense(features: int, axes, name: str, dtype: Dtype) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]),
        name=name,
    )


_layer_norm = wavlm.layer_norm  # LayerNorm with the "embed" logical axis


# --- front-ends ---------------------------------------------------------------------------------


class WavLMFrontend(nn.Module):
    """WavLM hidden states: audio [B, T], lengths [B] -> ([L + 1, B, T', D], frames [B])."""

    config: wavlm.WavLMConfig = wavlm.WavLMConfig()
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, audio, lengths, train: bool = False):
        return wavlm.WavLM(self.config, self.dtype, name="wavlm")(audio, lengths, train)


class DistillMOSFrontend(nn.Module):
    """Distill-MOS encoder on consecutive 7.68 s crops: ([1, B, ceil(T / 320), 200], frames [B]).

    Frame j of a crop covers samples [320 j, 320 j + 320) of it (20 ms), so item b has
    ceil(length / 320) valid frames; the encoder runs on whole crops (its attention sees the
    zero padding, as in Distill-MOS) and the frames after the input's end are dropped.
    update_batch_stats=False keeps the BatchNorms on their running statistics also in training
    (usual when fine-tuning a pretrained encoder on small batches); True uses batch statistics
    when train=True (pass mutable=['batch_stats']).
    """

    update_batch_stats: bool = False  # BatchNorm in training mode when train=True
    precision: Any = None  # matmul/conv precision of the encoder

    @nn.compact
    def __call__(self, audio, lengths, train: bool = False):
        b, t = audio.shape
        crop = distillmos.CROP_SAMPLES
        k = max(-(-t // crop), 1)  # crops per item
        x = jnp.pad(audio, ((0, 0), (0, k * crop - t))).reshape(b * k, crop)  # [B K, 122880]
        x = x / (jnp.max(jnp.abs(x), axis=-1, keepdims=True) + 1e-8)
        signal = t if k == 1 and t < crop else None  # zero tail of every crop: CNN skips it
        encoder = distillmos.DistillMOS(precision=self.precision, name="distillmos")
        hop = crop // encoder.num_frames  # 320 samples per frame
        keep = -(-t // hop)  # frames past the padded input are padding for all items
        feats = encoder.embed(
            x,
            train and self.update_batch_stats,
            signal_samples=signal,
            output_frames=keep if k == 1 else None,  # one crop: its last layer skips the rest
        )
        feats = feats.reshape(b, -1, feats.shape[2])[:, :keep]  # [B, K * 384 -> keep, 200]
        frames = jnp.minimum(-(-jnp.asarray(lengths, jnp.int32) // hop), feats.shape[1])
        return feats[None], frames  # [1, B, ceil(T / 320), 200], [B]


class ConvFrontend(nn.Module):
    """Log-mel features + a 1-D conv stack trained from scratch: ([1, B, T', C], frames [B]).

    Frames of `n_fft` samples every `hop_length` (default 40 ms / 20 ms, WavLM's frame rate), no
    centring, so frame t only sees samples of [t hop, t hop + n_fft) and an item has
    (length - n_fft) // hop + 1 valid frames (0 below n_fft samples). Features: log10 of the mel
    power (fixed affine scaling, no data-dependent normalisation, so an item's output does not
    depend on its batch); each layer is Conv1D (SAME, masked input) -> GELU -> LayerNorm over
    channels. No LayerNorm acts on the log-mel input itself: constant frames (padding, digital
    silence) would give it zero variance and amplify its gradient by 1/sqrt(eps) per layer.
    """

    channels: int = 256  # width of every conv layer
    num_layers: int = 3  # conv layers
    kernel_size: int = 5  # frames
    n_mels: int = 80
    n_fft: int = 640  # samples at 16 kHz (40 ms)
    hop_length: int = 320  # samples (20 ms)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, audio, lengths, train: bool = False):
        del train
        from urgent_jax.audio.spectral import mel_filterbank
        from urgent_jax.audio.stft import stft

        if audio.shape[1] < self.n_fft:  # too short for one frame: pad (no valid frame anyway)
            audio = jnp.pad(audio, ((0, 0), (0, self.n_fft - audio.shape[1])))
        spec = stft(audio, self.n_fft, self.hop_length, center=False)  # [B, T', F]
        power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
        fbank = jnp.asarray(mel_filterbank(SAMPLE_RATE, self.n_fft, self.n_mels).T)  # [F, mels]
        mel = jnp.dot(power, fbank, precision=jax.lax.Precision.HIGHEST)
        x = (jnp.log10(mel + 1e-8) + 4.0) / 2.0  # speech log10 power ~[-8, 0] -> ~[-2, 2]
        lengths = jnp.asarray(lengths, jnp.int32)
        frames = jnp.where(lengths >= self.n_fft, (lengths - self.n_fft) // self.hop_length + 1, 0)
        frames = jnp.minimum(frames, x.shape[1])
        mask = (jnp.arange(x.shape[1])[None, :] < frames[:, None])[..., None]  # [B, T', 1]
        for i in range(self.num_layers):
            x = nn.Conv(
                self.channels, (self.kernel_size,), padding="SAME", dtype=self.dtype,
                kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                         (None, None, "embed")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                name=f"conv_{i}",
            )(jnp.where(mask, x, 0.0))  # fmt: skip
            x = _layer_norm(1e-5, f"norm_{i}")(nn.gelu(x))
        return x[None], frames


def build_frontend(kind: str, kwargs: dict[str, Any], dtype: Dtype = jnp.float32, name=None):
    """The front-end module of a kind with its keyword arguments."""
    if kind == "wavlm":
        config = wavlm.WavLMConfig.from_dict(kwargs)
        unknown = set(kwargs) - set(wavlm.WavLMConfig.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown WavLM config fields {sorted(unknown)}")
        return WavLMFrontend(config, dtype, name=name)
    if kind == "distillmos":
        return DistillMOSFrontend(**kwargs, name=name)
    if kind == "conv":
        return ConvFrontend(**kwargs, dtype=dtype, name=name)
    raise ValueError(f"frontend must be one of {FRONTENDS}, got {kind!r}")


def load_frontend(kind: str, path=None) -> dict[str, Any]:
    """Pretrained variables of a front-end, shaped like UniVersaExt's: {'params': {...}, ...}.

    'wavlm': path = local Hugging Face WavLM directory (config.json + safetensors or .bin); the
    model's frontend_kwargs must be the config's fields (see `wavlm_frontend_kwargs`).
    'distillmos': path = distill_mos_v7.pt (default: the one shipped in the distillmos wheel);
    returns 'params', 'batch_stats' and 'buffers' (the checkpoint's positional table).
    Each collection's tree goes under the model's variables[collection]['frontend'].
    """
    if kind == "wavlm":
        if path is None:
            raise ValueError("load_frontend('wavlm') needs the checkpoint directory")
        _, params = wavlm.convert_hf_checkpoint(path)
        return {"params": {"wavlm": params}}
    if kind == "distillmos":
        variables = distillmos.load_params(path)
        out = {"params": {"distillmos": _embed_params(variables["params"])}}
        out["batch_stats"] = {"distillmos": _embed_params(variables["batch_stats"])}
        out["buffers"] = {"distillmos": variables["buffers"]}  # the checkpoint's positional table
        return out
    raise ValueError(f"no pretrained weights for front-end {kind!r}; choose wavlm or distillmos")


def wavlm_frontend_kwargs(path) -> tuple[tuple[str, Any], ...]:
    """frontend_kwargs of UniVersaExt for a local Hugging Face WavLM directory: its config's
    fields, do_normalize from its preprocessor_config.json included, as ((name, value), ...)
    (hashable, so the module stays a valid static argument)."""
    config = wavlm.WavLMConfig.from_pretrained(path)
    return tuple(dataclasses.asdict(config).items())


def _embed_params(tree: dict[str, Any]) -> dict[str, Any]:
    """Distill-MOS variables without the pooling head (not used by `embed`)."""
    return {k: v for k, v in tree.items() if k != "pool"}


# --- regressor ----------------------------------------------------------------------------------


class EncoderLayer(nn.Module):
    """torch TransformerEncoderLayer (post-norm, ReLU) with a key-padding mask: [B, T, D]."""

    d_model: int = 768
    num_heads: int = 8
    ffn_dim: int = 2048
    dropout: float = 0.1
    epsilon: float = 1e-5  # LayerNorm
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, train: bool = False):  # x [B, T, D], mask [B, T] bool
        b, t, d = x.shape
        h = self.num_heads
        drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=not train)  # noqa: E731
        qkv = _dense(3 * d, ("embed", "mlp"), "in_proj", self.dtype)(x).reshape(b, t, 3, h, d // h)
        attn = distillmos.dot_product_attention(
            qkv[:, :, 0],
            qkv[:, :, 1],
            qkv[:, :, 2],
            key_mask=mask,
            dropout=drop if train and self.dropout > 0 else None,
        )
        attn = _dense(d, ("mlp", "embed"), "out_proj", self.dtype)(attn)
        x = _layer_norm(self.epsilon, "norm1")(x + drop(attn))
        y = nn.relu(_dense(self.ffn_dim, ("embed", "mlp"), "linear1", self.dtype)(x))
        y = _dense(d, ("mlp", "embed"), "linear2", self.dtype)(drop(y))
        return _layer_norm(self.epsilon, "norm2")(x + drop(y))


PREDICT_CPU_CHUNK = 2  # examples per inference step on CPU (see `make_predict`)


def make_predict(model: nn.Module, chunk: int | None = None):
    """Jitted inference `(variables, audio [B, T], lengths [B]) -> [B, M]` of a UniVersaExt model.

    The batch goes through the network `chunk` examples per step (`jax.lax.map`; each example sees
    the batch's padded length, so results equal one whole-batch call up to float rounding). None
    picks `urgent_jax.inference_chunk(PREDICT_CPU_CHUNK)`: 2 examples per step on CPU, where whole
    batches of WavLM activations overflow the caches, and the whole batch on accelerators.
    """
    if chunk is None:
        chunk = urgent_jax.inference_chunk(PREDICT_CPU_CHUNK)

    def one_step(variables, audio, lengths):
        return model.apply(variables, audio, lengths, train=False)

    def predict(variables, audio, lengths):
        if chunk is None or chunk >= audio.shape[0]:
            return one_step(variables, audio, lengths)
        return jax.lax.map(
            lambda xs: one_step(variables, xs[0][None], xs[1][None])[0],
            (audio, lengths),
            batch_size=chunk,
        )

    return jax.jit(predict)


class UniVersaExt(nn.Module):
    """Multi-metric SQA regressor: audio [B, T] (16 kHz, float32), lengths [B] -> [B, M]."""

    metric_names: tuple[str, ...] = ("mos",)  # M outputs, in this order
    metric_ranges: tuple[tuple[float, float], ...] = ((1.0, 5.0),)  # (min, max), ±inf when open
    frontend: str = "wavlm"  # 'wavlm' | 'distillmos' | 'conv'
    frontend_kwargs: Any = ()  # dict or ((key, value), ...): WavLMConfig fields / front-end fields
    frontend_grad_scale: float = 0.1  # gradient factor into the front-end's hidden states
    frontend_train: bool = False  # front-end dropout / BatchNorm updates when train=True
    d_model: int = 768  # projection and encoder width
    num_layers: int = 6  # encoder layers
    num_heads: int = 8
    ffn_dim: int = 2048
    dropout: float = 0.1  # encoder dropout (attention weights, residual branches, FFN)
    epsilon: float = 1e-5  # LayerNorm
    dtype: Dtype = jnp.float32  # compute dtype; LayerNorm statistics, pooling and head in float32

    def _frontend(self) -> nn.Module:
        kwargs = dict(self.frontend_kwargs)
        return build_frontend(self.frontend, kwargs, self.dtype, name="frontend")

    @nn.compact
    def __call__(self, audio: jax.Array, lengths: jax.Array, train: bool = False) -> jax.Array:
        if len(self.metric_names) != len(self.metric_ranges):
            raise ValueError("metric_names and metric_ranges differ in length")
        audio = jnp.asarray(audio, jnp.float32)
        lengths = jnp.minimum(jnp.asarray(lengths, jnp.int32), audio.shape[1])
        audio = jnp.where(jnp.arange(audio.shape[1])[None, :] < lengths[:, None], audio, 0.0)
        hidden, frames = self._frontend()(audio, lengths, train and self.frontend_train)
        hidden = hidden.astype(jnp.float32)  # [S, B, T', F]
        if hidden.shape[0] > 1:
            logits = self.param(
                "layer_weights",
                nn.with_logical_partitioning(nn.initializers.zeros, (None,)),
                (hidden.shape[0],),
            )
            hidden = jnp.einsum("s,sbtf->btf", jax.nn.softmax(logits), hidden)
        else:
            hidden = hidden[0]
        x = _scale_gradient(hidden, self.frontend_grad_scale)  # [B, T', F]
        mask = jnp.arange(x.shape[1])[None, :] < frames[:, None]  # [B, T'] valid frames
        key_mask = mask.at[:, 0].set(True)  # an item without frames keeps a finite softmax
        x = _dense(self.d_model, ("channel", "embed"), "projection", self.dtype)(x)
        x = _layer_norm(self.epsilon, "projection_norm")(x).astype(self.dtype)
        for i in range(self.num_layers):
            layer = EncoderLayer(
                self.d_model,
                self.num_heads,
                self.ffn_dim,
                self.dropout,
                self.epsilon,
                self.dtype,
                name=f"encoder_layers_{i}",
            )
            x = layer(x, key_mask, train)
        x = x.astype(jnp.float32) * mask[..., None]
        pooled = jnp.sum(x, axis=1) / jnp.maximum(frames, 1)[:, None].astype(jnp.float32)  # [B, D]
        raw = _dense(len(self.metric_names), ("embed", None), "head", jnp.float32)(pooled)
        return range_activation(raw, self.metric_ranges)  # [B, M]

    def example_inputs(self, sample_rate: int = SAMPLE_RATE, batch_size: int = 1, num_samples=None):
        """(args, kwargs) for init/eval_shape: 1 s of silence at 16 kHz (sample_rate is ignored:
        the model always runs at 16 kHz)."""
        del sample_rate
        num_samples = num_samples or SAMPLE_RATE
        audio = jnp.zeros((batch_size, num_samples), jnp.float32)
        return (audio, jnp.full((batch_size,), num_samples, jnp.int32)), {}

