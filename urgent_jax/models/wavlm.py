"""WavLM (Chen et al. 2022) in flax linen, with conversion of local Hugging Face checkpoints.

`WavLM(config)(audio [B, T], lengths [B]) -> (hidden_states [L + 1, B, T', D], frame_lengths [B])`
reproduces `transformers.WavLMModel` with `output_hidden_states=True` (transformers 5.x) in
inference: hidden_states[0] is the input of the first transformer layer, hidden_states[i] the output
of layer i. `convert_hf_checkpoint(dir)` reads config.json and model.safetensors or
pytorch_model.bin (no torch needed) and returns `(WavLMConfig, params)`. With `do_normalize` (from
the checkpoint's preprocessor_config.json) the input is first normalised per utterance over its
valid samples, as the checkpoint's Wav2Vec2FeatureExtractor does before the model.

Blocks (transformers modeling_wavlm.py, read for the facts):
  - feature encoder: Conv1d stack (kernels (10, 3, 3, 3, 3, 2, 2), strides (5, 2, 2, 2, 2, 2, 2),
    no padding) + GELU; `feat_extract_norm='group'`: GroupNorm with one group per channel
    (per-channel statistics over time, eps 1e-5) after the first conv only (base); 'layer':
    LayerNorm over channels (eps 1e-5) after every conv (large). The GroupNorm statistics cover the
    whole padded input, as in transformers, so with 'group' an item's features depend slightly on
    how much padding its batch adds. Frames: 20 ms; count from the conv formula
    floor((L - k) / s) + 1 per layer;
  - feature projection: LayerNorm(conv_dim[-1]) -> Linear -> dropout;
  - encoder: padded frames zeroed; + positional conv embedding (Conv1d, kernel 128, 16 groups,
    padding 64, last frame dropped for even kernels, GELU; weight norm over the kernel axis,
    folded into the kernel at conversion); post-LN ('base': LayerNorm before the layers) or pre-LN
    ('stable layer norm', large: LayerNorm after the layers, not part of hidden_states, as in
    transformers 5 where the last hidden state is taken before it);
  - attention: separate q/k/v/out projections, scores scaled by head_dim^-1/2, plus a relative
    position bias (T5-style log buckets, 320 buckets, max distance 800, table in the first layer
    only, shared) gated per head and query frame by g = a (b c_h - 1) + 2, (a, b) = sigmoid of a
    Linear(head_dim -> 8) summed in two groups of 4, c_h = gru_rel_pos_const; padded keys masked;
  - feed-forward: Linear -> GELU (exact) -> dropout -> Linear -> dropout.
Not reproduced: SpecAugment time masking and LayerDrop in training (transformers applies them in
train mode; REFERENCE.md §6.19 notes the reference's frozen WavLM left in train mode). Dropout
is applied when `train=True` (rng 'dropout').

Parameters: kernels [in, out] (torch transposed), conv kernels [k, in, out].
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from urgent_jax.metrics import distillmos, torch_checkpoint

Dtype = Any
PREPROCESSOR_FILE = "preprocessor_config.json"  # the feature extractor's settings
NORMALIZE_EPS = 1e-7  # transformers Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm


@dataclasses.dataclass(frozen=True)
class WavLMConfig:
    """The fields of a Hugging Face WavLM config.json this model uses (defaults: wavlm-base)."""

    hidden_size: int = 768  # D
    num_hidden_layers: int = 12  # L
    num_attention_heads: int = 12
    intermediate_size: int = 3072  # feed-forward width
    hidden_act: str = "gelu"  # "gelu" (exact erf) | "relu" | "gelu_new"
    layer_norm_eps: float = 1e-5  # projection and encoder LayerNorms
    feat_extract_norm: str = "group"  # "group" (base) | "layer" (large)
    feat_extract_activation: str = "gelu"
    conv_dim: tuple[int, ...] = (512,) * 7  # channels per feature-encoder conv
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128  # positional conv kernel size
    num_conv_pos_embedding_groups: int = 16
    num_buckets: int = 320  # relative position buckets
    max_bucket_distance: int = 800  # frames
    do_stable_layer_norm: bool = False  # pre-LN layers (large)
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    feat_proj_dropout: float = 0.0
    # Per-utterance zero-mean unit-variance input over the valid samples, as the checkpoint's
    # feature extractor (preprocessor_config.json `do_normalize`; `normalize_waveform`).
    do_normalize: bool = False

    @classmethod
    def from_dict(cls, hf: dict[str, Any]) -> WavLMConfig:
        """Fields of this class taken from a config.json dict (other keys ignored)."""
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in hf:
                value = hf[f.name]
                kwargs[f.name] = tuple(value) if isinstance(value, list) else value
        config = cls(**kwargs)
        if config.feat_extract_norm not in ("group", "layer"):
            raise ValueError(
                f"feat_extract_norm must be 'group' or 'layer', got {config.feat_extract_norm!r}"
            )
        if hf.get("add_adapter"):
            raise ValueError("WavLM adapters (add_adapter=True) are not supported")
        return config

    @classmethod
    def from_json(cls, path: str | Path) -> WavLMConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> WavLMConfig:
        """The config of a Hugging Face checkpoint directory (or a file inside it): config.json,
        with `do_normalize` from preprocessor_config.json when there is one (transformers'
        Wav2Vec2FeatureExtractor: true when the file omits it); False without the file."""
        directory = Path(path)
        if directory.is_file():
            directory = directory.parent
        hf = json.loads((directory / "config.json").read_text())
        preprocessor = directory / PREPROCESSOR_FILE
        do_normalize = False
        if preprocessor.exists():
            do_normalize = bool(json.loads(preprocessor.read_text()).get("do_normalize", True))
        return cls.from_dict({**hf, "do_normalize": do_normalize})


def normalize_waveform(audio: jax.Array, lengths: jax.Array, eps: float = NORMALIZE_EPS):
    """(x - mean) / sqrt(var + eps) per item over its first `lengths` samples (population
    variance), padding set to 0: transformers' zero_mean_unit_var_norm. audio [B, T], lengths [B]
    -> [B, T] float32."""
    audio = jnp.asarray(audio, jnp.float32)
    lengths = jnp.asarray(lengths, jnp.int32)
    mask = jnp.arange(audio.shape[1])[None, :] < lengths[:, None]  # [B, T]
    count = jnp.maximum(lengths, 1).astype(jnp.float32)[:, None]
    mean = jnp.sum(jnp.where(mask, audio, 0.0), axis=1, keepdims=True) / count
    var = jnp.sum(jnp.where(mask, jnp.square(audio - mean), 0.0), axis=1, keepdims=True) / count
    return jnp.where(mask, (audio - mean) * jax.lax.rsqrt(var + eps), 0.0)


_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def _activation(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation {name!r} not supported; choose from {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _kernel_init(axes: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(0.02), axes)


def _dense(features: int, axes: tuple[str | None, str | None], name: str, dtype: Dtype) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=dtype,
        kernel_init=_kernel_init(axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]),
        name=name,
    )


def layer_norm(eps: float, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        eps,
        use_fast_variance=False,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        name=name,
    )


def conv_output_lengths(lengths, kernels, strides):
    """Frames after a stack of unpadded convolutions: floor((L - k) / s) + 1 per layer (int)."""
    for k, s in zip(kernels, strides):
        lengths = (lengths - k) // s + 1
    return lengths


def frame_lengths(config: WavLMConfig, lengths: jax.Array) -> jax.Array:
    """Valid frames per item [B] (int32) for input lengths [B] in samples, clipped at 0."""
    lengths = jnp.asarray(lengths, jnp.int32)
    return jnp.maximum(conv_output_lengths(lengths, config.conv_kernel, config.conv_stride), 0)


# --- feature encoder ----------------------------------------------------------------------------


class StridedConv(nn.Module):
    """Unpadded strided Conv1d: [B, T, C] -> [B, (T - k) // s + 1, O]; kernel [k, C, O]."""

    features: int  # output channels O
    kernel_size: int
    stride: int
    use_bias: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s, c = self.kernel_size, self.stride, x.shape[-1]
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(nn.initializers.he_normal(), (None, "channel", "embed")),
            (k, c, self.features),
        )
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            window_strides=(s,),
            padding="VALID",
            dimension_numbers=("NWC", "WIO", "NWC"),
        )
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                (self.features,),
            )
            y = y + bias.astype(self.dtype)
        return y


