"""TF-GridNet (ESPnet `TFGridNetV3`), the separator of the URGENT 2024/2025 TF-GridNet baselines.

REFERENCE.md §3.6: one source, 6 blocks, BLSTM hidden 200, 4 attention heads with 2 Q/K channels
each, embedding 48, unfold kernel 4 / hop 1, PReLU, eps 1e-5; Hann STFT of 32 ms / 16 ms at every
rate (n_fft 256 / hop 128 at 8 kHz, scaled as n * fs // 8000); the input is divided by its std and
the output multiplied back (ESPnet `normalize_variance`). Papers: Wang et al., TF-GridNet,
TASLP 2023 and ICASSP 2023.

Figure boxes -> modules, on [batch, time, freq, channel] features:
  STFT (re, im) -> Conv2d 3x3 (2 -> D) -> GroupNorm(1, D)
  -> `GridNetBlock` x num_layers:
       zero-pad time and freq by (emb_ks - emb_hs) in front (and up to whole windows at the end),
       `UnfoldedBLSTM` along frequency (intra-frame), then along time (inter-frame): LayerNorm ->
       unfold emb_ks neighbours with hop emb_hs -> BLSTM -> ConvTranspose1d back -> + input; crop,
       `FullBandAttention` over frames: per-head 1x1-conv Q/K/V, PReLU, LayerNorm over each head's
       channels, softmax(Q K^T / sqrt(E F)) V over all frames, 1x1 conv -> PReLU -> LayerNorm,
       + input
  -> ConvTranspose2d 3x3 (D -> 2) -> complex spectrum -> iSTFT.
The spectrum is mapped directly (no mask). Only emb_hs < emb_ks is implemented (ESPnet switches to
Linear layers with different padding when they are equal).

Lengths. ESPnet runs on the zero-padded batch: its std includes padding, the last frames see
padding, and the GroupNorm, the backward LSTMs and the attention all read padded frames, so an
utterance's output depends on what it is batched with. Given `lengths`, this module computes every
example exactly as if it were alone: std over its own samples, STFT reflect-padded at its own end,
frames at or beyond its own count zeroed before every block and before the output convolution,
GroupNorm statistics over its own frames, inter-frame BLSTMs run over its own number of windows,
attention keys masked, and the iSTFT normalised by its own frames' window envelope. With equal
lengths (or `lengths=None`, which skips all masking) the result is ESPnet's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from urgent_jax.audio.stft import frame, frame_lengths, hann_window, istft, overlap_add, stft
from urgent_jax.models.frontend import check_inputs

Dtype = Any


def _partitioned(init, names):
    return nn.with_logical_partitioning(init, names)


def _prelu(x, slope):
    return jnp.where(x >= 0, x, slope * x)


class _Norm(nn.Module):
    """Normalisation over the last axis (biased variance, eps inside the sqrt), computed in fp32.

    Affine scale/bias cover the last `num_affine_axes` axes: 1 for a LayerNorm over channels, 2 for
    ESPnet's per-head normalisation (`AllHeadPReLULayerNormalization4DC`, scale [heads, E]).
    """

    eps: float = 1e-5  # added to the variance
    num_affine_axes: int = 1  # trailing axes the scale/bias cover
    dtype: Dtype = jnp.float32  # output dtype
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        shape = x.shape[-self.num_affine_axes :]
        scale = self.param("scale", nn.initializers.ones, shape, self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, shape, self.param_dtype)
        x = x.astype(jnp.float32)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias
        return y.astype(self.dtype)


class _MaskedGroupNorm(nn.Module):
    """GroupNorm(1 group) over (time, freq, channel) of each example, over its valid frames only."""

    eps: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, frame_mask=None):  # x [B, T, F, C], frame_mask [B, T] bool
        scale = self.param("scale", nn.initializers.ones, x.shape[-1:], self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, x.shape[-1:], self.param_dtype)
        x = x.astype(jnp.float32)
        if frame_mask is None:
            weight = jnp.ones(x.shape[:2] + (1, 1), jnp.float32)
        else:
            weight = frame_mask[:, :, None, None].astype(jnp.float32)
        count = jnp.sum(weight, axis=(1, 2, 3), keepdims=True) * x.shape[2] * x.shape[3]
        mean = jnp.sum(x * weight, axis=(1, 2, 3), keepdims=True) / count
        var = jnp.sum(((x - mean) * weight) ** 2, axis=(1, 2, 3), keepdims=True) / count
        y = (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias
        return y.astype(self.dtype)


def _torch_lstm_init(hidden: int):
    """uniform(-1/sqrt(H), 1/sqrt(H)), torch.nn.LSTM's default for every weight and bias."""
    bound = 1.0 / np.sqrt(hidden)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _reverse_within_lengths(x, seq_lengths):
    """Reverse each row of x [N, W, ...] within its first seq_lengths[n] steps (the rest stays)."""
    if seq_lengths is None:
        return x[:, ::-1]
    steps = jnp.arange(x.shape[1])[None, :]
    index = jnp.where(steps < seq_lengths[:, None], seq_lengths[:, None] - 1 - steps, steps)
    return x[jnp.arange(x.shape[0])[:, None], index]