class FeatureEncoder(nn.Module):
    """Conv feature extractor: audio [B, T] -> [B, T', conv_dim[-1]] (20 ms frames for WavLM's)."""

    conv_dim: tuple[int, ...] = (512,) * 7  # channels per layer
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    norm: str = "group"  # "group": per-channel GroupNorm after conv 0; "layer": LN after each
    activation: str = "gelu"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array) -> jax.Array:
        act = _activation(self.activation)
        x = audio[:, :, None]  # [B, T] -> [B, T, 1]
        for i, (c, k, s) in enumerate(zip(self.conv_dim, self.conv_kernel, self.conv_stride)):
            x = StridedConv(c, k, s, self.conv_bias, self.dtype, name=f"conv_layers_{i}_conv")(x)
            if self.norm == "group" and i == 0:  # GroupNorm(C groups): per channel over time
                x = x.astype(jnp.float32)
                mean = jnp.mean(x, axis=1, keepdims=True)
                var = jnp.mean(jnp.square(x - mean), axis=1, keepdims=True)
                x = (x - mean) * jax.lax.rsqrt(var + 1e-5)
                ones, zeros = nn.initializers.ones, nn.initializers.zeros
                scale = self.param(
                    f"conv_layers_{i}_layer_norm_scale",
                    nn.with_logical_partitioning(ones, ("embed",)),
                    (c,),
                )
                bias = self.param(
                    f"conv_layers_{i}_layer_norm_bias",
                    nn.with_logical_partitioning(zeros, ("embed",)),
                    (c,),
                )
                x = (x * scale + bias).astype(self.dtype)
            elif self.norm == "layer":
                x = layer_norm(1e-5, f"conv_layers_{i}_layer_norm")(x)
            elif self.norm != "group":
                raise ValueError(f"norm must be 'group' or 'layer', got {self.norm!r}")
            x = act(x)
        return x  # [B, T', C]


# --- encoder ------------------------------------------------------------------------------------


def relative_position_buckets(num_frames: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bucket of key j relative to query i, [T, T] int32 (transformers' float32 arithmetic)."""
    rel = np.arange(num_frames)[None, :] - np.arange(num_frames)[:, None]  # j - i
    half = num_buckets // 2
    buckets = (rel > 0).astype(np.int64) * half
    rel = np.abs(rel)
    max_exact = half // 2
    with np.errstate(divide="ignore"):
        large = np.log(rel.astype(np.float32) / np.float32(max_exact))
    large = large / np.float32(math.log(max_distance / max_exact))
    large = large * np.float32(half - max_exact)
    large = (np.float32(max_exact) + large).astype(np.float32)
    large = np.where(np.isfinite(large), large, 0).astype(np.int64)  # i = j takes the small branch
    large = np.minimum(large, half - 1)
    return (buckets + np.where(rel < max_exact, rel, large)).astype(np.int32)


class Attention(nn.Module):
    """WavLM self-attention with gated relative position bias; returns (output, ungated bias)."""

    config: WavLMConfig
    has_relative_position_bias: bool = False  # the first layer owns the bucket table
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask, position_bias, train: bool):
        cfg = self.config
        b, t, d = x.shape
        h = cfg.num_attention_heads
        dh = d // h
        if position_bias is None:
            table = self.param(
                "rel_attn_embed",
                nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "heads")),
                (cfg.num_buckets, h),
            )
            buckets = relative_position_buckets(t, cfg.num_buckets, cfg.max_bucket_distance)
            position_bias = jnp.transpose(table[buckets], (2, 0, 1))  # [T, T, H] -> [H, T, T]
        q = _dense(d, ("embed", "mlp"), "q_proj", self.dtype)(x).reshape(b, t, h, dh)
        k = _dense(d, ("embed", "mlp"), "k_proj", self.dtype)(x).reshape(b, t, h, dh)
        v = _dense(d, ("embed", "mlp"), "v_proj", self.dtype)(x).reshape(b, t, h, dh)
        # gate per head and query frame from the layer input
        const = self.param(
            "gru_rel_pos_const",
            nn.with_logical_partitioning(nn.initializers.ones, ("heads",)),
            (h,),
        )
        proj = _dense(8, (None, None), "gru_rel_pos_linear", jnp.float32)(x.reshape(b, t, h, dh))
        proj = jax.nn.sigmoid(proj.reshape(b, t, h, 2, 4).sum(-1))  # [B, T, H, 2]
        gate = proj[..., 0] * (proj[..., 1] * const - 1.0) + 2.0  # [B, T, H]
        bias = jnp.transpose(gate, (0, 2, 1))[..., None] * position_bias  # [B, H, T, T]
        drop = nn.Dropout(cfg.attention_dropout)
        out = distillmos.dot_product_attention(
            q,
            k,
            v,
            key_mask=key_mask,
            bias=bias,
            dropout=(lambda w: drop(w, deterministic=False))
            if train and cfg.attention_dropout > 0
            else None,
        )
        out = _dense(d, ("mlp", "embed"), "out_proj", self.dtype)(out)
        return out, position_bias