class BLSTM(nn.Module):
    """One-layer bidirectional LSTM, torch gate order (i, f, g, o), [N, W, In] -> [N, W, 2H].

    Both directions run in one scan (direction is a batch axis of the recurrence) and the input
    projection of every step is a single matmul outside it. The backward direction reads each
    sequence reversed within its own length `seq_lengths` (a packed torch LSTM); outputs past a
    sequence's end are not meaningful. Gates and cell state are computed in fp32, matmuls in
    `dtype`.
    Initialised like torch.nn.LSTM, uniform(+-1/sqrt(H)) (one bias, where torch sums two).
    """

    hidden: int = 200  # H: units per direction
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, seq_lengths=None):  # x [N, W, In]; seq_lengths [N] or None
        num_in, hidden = x.shape[-1], self.hidden
        init = _torch_lstm_init(hidden)
        w_in = self.param(  # [direction, In, 4H]
            "input_kernel",
            _partitioned(init, (None, "embed", "mlp")),
            (2, num_in, 4 * hidden),
            self.param_dtype,
        )
        w_rec = self.param(  # [direction, H, 4H]
            "recurrent_kernel",
            _partitioned(init, (None, None, "mlp")),
            (2, hidden, 4 * hidden),
            self.param_dtype,
        )
        bias = self.param("bias", init, (2, 4 * hidden), self.param_dtype)  # b_ih + b_hh
        xs = jnp.stack([x, _reverse_within_lengths(x, seq_lengths)]).astype(self.dtype)
        gates_in = jnp.einsum("dnwi,dig->wdng", xs, w_in.astype(self.dtype))  # [W, 2, N, 4H]
        gates_in = gates_in.astype(jnp.float32) + bias.astype(jnp.float32)[:, None, :]
        w_rec = w_rec.astype(self.dtype)

        def step(carry, gates_t):
            cell, out = carry  # [2, N, H] each, fp32
            rec = jnp.einsum("dnh,dhg->dng", out.astype(self.dtype), w_rec)
            i, f, g, o = jnp.split(gates_t + rec.astype(jnp.float32), 4, axis=-1)
            cell = jax.nn.sigmoid(f) * cell + jax.nn.sigmoid(i) * jnp.tanh(g)
            out = jax.nn.sigmoid(o) * jnp.tanh(cell)
            return (cell, out), out

        zeros = jnp.zeros((2, x.shape[0], hidden), jnp.float32)
        _, outs = jax.lax.scan(step, (zeros, zeros), gates_in)  # [W, 2, N, H]
        forward = outs[:, 0].transpose(1, 0, 2)
        backward = _reverse_within_lengths(outs[:, 1].transpose(1, 0, 2), seq_lengths)
        return jnp.concatenate([forward, backward], axis=-1).astype(self.dtype)  # [N, W, 2H]


class UnfoldedBLSTM(nn.Module):
    """LayerNorm -> unfold -> BLSTM -> transposed Conv1d -> + input, along axis 1 of [N, L, C].

    The unfold stacks emb_ks neighbours every emb_hs steps (feature index = offset * C + channel);
    L must be (windows - 1) * emb_hs + emb_ks, which `GridNetBlock`'s padding guarantees.
    """

    emb_dim: int = 48  # C: channels in and out
    emb_ks: int = 4  # I: neighbours stacked per window
    emb_hs: int = 1  # J: hop between windows
    hidden: int = 200  # BLSTM units per direction
    eps: float = 1e-5  # LayerNorm eps
    dtype: Dtype = jnp.float32  # compute dtype
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, seq_lengths=None):  # x [N, L, C]; seq_lengths [N] valid windows or None
        ks, hs = self.emb_ks, self.emb_hs
        num, length, channels = x.shape
        windows = (length - ks) // hs + 1
        span = (windows - 1) * hs + 1
        y = _Norm(self.eps, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
        y = jnp.concatenate([y[:, i : i + span : hs] for i in range(ks)], axis=-1)  # [N, W, I*C]
        y = BLSTM(self.hidden, self.dtype, self.param_dtype, name="blstm")(y, seq_lengths)
        # ConvTranspose1d(2H -> C, kernel I, stride J): window w, offset i lands on w * J + i.
        y = nn.Dense(
            ks * channels,
            use_bias=False,
            kernel_init=_partitioned(nn.initializers.lecun_normal(), ("mlp", "embed")),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="deconv",
        )(y).reshape(num, windows, ks, channels)
        zero = jnp.zeros((), y.dtype)
        out = sum(
            jax.lax.pad(y[:, :, i], zero, ((0, 0, 0), (i, length - i - span, hs - 1), (0, 0, 0)))
            for i in range(ks)
        )
        bias = self.param("deconv_bias", nn.initializers.zeros, (channels,), self.param_dtype)
        return x + (out + bias).astype(x.dtype)


class FullBandAttention(nn.Module):
    """Multi-head self-attention across frames, each frame's whole spectrum as one token.

    Q and K have qk_channels (E) per head and frequency bin, V has emb_dim / num_heads; the softmax
    scale is 1 / sqrt(E * F). Keys at frames beyond an example's length are masked.
    """

    emb_dim: int = 48  # C
    num_heads: int = 4  # H
    qk_channels: int = 2  # E: query/key channels per head (constant, so independent of F)
    eps: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _head_projection(self, x, channels, name):
        """1x1 conv -> PReLU (one slope per head) -> LayerNorm over the head's channels."""
        batch, frames, freqs, _ = x.shape
        y = nn.Dense(
            self.num_heads * channels,
            kernel_init=_partitioned(nn.initializers.lecun_normal(), ("embed", "heads")),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )(x).reshape(batch, frames, freqs, self.num_heads, channels)  # [B, T, F, H, ch]
        slope = self.param(
            f"{name}_prelu", nn.initializers.constant(0.25), (self.num_heads,), self.param_dtype
        )
        y = _prelu(y, slope.astype(y.dtype)[:, None])
        y = _Norm(self.eps, 2, self.dtype, self.param_dtype, name=f"{name}_norm")(y)
        return y.transpose(0, 3, 1, 2, 4).reshape(batch, self.num_heads, frames, freqs * channels)

    @nn.compact
    def __call__(self, x, frame_mask=None):  # x [B, T, F, C]; frame_mask [B, T] bool or None
        batch, frames, freqs, channels = x.shape
        if channels % self.num_heads:
            raise ValueError(f"emb_dim {channels} is not divisible by {self.num_heads} heads")
        head_dim = channels // self.num_heads
        q = self._head_projection(x, self.qk_channels, "query")  # [B, H, T, F*E]
        k = self._head_projection(x, self.qk_channels, "key")  # [B, H, T, F*E]
        v = self._head_projection(x, head_dim, "value")  # [B, H, T, F*C/H]
        logits = jnp.einsum("bhtd,bhsd->bhts", q, k).astype(jnp.float32) / np.sqrt(q.shape[-1])
        if frame_mask is not None:
            logits = jnp.where(frame_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        y = jnp.einsum("bhts,bhsd->bhtd", weights, v)  # [B, H, T, F*C/H]
        y = y.reshape(batch, self.num_heads, frames, freqs, head_dim)
        y = y.transpose(0, 2, 3, 1, 4)  # [B, T, F, H, C/H]: channels head-major as ESPnet
        y = y.reshape(batch, frames, freqs, channels)
        y = nn.Dense(
            channels,
            kernel_init=_partitioned(nn.initializers.lecun_normal(), ("heads", "embed")),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="proj",
        )(y)
        slope = self.param("proj_prelu", nn.initializers.constant(0.25), (1,), self.param_dtype)
        y = _prelu(y, slope.astype(y.dtype))
        y = _Norm(self.eps, 1, self.dtype, self.param_dtype, name="proj_norm")(y)
        return x + y


class GridNetBlock(nn.Module):
    """Intra-frame BLSTM (along freq), inter-frame BLSTM (along time), full-band attention."""

    emb_dim: int = 48
    emb_ks: int = 4
    emb_hs: int = 1
    lstm_hidden: int = 200
    num_heads: int = 4
    qk_channels: int = 2
    eps: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _padded(self, size):
        """ESPnet's padded length: (ks - hs) in front, the rest up to a whole number of windows."""
        ks, hs = self.emb_ks, self.emb_hs
        overlap = ks - hs
        return -(-(size + 2 * overlap - ks) // hs) * hs + ks

    @nn.compact
    def __call__(self, x, frame_mask=None):  # x [B, T, F, C]; frame_mask [B, T] bool or None
        batch, frames, freqs, channels = x.shape
        overlap = self.emb_ks - self.emb_hs
        padded_t, padded_f = self._padded(frames), self._padded(freqs)
        rnn = dict(
            emb_dim=channels,
            emb_ks=self.emb_ks,
            emb_hs=self.emb_hs,
            hidden=self.lstm_hidden,
            eps=self.eps,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        if frame_mask is not None:
            x = x * frame_mask[:, :, None, None].astype(x.dtype)  # as if the example ended there
        pad_t = (overlap, padded_t - frames - overlap)
        pad_f = (overlap, padded_f - freqs - overlap)
        y = jnp.pad(x, ((0, 0), pad_t, pad_f, (0, 0)))  # [B, T', F', C]

        # intra-frame: sequences over frequency, one per (example, frame)
        y = y.reshape(batch * padded_t, padded_f, channels)
        y = UnfoldedBLSTM(**rnn, name="intra_frame")(y)
        y = y.reshape(batch, padded_t, padded_f, channels).transpose(0, 2, 1, 3)  # [B, F', T', C]

        # inter-frame: sequences over time, one per (example, bin), each over its own windows
        seq_lengths = None
        if frame_mask is not None:
            valid = jnp.sum(frame_mask, axis=1)  # [B] frames
            windows = (valid + 2 * overlap - self.emb_ks + self.emb_hs - 1) // self.emb_hs + 1
            seq_lengths = jnp.repeat(jnp.maximum(windows, 1), padded_f)  # [B * F']
        y = UnfoldedBLSTM(**rnn, name="inter_frame")(
            y.reshape(batch * padded_f, padded_t, channels), seq_lengths
        )
        y = y.reshape(batch, padded_f, padded_t, channels).transpose(0, 2, 1, 3)  # [B, T', F', C]
        y = y[:, overlap : overlap + frames, overlap : overlap + freqs]  # [B, T, F, C]

        return FullBandAttention(
            channels,
            self.num_heads,
            self.qk_channels,
            self.eps,
            self.dtype,
            self.param_dtype,
            name="attention",
        )(y, frame_mask)


def _reflect_pad_to_lengths(x, lengths, pad: int):
    """[B, T] -> [B, T + 2 pad]: each row reflect-padded at both ends of its own length (torch).

    Needs lengths > pad, as torch; shorter rows get edge-clipped indices instead of an error.
    """
    last = (lengths - 1)[:, None]
    j = jnp.abs(jnp.arange(x.shape[-1] + 2 * pad) - pad)[None, :]
    j = jnp.clip(jnp.where(j > last, 2 * last - j, j), 0, last)
    return jnp.take_along_axis(x, j, axis=-1)


def _stft_per_example(x, lengths, n_fft: int, hop_length: int):
    """Hann STFT [B, T] -> [B, frames, bins], each example centred and reflect-padded at its end."""
    padded = _reflect_pad_to_lengths(x, lengths, n_fft // 2)
    window = jnp.asarray(hann_window(n_fft), jnp.float32)
    return jnp.fft.rfft(frame(padded, n_fft, hop_length) * window, axis=-1)


def _istft_per_example(spec, frame_mask, n_fft: int, hop_length: int, length: int):
    """iSTFT where each example's window envelope counts only its own frames (torch.istft alone)."""
    window = jnp.asarray(hann_window(n_fft), jnp.float32)
    frames = jnp.fft.irfft(spec, n=n_fft, axis=-1).astype(jnp.float32) * window
    y = overlap_add(frames * frame_mask[..., None], hop_length)
    envelope = overlap_add(frame_mask[..., None] * window**2, hop_length)
    nonzero = envelope > 1e-11
    y = jnp.where(nonzero, y / jnp.where(nonzero, envelope, 1.0), 0.0)
    y = y[:, n_fft // 2 : n_fft // 2 + length]
    return jnp.pad(y, ((0, 0), (0, length - y.shape[-1])))


class TFGridNet(nn.Module):
    """TF-GridNet speech enhancer: noisy [B, T] (+ lengths [B]) -> enhanced [B, T] float32."""

    num_layers: int = 6  # GridNet blocks (n_layers)
    lstm_hidden: int = 200  # BLSTM units per direction (lstm_hidden_units)
    num_heads: int = 4  # attention heads (attn_n_head)
    qk_channels: int = 2  # E: query/key channels per head (attn_qk_output_channel)
    emb_dim: int = 48  # D: embedding channels (emb_dim)
    emb_ks: int = 4  # I: unfold kernel, frames or bins (emb_ks)
    emb_hs: int = 1  # J: unfold hop, < emb_ks (emb_hs)
    eps: float = 1e-5  # normalisation eps
    n_fft: int = 256  # STFT size at default_sample_rate (win = n_fft, Hann)
    hop_length: int = 128  # STFT hop at default_sample_rate
    default_sample_rate: int = 8000  # Hz; n_fft and hop scale as n * fs // default_sample_rate
    use_variance_norm: bool = True  # divide the input by its std, multiply the output back
    std_floor: float = 1e-8  # floor of that std (ESPnet divides by 0 on a silent input)
    use_remat: bool = False  # rematerialise each block in the backward pass
    dtype: Dtype = jnp.float32  # compute dtype of convs, dense layers and LSTMs
    param_dtype: Dtype = jnp.float32

    @nn.nowrap
    def stft_config(self, sample_rate: int) -> tuple[int, int]:
        """(n_fft, hop_length) in samples at sample_rate (ESPnet STFTEncoder `_reconfig_for_fs`)."""
        fs, default = int(sample_rate), self.default_sample_rate
        return self.n_fft * fs // default, self.hop_length * fs // default

    @nn.compact
    def __call__(self, noisy, lengths=None, *, sample_rate: int):
        """noisy [B, T] float, lengths [B] valid samples or None (all T), sample_rate Hz (static).

        Returns enhanced [B, T] float32, zero beyond each example's length. Each length must exceed
        n_fft // 2 at the rate (torch's reflect padding needs it too). Inputs are validated by
        `frontend.check_inputs` (concrete lengths in [1, T]; traced lengths clipped to [0, T]).
        """
        if self.emb_hs >= self.emb_ks:
            raise ValueError(
                "TF-GridNet supports emb_hs < emb_ks (the unfold + transposed-conv path); got "
                f"emb_hs={self.emb_hs}, emb_ks={self.emb_ks}"
            )
        # [batch, time], lengths [batch], a supported rate; traced lengths clipped to [0, time]
        noisy, lengths, sample_rate = check_inputs(noisy, lengths, sample_rate)
        n_fft, hop = self.stft_config(sample_rate)
        noisy = jnp.asarray(noisy, jnp.float32)
        batch, num_samples = noisy.shape
        if lengths is None:
            sample_mask = frame_mask = None
            num_valid = jnp.full((batch, 1), num_samples, jnp.float32)
        else:
            lengths = jnp.asarray(lengths, jnp.int32)
            sample_mask = jnp.arange(num_samples)[None, :] < lengths[:, None]
            noisy = jnp.where(sample_mask, noisy, 0.0)
            num_valid = jnp.maximum(lengths, 1).astype(jnp.float32)[:, None]  # traced 0: no NaN

        # --- variance normalisation (unbiased std over the valid samples) ---
        std = jnp.ones((batch, 1), jnp.float32)
        if self.use_variance_norm:
            mean = jnp.sum(noisy, axis=-1, keepdims=True) / num_valid
            centred = noisy - mean
            if sample_mask is not None:
                centred = jnp.where(sample_mask, centred, 0.0)
            var = jnp.sum(centred**2, axis=-1, keepdims=True) / jnp.maximum(num_valid - 1.0, 1.0)
            std = jnp.sqrt(jnp.maximum(var, self.std_floor**2))
        x = noisy / std

        # --- encoder: STFT -> [B, T, F, 2] -> Conv2d 3x3 -> GroupNorm ---
        if lengths is None:
            spec = stft(x, n_fft, hop, window="hann")  # [B, T, F]
        else:
            spec = _stft_per_example(x, lengths, n_fft, hop)
            valid_frames = frame_lengths(lengths, n_fft, hop)
            frame_mask = jnp.arange(spec.shape[1])[None, :] < valid_frames[:, None]  # [B, T]
            spec = spec * frame_mask[..., None]
        feats = jnp.stack([spec.real, spec.imag], axis=-1).astype(self.dtype)  # [B, T, F, 2]
        h = nn.Conv(
            self.emb_dim,
            (3, 3),
            padding=((1, 1), (1, 1)),
            kernel_init=_partitioned(nn.initializers.lecun_normal(), (None, None, None, "embed")),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv_in",
        )(feats)  # [B, T, F, D]
        h = _MaskedGroupNorm(self.eps, self.dtype, self.param_dtype, name="norm_in")(h, frame_mask)

        # --- GridNet blocks ---
        block_cls = nn.remat(GridNetBlock) if self.use_remat else GridNetBlock
        for i in range(self.num_layers):
            h = block_cls(
                emb_dim=self.emb_dim,
                emb_ks=self.emb_ks,
                emb_hs=self.emb_hs,
                lstm_hidden=self.lstm_hidden,
                num_heads=self.num_heads,
                qk_channels=self.qk_channels,
                eps=self.eps,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"block_{i}",
            )(h, frame_mask)

        # --- decoder: ConvTranspose2d 3x3 (a 3x3 conv with the flipped kernel) -> iSTFT ---
        if frame_mask is not None:
            h = h * frame_mask[:, :, None, None].astype(h.dtype)
        out = nn.Conv(
            2,
            (3, 3),
            padding=((1, 1), (1, 1)),
            kernel_init=_partitioned(nn.initializers.lecun_normal(), (None, None, "embed", None)),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv_out",
        )(h).astype(jnp.float32)  # [B, T, F, 2]
        est_spec = jax.lax.complex(out[..., 0], out[..., 1])
        if frame_mask is None:
            est = istft(est_spec, n_fft, hop, window="hann", length=num_samples)
        else:
            est = _istft_per_example(est_spec, frame_mask, n_fft, hop, num_samples)
            est = jnp.where(sample_mask, est, 0.0)
        return est * std


def from_torch_state_dict(
    model: TFGridNet, state_dict: Mapping[str, Any], prefix: str = ""
) -> dict[str, Any]:
    """ESPnet TFGridNetV3 weights -> {'params': ...} for `model` (same sizes, n_srcs = 1).

    state_dict: name -> torch tensor or array (`module.state_dict()` as is); prefix: e.g.
    "separator." for a whole ESPnetEnhancementModel state dict. The unfold order, the two LSTM
    biases and the ConvTranspose kernels are rearranged here; no torch import is needed.
    """

    def get(name):
        value = state_dict[prefix + name]
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        return np.asarray(value, np.float32)

    def blstm(name, feature_order):
        """torch weight_ih/hh (gates i, f, g, o on rows), two biases -> [direction, in, 4H] etc."""
        directions = [
            (
                get(f"{name}.weight_ih_l0{sfx}")[:, feature_order].T,
                get(f"{name}.weight_hh_l0{sfx}").T,
                get(f"{name}.bias_ih_l0{sfx}") + get(f"{name}.bias_hh_l0{sfx}"),
            )
            for sfx in ("", "_reverse")
        ]
        w_in, w_rec, bias = (np.stack(parts) for parts in zip(*directions))
        return {"input_kernel": w_in, "recurrent_kernel": w_rec, "bias": bias}

    ks, channels = model.emb_ks, model.emb_dim
    # torch F.unfold orders features channel-major (c * I + i); ours is offset-major (i * C + c).
    unfold_order = (np.arange(channels)[None, :] * ks + np.arange(ks)[:, None]).reshape(-1)

    def unfolded_blstm(name):
        deconv = get(f"{name}_linear.weight")  # ConvTranspose1d [2H, C, I]
        return {
            "norm": {"scale": get(f"{name}_norm.weight"), "bias": get(f"{name}_norm.bias")},
            "blstm": blstm(f"{name}_rnn", unfold_order),
            "deconv": {"kernel": deconv.transpose(0, 2, 1).reshape(deconv.shape[0], -1)},
            "deconv_bias": get(f"{name}_linear.bias"),
        }

    def head_projection(block, key, heads):
        conv = get(f"{block}.attn_conv_{key}.weight")[:, :, 0, 0]  # [H*ch, C]
        return {
            "kernel": conv.T,
            "bias": get(f"{block}.attn_conv_{key}.bias"),
        }, {
            "scale": get(f"{block}.attn_norm_{key}.gamma").reshape(heads, -1),
            "bias": get(f"{block}.attn_norm_{key}.beta").reshape(heads, -1),
        }, get(f"{block}.attn_norm_{key}.act.weight")

    params: dict[str, Any] = {
        "conv_in": {
            "kernel": get("conv.0.weight").transpose(2, 3, 1, 0),  # [D, 2, 3, 3] -> [3, 3, 2, D]
            "bias": get("conv.0.bias"),
        },
        "norm_in": {"scale": get("conv.1.weight"), "bias": get("conv.1.bias")},
        # ConvTranspose2d [D, 2, kt, kf] == conv with the kernel flipped in time and frequency
        "conv_out": {
            "kernel": get("deconv.weight")[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).copy(),
            "bias": get("deconv.bias"),
        },
    }
    for i in range(model.num_layers):
        block = f"blocks.{i}"
        attention = {}
        for key, name in (("Q", "query"), ("K", "key"), ("V", "value")):
            dense, norm, slope = head_projection(block, key, model.num_heads)
            attention[name] = dense
            attention[f"{name}_norm"] = norm
            attention[f"{name}_prelu"] = slope
        proj = get(f"{block}.attn_concat_proj.0.weight")[:, :, 0, 0]
        attention["proj"] = {"kernel": proj.T, "bias": get(f"{block}.attn_concat_proj.0.bias")}
        attention["proj_prelu"] = get(f"{block}.attn_concat_proj.1.weight")
        attention["proj_norm"] = {
            "scale": get(f"{block}.attn_concat_proj.2.gamma").reshape(-1),
            "bias": get(f"{block}.attn_concat_proj.2.beta").reshape(-1),
        }
        params[f"block_{i}"] = {
            "intra_frame": unfolded_blstm(f"{block}.intra"),
            "inter_frame": unfolded_blstm(f"{block}.inter"),
            "attention": attention,
        }
    return {"params": jax.tree_util.tree_map(jnp.asarray, params)}