class EncoderLayer(nn.Module):
    """Transformer layer: post-LN (base) or pre-LN ('stable layer norm', large)."""

    config: WavLMConfig
    has_relative_position_bias: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask, position_bias, train: bool):
        cfg = self.config
        ff = "feed_forward"
        up = _dense(cfg.intermediate_size, ("embed", "mlp"), f"{ff}_intermediate_dense", self.dtype)
        down = _dense(cfg.hidden_size, ("mlp", "embed"), f"{ff}_output_dense", self.dtype)

        def feed_forward(y):
            y = _activation(cfg.hidden_act)(up(y))
            y = down(nn.Dropout(cfg.activation_dropout)(y, deterministic=not train))
            return nn.Dropout(cfg.hidden_dropout)(y, deterministic=not train)

        attention = Attention(cfg, self.has_relative_position_bias, self.dtype, name="attention")
        norm = layer_norm(cfg.layer_norm_eps, "layer_norm")
        final_norm = layer_norm(cfg.layer_norm_eps, "final_layer_norm")
        drop = nn.Dropout(cfg.hidden_dropout)
        if cfg.do_stable_layer_norm:
            y, position_bias = attention(norm(x), key_mask, position_bias, train)
            x = x + drop(y, deterministic=not train)
            x = x + feed_forward(final_norm(x))
        else:
            y, position_bias = attention(x, key_mask, position_bias, train)
            x = norm(x + drop(y, deterministic=not train))
            x = final_norm(x + feed_forward(x))
        return x, position_bias


class PositionalConvEmbedding(nn.Module):
    """Grouped Conv1d over time (same length) + GELU: [B, T, D] -> [B, T, D]; kernel [k, D/G, D]."""

    config: WavLMConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        k, g, d = cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups, cfg.hidden_size
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(nn.initializers.he_normal(), (None, None, "embed")),
            (k, d // g, d),
        )
        bias = self.param(
            "bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (d,)
        )
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            window_strides=(1,),
            padding=[(k // 2, k // 2)],
            dimension_numbers=("NWC", "WIO", "NWC"),
            feature_group_count=g,
        )
        if k % 2 == 0:
            y = y[:, :-1]  # same-pad layer drops the extra frame of even kernels
        return _activation(cfg.feat_extract_activation)(y + bias.astype(self.dtype))


class WavLM(nn.Module):
    """WavLMModel: audio [B, T] (16 kHz), lengths [B] -> (states [L + 1, B, T', D], frames [B])."""

    config: WavLMConfig = WavLMConfig()
    dtype: Dtype = jnp.float32  # compute dtype

    @nn.compact
    def __call__(self, audio: jax.Array, lengths: jax.Array | None = None, train: bool = False):
        cfg = self.config
        audio = jnp.asarray(audio, jnp.float32)
        if lengths is None:
            lengths = jnp.full(audio.shape[:1], audio.shape[1], jnp.int32)
        if cfg.do_normalize:  # the checkpoint's feature-extractor normalisation, padding -> 0
            audio = normalize_waveform(audio, lengths)
        feats = FeatureEncoder(
            cfg.conv_dim,
            cfg.conv_kernel,
            cfg.conv_stride,
            cfg.conv_bias,
            cfg.feat_extract_norm,
            cfg.feat_extract_activation,
            self.dtype,
            name="feature_extractor",
        )(audio)  # [B, T', C]
        frames = frame_lengths(cfg, lengths)
        t = feats.shape[1]
        mask = jnp.arange(t)[None, :] < frames[:, None]  # [B, T'] valid frames
        key_mask = mask.at[:, 0].set(True)  # an item without frames (< 400 samples) stays finite
        x = layer_norm(cfg.layer_norm_eps, "feature_projection_layer_norm")(feats)
        x = _dense(cfg.hidden_size, ("channel", "embed"), "feature_projection", self.dtype)(x)
        x = nn.Dropout(cfg.feat_proj_dropout)(x, deterministic=not train)
        x = jnp.where(mask[..., None], x, 0.0)  # padded frames output 0 before the pos. conv
        x = x + PositionalConvEmbedding(cfg, self.dtype, name="pos_conv_embed")(x)
        if not cfg.do_stable_layer_norm:
            x = layer_norm(cfg.layer_norm_eps, "encoder_layer_norm")(x)
        x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=not train)
        hidden = [x]
        position_bias = None
        for i in range(cfg.num_hidden_layers):
            layer = EncoderLayer(cfg, i == 0, self.dtype, name=f"layers_{i}")
            x, position_bias = layer(x, key_mask, position_bias, train)
            hidden.append(x)
        if cfg.do_stable_layer_norm:  # final LayerNorm: parameters kept, output not in hidden
            layer_norm(cfg.layer_norm_eps, "encoder_layer_norm")(x)
        return jnp.stack(hidden), frames  # [L + 1, B, T', D], [B]


# --- conversion ---------------------------------------------------------------------------------


def _load_state_dict(directory: Path) -> dict[str, np.ndarray]:
    st = sorted(directory.glob("*.safetensors"))
    if st:
        from safetensors.numpy import load_file

        state: dict[str, np.ndarray] = {}
        for f in st:
            state.update(load_file(str(f)))
        return state
    bins = sorted(directory.glob("pytorch_model*.bin"))
    if not bins:
        raise FileNotFoundError(f"{directory}: no *.safetensors or pytorch_model*.bin")
    state = {}
    for f in bins:
        state.update(torch_checkpoint.load_torch_state_dict(f))
    return state


def _weight_norm(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """torch weight_norm(dim=2) of a Conv1d weight v [O, I, k]: g * v / ||v||, norm over (O, I)."""
    norm = np.sqrt(np.sum(np.square(v.astype(np.float64)), axis=(0, 1), keepdims=True))
    return (g.astype(np.float64) * v / norm).astype(np.float32)


def convert_state_dict(config: WavLMConfig, state: dict[str, np.ndarray]) -> dict[str, Any]:
    """transformers WavLMModel state dict (optionally prefixed 'wavlm.') -> flax params of WavLM."""
    prefix = "wavlm." if any(k.startswith("wavlm.") for k in state) else ""
    state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    params: dict[str, np.ndarray] = {}

    def pop(key: str) -> np.ndarray:
        if key not in state:
            raise KeyError(f"checkpoint lacks {prefix}{key}")
        return np.asarray(state.pop(key), np.float32)

    def linear(src: str, dst: str) -> None:
        params[f"{dst}/kernel"] = pop(f"{src}.weight").T
        params[f"{dst}/bias"] = pop(f"{src}.bias")

    def norm(src: str, dst: str) -> None:
        params[f"{dst}/scale"] = pop(f"{src}.weight")
        params[f"{dst}/bias"] = pop(f"{src}.bias")

    for i in range(len(config.conv_dim)):
        src, dst = f"feature_extractor.conv_layers.{i}", f"feature_extractor/conv_layers_{i}_conv"
        params[f"{dst}/kernel"] = pop(f"{src}.conv.weight").transpose(2, 1, 0)  # -> [k, I, O]
        if config.conv_bias:
            params[f"{dst}/bias"] = pop(f"{src}.conv.bias")
        if config.feat_extract_norm == "layer":
            norm(f"{src}.layer_norm", f"feature_extractor/conv_layers_{i}_layer_norm")
        elif i == 0:
            group_norm = "feature_extractor/conv_layers_0_layer_norm"
            params[f"{group_norm}_scale"] = pop(f"{src}.layer_norm.weight")
            params[f"{group_norm}_bias"] = pop(f"{src}.layer_norm.bias")
    norm("feature_projection.layer_norm", "feature_projection_layer_norm")
    linear("feature_projection.projection", "feature_projection")
    pos = "encoder.pos_conv_embed.conv"
    if f"{pos}.parametrizations.weight.original0" in state:
        g = pop(f"{pos}.parametrizations.weight.original0")
        v = pop(f"{pos}.parametrizations.weight.original1")
    else:
        g, v = pop(f"{pos}.weight_g"), pop(f"{pos}.weight_v")
    params["pos_conv_embed/kernel"] = _weight_norm(g, v).transpose(2, 1, 0)  # [k, D / G, D]
    params["pos_conv_embed/bias"] = pop(f"{pos}.bias")
    norm("encoder.layer_norm", "encoder_layer_norm")
    for i in range(config.num_hidden_layers):
        src, dst = f"encoder.layers.{i}", f"layers_{i}"
        for name in ("q_proj", "k_proj", "v_proj", "out_proj", "gru_rel_pos_linear"):
            linear(f"{src}.attention.{name}", f"{dst}/attention/{name}")
        const = pop(f"{src}.attention.gru_rel_pos_const")  # [1, H, 1, 1]
        params[f"{dst}/attention/gru_rel_pos_const"] = const.reshape(-1)
        if i == 0:
            table = pop(f"{src}.attention.rel_attn_embed.weight")  # [buckets, H]
            params[f"{dst}/attention/rel_attn_embed"] = table
        norm(f"{src}.layer_norm", f"{dst}/layer_norm")
        norm(f"{src}.final_layer_norm", f"{dst}/final_layer_norm")
        linear(f"{src}.feed_forward.intermediate_dense", f"{dst}/feed_forward_intermediate_dense")
        linear(f"{src}.feed_forward.output_dense", f"{dst}/feed_forward_output_dense")
    state.pop("masked_spec_embed", None)  # SpecAugment vector, unused in inference
    if state:
        raise ValueError(f"unconverted checkpoint entries: {sorted(state)[:5]}")
    return traverse_util.unflatten_dict(params, sep="/")


def convert_hf_checkpoint(path: str | Path) -> tuple[WavLMConfig, dict[str, Any]]:
    """(config, params) of a local Hugging Face WavLM checkpoint directory (or a file inside it).

    Reads config.json (+ preprocessor_config.json's do_normalize, `WavLMConfig.from_pretrained`)
    and model*.safetensors (preferred) or pytorch_model*.bin; weights of a WavLMFor* head model
    (prefix 'wavlm.') are accepted, the head is ignored only if absent.
    """
    directory = Path(path)
    if directory.is_file():
        directory = directory.parent
    config = WavLMConfig.from_pretrained(directory)
    state = _load_state_dict(directory)
    if any(k.startswith("wavlm.") for k in state):  # drop heads of WavLMFor* models
        state = {k: v for k, v in state.items() if k.startswith("wavlm.")}
    params = convert_state_dict(config, state)
    _check_structure(config, params)
    return config, jax.tree_util.tree_map(jnp.asarray, params)


def _check_structure(config: WavLMConfig, params: dict[str, Any]) -> None:
    """Raise unless params match the WavLM module's parameter tree (names and shapes)."""
    audio = jax.ShapeDtypeStruct((1, 16000), jnp.float32)
    expected = jax.eval_shape(WavLM(config).init, jax.random.key(0), audio)["params"]
    expected = nn.unbox(expected)
    want = {k: v.shape for k, v in traverse_util.flatten_dict(expected, sep="/").items()}
    got = {k: np.shape(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))[:6]
        raise ValueError(f"converted WavLM weights do not match the flax module: {diff}")
