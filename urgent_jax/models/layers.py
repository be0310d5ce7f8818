"""Blocks of the band-split models: band layouts, per-band banks, norms, LSTMs, dual-path layers.

Layout: a band-split representation is z [batch, time, band, channel] (channels last). Spectra
enter as [batch, time, freq, 2] with (re, im) last. Padded frames are described by `frame_counts`
[batch]; norm statistics use valid frames only and the time LSTMs stop at each item's last valid
frame, so an item's output does not depend on how much padding the batch adds (the PyTorch
reference includes the padding in its statistics; for equal-length batches both agree).

Initialisers follow PyTorch's defaults (uniform ±1/sqrt(fan_in) for Linear, Conv and LSTM weights
and biases) so that training from scratch starts from the reference's distribution. Parameters keep
the PyTorch layouts up to a transpose (LSTM gate order i, f, g, o; separate input and hidden
biases), which makes checkpoint conversion a renaming and the parameter count the reference's.
Per-band parameters are stacked per group of consecutive equal-width bands (kernel_1_19 holds bands
1..19), so each group is one einsum.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

FLOAT32_EPS = float(np.finfo(np.float32).eps)  # ESPnet's cLN/cfLN epsilon (torch default dtype eps)
# Normalisation epsilon of the reference per norm type: band-split/decoder norms ("norm1d", ESPnet
# tcn.choose_norm) and dual-path norms (ESPnet bsrnn.choose_norm; torch GroupNorm's default 1e-5).
NORM1D_EPS = {"GN": 1e-8, "cLN": FLOAT32_EPS}
DUAL_PATH_EPS = {"GN": 1e-5, "cLN": FLOAT32_EPS, "cfLN": FLOAT32_EPS}


def check_band_layout(band_widths, n_fft: int) -> None:
    """The bins per band must cover the n_fft // 2 + 1 bins of the reference-rate STFT exactly."""
    covered, num_bins = sum(band_widths), n_fft // 2 + 1
    if covered != num_bins:
        raise ValueError(f"band layout covers {covered} bins; n_fft {n_fft} gives {num_bins}")


def partitioned(init, axes: tuple[str | None, ...]):
    """Attach logical axis names (the STYLE.md vocabulary) to an initialiser."""
    return nn.with_logical_partitioning(init, axes)


def torch_uniform_params(module: nn.Module, specs, param_dtype: Dtype) -> list:
    """Declare parameters [(name, shape, fan_in, logical axes)], each U(±1/sqrt(fan_in)).

    All of a module's values are cut from one uniform draw: XLA:CPU compiles every random-bits call
    separately and slowly, so one draw per module keeps `init` fast. Call once per module.
    """
    slab = None
    if module.is_initializing():
        total = sum(math.prod(shape) for _, shape, _, _ in specs)
        slab = jax.random.uniform(module.make_rng("params"), (total,), jnp.float32, -1.0, 1.0)
    params, offset = [], 0
    for name, shape, fan_in, axes in specs:
        size, bound = math.prod(shape), 1.0 / math.sqrt(fan_in)

        def init(key, start=offset, size=size, shape=shape, bound=bound):
            del key  # values come from the module's slab
            if slab is None:  # flax checks shapes of existing parameters by tracing the initialiser
                return jnp.zeros(shape, param_dtype)
            return (slab[start : start + size].reshape(shape) * bound).astype(param_dtype)

        params.append(module.param(name, partitioned(init, axes)))
        offset += size
    return params


def _linear_params(module: nn.Module, fan_in: int, features: int, kernel_axes, param_dtype):
    """`module`'s 'kernel' [fan_in, features] and 'bias' [features], PyTorch Linear init."""
    return torch_uniform_params(
        module,
        [
            ("kernel", (fan_in, features), fan_in, kernel_axes),
            ("bias", (features,), fan_in, kernel_axes[1:]),
        ],
        param_dtype,
    )


class Linear(nn.Module):
    """Dense layer over the last axis with PyTorch's Linear initialisation; kernel [in, out]."""

    features: int  # output size
    kernel_axes: tuple[str | None, str | None] = ("mlp", "embed")  # logical axes of the kernel
    dtype: Dtype = jnp.float32  # compute dtype
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):  # [..., in] -> [..., out]
        kernel, bias = _linear_params(
            self, x.shape[-1], self.features, self.kernel_axes, self.param_dtype
        )
        y = jnp.einsum("...i,io->...o", x.astype(self.dtype), kernel.astype(self.dtype))
        return y + bias.astype(self.dtype)


class LinearParams(nn.Module):
    """The parameters of a `Linear` (same names, shapes and initialisation), for a layer that
    applies them itself: () -> (kernel [fan_in, features], bias [features])."""

    features: int  # output size
    fan_in: int  # input size
    kernel_axes: tuple[str | None, str | None] = ("mlp", "embed")
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self):
        return _linear_params(self, self.fan_in, self.features, self.kernel_axes, self.param_dtype)


# --- band layout -----------------------------------------------------------------------------


def num_bands(band_widths: Sequence[int], num_bins: int) -> int:
    """Bands consumed, in order, until their bins cover num_bins (the reference's loop, no fs)."""
    total = 0
    for k, width in enumerate(band_widths):
        total += width
        if total >= num_bins:
            return k + 1
    raise ValueError(f"{num_bins} bins exceed the band layout's {total} bins")


def band_groups(keys: Sequence) -> list[tuple[int, int]]:
    """Maximal runs of consecutive bands with equal keys (e.g. widths): (first band, count) each."""
    groups: list[tuple[int, int]] = []
    for k, key in enumerate(keys):
        if groups and keys[groups[-1][0]] == key:
            groups[-1] = (groups[-1][0], groups[-1][1] + 1)
        else:
            groups.append((k, 1))
    return groups


def band_runs(band_widths: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """Runs of equal-width bands: (first band, band count, width, first bin) each."""
    starts = np.concatenate([[0], np.cumsum(band_widths)]).astype(int)
    return [(b0, n, band_widths[b0], int(starts[b0])) for b0, n in band_groups(band_widths)]


def group_name(prefix: str, first: int, count: int) -> str:
    """Parameter name of a band group: kernel_1_19 holds bands 1..19 (inclusive), stacked."""
    return f"{prefix}_{first}_{first + count - 1}"


def _zip_groups(groups, parts):
    """Pair input parts with parameter groups; parts cover a prefix of the bands (lower rates)."""
    if len(parts) > len(groups):
        raise ValueError(f"{len(parts)} parts for {len(groups)} band groups")
    for i, ((first, count), x) in enumerate(zip(groups, parts)):
        if x.shape[2] > count or (x.shape[2] < count and i != len(parts) - 1):
            raise ValueError(f"part {i} has {x.shape[2]} bands; its group holds {count}")
        yield first, count, x


# --- normalisation ---------------------------------------------------------------------------


def normalize(x, axes: tuple[int, ...], eps: float, mask=None):
    """(x − mean) / sqrt(var + eps), biased moments over `axes` counting only mask == 1 entries.

    x float32; mask broadcastable to x (1 valid, 0 padding) or None. The gradient is written out
    (`_normalize_bwd`), so the backward pass keeps only the output and the per-group 1 / std; the
    output is also what a following scale needs for its own gradient, so it is stored once.
    Autodiff of the formula kept three full-size arrays per call (x − mean, the masked copy and the
    broadcast scale): with BSRNN's 14 norms per step ~0.45 GiB of 3.1 GiB of saved activations.
    """
    mask = jnp.ones((1,) * x.ndim, x.dtype) if mask is None else mask.astype(x.dtype)
    return _normalize(x, mask, tuple(axes), float(eps))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _normalize(x, mask, axes, eps):
    return _normalize_fwd(x, mask, axes, eps)[0]


def _normalize_fwd(x, mask, axes, eps):
    count = jnp.maximum(jnp.sum(jnp.broadcast_to(mask, x.shape), axes, keepdims=True), 1.0)
    mean = jnp.sum(x * mask, axes, keepdims=True) / count
    centred = x - mean
    rstd = jax.lax.rsqrt(jnp.sum(jnp.square(centred * mask), axes, keepdims=True) / count + eps)
    y = centred * rstd
    return y, (y, mask, rstd, count)


def _normalize_bwd(axes, eps, residuals, dy):
    """With m the mask, n its count, r = 1 / std and y the output (every entry, padding too,
    depends on x through the mean and r): dx = r (dy − m (sum dy + y sum(dy y)) / n)."""
    del eps
    y, mask, rstd, count = residuals
    sum_dy = jnp.sum(dy, axes, keepdims=True)
    sum_dy_y = jnp.sum(dy * y, axes, keepdims=True)
    return rstd * (dy - mask * (sum_dy + y * sum_dy_y) / count), jnp.zeros_like(mask)


_normalize.defvjp(_normalize_fwd, _normalize_bwd)


class DualPathNorm(nn.Module):
    """Norm of a dual-path layer on z [B, T, K, N] with one scale/bias per channel.

    GN: GroupNorm(1 group) over (T, K, N) per item; cLN: per (t, k) over N; cfLN: per t over (K, N).
    """

    norm_type: str = "GN"  # "GN" | "cLN" | "cfLN" (ESPnet bsrnn.choose_norm)
    dtype: Dtype = jnp.float32  # output dtype
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z, frame_mask):  # z [B, T, K, N], frame_mask [B, T] -> [B, T, K, N]
        n = z.shape[-1]
        ones, zeros = nn.initializers.ones, nn.initializers.zeros
        scale = self.param("scale", partitioned(ones, ("embed",)), (n,), self.param_dtype)
        bias = self.param("bias", partitioned(zeros, ("embed",)), (n,), self.param_dtype)
        eps = DUAL_PATH_EPS[self.norm_type]
        x = z.astype(jnp.float32)
        if self.norm_type == "GN":
            y = normalize(x, (1, 2, 3), eps, frame_mask[:, :, None, None])
        elif self.norm_type == "cLN":
            y = normalize(x, (3,), eps)
        elif self.norm_type == "cfLN":
            y = normalize(x, (2, 3), eps)
        else:
            raise ValueError(f"norm_type must be GN, cLN or cfLN, got {self.norm_type!r}")
        return (y * scale + bias).astype(self.dtype)


class BandNorm(nn.Module):
    """Per-band norm ("norm1d"), one scale/bias per band and channel.

    GN: GroupNorm(1 group) over (T, C) per item and band; cLN: per frame over C. Parameters are
    stacked per group of bands with equal C: scale_<first>_<last> [count, C].
    """

    features: tuple[int, ...]  # channels C of each band (all bands of the layout)
    norm_type: str = "GN"  # "GN" | "cLN" (ESPnet tcn.choose_norm)
    dtype: Dtype = jnp.float32  # output dtype
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, parts, frame_mask):  # parts: [x [B, T, c, C] per group], frame_mask [B, T]
        ones, zeros = nn.initializers.ones, nn.initializers.zeros
        eps = NORM1D_EPS.get(self.norm_type)
        if eps is None:
            raise ValueError(f"band norm_type must be GN or cLN, got {self.norm_type!r}")
        groups = band_groups(self.features)
        params = []
        for first, count in groups:
            shape = (count, self.features[first])
            axes = ("band", "channel")
            scale = self.param(
                group_name("scale", first, count), partitioned(ones, axes), shape, self.param_dtype
            )
            bias = self.param(
                group_name("bias", first, count), partitioned(zeros, axes), shape, self.param_dtype
            )
            params.append((scale, bias))
        outs = []
        for (_, _, x), (scale, bias) in zip(_zip_groups(groups, parts), params):
            used = x.shape[2]
            x = x.astype(jnp.float32)
            if self.norm_type == "GN":
                y = normalize(x, (1, 3), eps, frame_mask[:, :, None, None])
            else:
                y = normalize(x, (3,), eps)
            outs.append((y * scale[:used] + bias[:used]).astype(self.dtype))
        return outs


class BandDense(nn.Module):
    """One 1x1 convolution per band (kernel [in_k, out_k]), stacked per group of equal shapes.

    Parameters kernel_<first>_<last> [count, in, out] and bias_<first>_<last> [count, out]; each
    group is one einsum.
    """

    in_features: tuple[int, ...]  # per band
    out_features: tuple[int, ...]  # per band
    kernel_axes: tuple[str | None, str | None] = ("channel", "embed")  # logical axes of a kernel
    dtype: Dtype = jnp.float32  # compute dtype
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, parts):  # parts: [x [B, T, c, in] per group] -> [[B, T, c, out]]
        groups = band_groups(list(zip(self.in_features, self.out_features)))
        specs = []
        for first, count in groups:
            fan_in, fan_out = self.in_features[first], self.out_features[first]
            specs.append(
                (
                    group_name("kernel", first, count),
                    (count, fan_in, fan_out),
                    fan_in,
                    ("band",) + self.kernel_axes,
                )
            )
            specs.append(
                (
                    group_name("bias", first, count),
                    (count, fan_out),
                    fan_in,
                    ("band", self.kernel_axes[1]),
                )
            )
        params = torch_uniform_params(self, specs, self.param_dtype)
        outs = []
        for i, (_, _, x) in enumerate(_zip_groups(groups, parts)):
            used = x.shape[2]
            kernel = params[2 * i][:used].astype(self.dtype)  # [c, in, out]
            bias = params[2 * i + 1][:used].astype(self.dtype)  # [c, out]
            outs.append(jnp.einsum("btci,cio->btco", x.astype(self.dtype), kernel) + bias)
        return outs


# --- recurrent layers ------------------------------------------------------------------------


def _gate_activations(pre):
    """Pre-activation gates [..., 4H] (i, f, g, o) -> (i, f, g, o) after sigmoid/tanh."""
    i, f, g, o = jnp.split(pre, 4, axis=-1)
    return jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)


def _cell_update(pre, c_prev, k):
    """One step's cell state c = (f c_prev + i g) k (k: 1 for valid frames, 0 past the length) and
    output gate o, from the pre-activation gates pre [..., 4H]."""
    i, f, g, o = _gate_activations(pre)
    return (f * c_prev + i * g) * k, o


def _input_gates(xs, w_ih, bias, dtype):
    """Every step's input projection in one matmul: xs [S, D, B, I] -> float32 [S, D, B, 4H]."""
    proj = jnp.einsum("sdbi,dig->sdbg", xs.astype(dtype), w_ih.astype(dtype))
    return proj.astype(jnp.float32) + bias.astype(jnp.float32)[None, :, None, :]


def _time_major(x, dirs: int):
    """[B, S, I] -> [S, D, B, I]; direction 1 (if any) reads the sequence reversed."""
    xs = jnp.swapaxes(x, 0, 1)
    return jnp.stack([xs, jnp.flip(xs, axis=0)], axis=1) if dirs == 2 else xs[:, None]


def _batch_major(hs):
    """[S, D, B, H] (direction 1 in reversed time) -> [B, S, D·H], each step's directions side by
    side in the forward time order (the inverse of `_split_directions`)."""
    if hs.shape[1] == 2:
        return jnp.swapaxes(jnp.concatenate([hs[:, 0], jnp.flip(hs[:, 1], axis=0)], -1), 0, 1)
    return jnp.swapaxes(hs[:, 0], 0, 1)


def _split_directions(out, dirs: int):
    """[B, S, D·H] -> [S, D, B, H] (the inverse of `_batch_major`)."""
    steps = jnp.swapaxes(out, 0, 1)  # [S, B, D·H]
    h = steps.shape[-1] // dirs
    if dirs == 2:
        return jnp.stack([steps[..., :h], jnp.flip(steps[..., h:], axis=0)], axis=1)
    return steps[:, None]


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def lstm_layer(x, w_ih, bias, w_hh, keep, projection=None, dtype=jnp.float32):
    """(Bi)directional LSTM, all directions in one scan: x [B, S, I] -> float32 [B, S, D·H], or
    with projection = (kernel [D·H, O], bias [O]) a Linear layer on that: `dtype` [B, S, O].

    Direction 1 (when w_ih has two) runs over the reversed sequence, and its outputs are put back
    in the forward order. w_ih [D, I, 4H]; bias [D, 4H] (input plus hidden biases); w_hh [D, H, 4H];
    keep [S, D, B, 1] in each direction's own time order: 0 holds the state at zero (padding).
    Gates (i, f, g, o); matmuls in `dtype`, state and activations in float32.

    The custom VJP saves only x and the LSTM output (not the four gates, which would be 4H per
    step, nor the cell states, a time-major copy or the projection's own copy of its input, which
    autodiff would each keep): the backward pass rebuilds the gates and the cell states, runs a
    reverse scan that carries (dh, dc), and forms the weight gradients after the loop. The
    matmuls run over all steps at once on accelerators and step by step on CPU
    (`_stepwise_products`). For BSRNN (12 layers, 16 kHz, 2 x 4 s) the saving took a training
    step's saved activations 3.1 -> 1.7 GiB.
    """
    return _lstm_layer_fwd(x, w_ih, bias, w_hh, keep, projection, dtype)[0]


def _project(out, projection, dtype):
    kernel, bias = projection
    y = jnp.einsum("bsi,io->bso", out.astype(dtype), kernel.astype(dtype))
    return y + bias.astype(dtype)


def _stepwise_products() -> bool:
    """Whether the LSTM runs its matmuls step by step (XLA:CPU) rather than over all steps at once.

    On CPU, one matmul per step over [x_t, h_(t-1)] (the forward's input projection, the backward's
    gate rebuild) and per few steps (the weight and input gradients) beat single matmuls over all
    steps: those read and write [S, D, B, 4H] arrays (211 MB for BSRNN's time path at 16 kHz,
    2 x 4 s) from memory and ran at 140-200 GFLOP/s, against ~330 for the per-step products, whose
    operands stay in cache (2-core AVX-512 CPU; that layer's forward alone 341 -> 172 ms).
    Accelerators keep the single products.
    """
    return jax.default_backend() == "cpu"


def _step_gates(x_t, h_prev, w_cat, bias, dtype):
    """One step's pre-activation gates: [x_t, h_prev] [D, B, I + H] @ w_cat [D, I + H, 4H] + bias."""
    xh = jnp.concatenate([x_t.astype(dtype), h_prev.astype(dtype)], axis=-1)
    return jnp.einsum("dbi,dig->dbg", xh, w_cat).astype(jnp.float32) + bias[:, None, :]


def _recurrence(xs, w_ih, bias, w_hh, keep, dtype):
    """The forward scan: xs [S, D, B, I] -> h float32 [S, D, B, H]."""
    dirs, batch, hidden = xs.shape[1], xs.shape[2], w_hh.shape[1]
    w = w_hh.astype(dtype)
    bias = bias.astype(jnp.float32)
    per_step = _stepwise_products()
    w_cat = jnp.concatenate([w_ih.astype(dtype), w], axis=1) if per_step else None

    def step(carry, inputs):
        h_prev, c_prev = carry
        x_t, k = inputs
        if per_step:
            pre = _step_gates(x_t, h_prev, w_cat, bias, dtype)
        else:
            rec = jnp.einsum("dbh,dhg->dbg", h_prev.astype(dtype), w).astype(jnp.float32)
            pre = x_t + rec  # x_t: this step's input gates
        c, o = _cell_update(pre, c_prev, k)
        h = o * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((dirs, batch, hidden), jnp.float32)
    inputs = xs if per_step else _input_gates(xs, w_ih, bias, dtype)
    return jax.lax.scan(step, (zeros, zeros), (inputs, keep))[1]


def _lstm_layer_fwd(x, w_ih, bias, w_hh, keep, projection, dtype):
    out = _batch_major(_recurrence(_time_major(x, w_ih.shape[0]), w_ih, bias, w_hh, keep, dtype))
    y = out if projection is None else _project(out, projection, dtype)
    return y, (x, w_ih, bias, w_hh, keep, projection, out)


def _cell_states(pre, keep):
    """The cell states c [S, D, B, H] from every step's gates pre [S, D, B, 4H]: the forward's
    c_t = (f_t c_(t-1) + i_t g_t) k_t again, as an element-wise scan (no matmul)."""

    def step(c_prev, inputs):
        gates, k = inputs
        c, _ = _cell_update(gates, c_prev, k)
        return c, c

    zeros = jnp.zeros(pre.shape[1:-1] + (pre.shape[-1] // 4,), jnp.float32)
    return jax.lax.scan(step, zeros, (pre, keep))[1]


def _gates_and_cell_states(xs, h_prev, w_xh, bias, keep, dtype, tie):
    """The forward's gates pre [S, D, B, 4H] and cell states c [S, D, B, H], rebuilt step by step
    (`_stepwise_products`): pre_t = [x_t, h_(t-1)] @ w_xh + bias, c_t = (f c_(t-1) + i g) k_t.

    The loop writes into buffers that start as `tie` (the backward's zero that depends on the
    incoming gradient): zero-filled ones have no inputs, so XLA allocated them up front for every
    LSTM of a model at once (BSRNN's step: temp memory 2.6 -> 5.4 GiB instead of 1.9).
    """
    bias = bias.astype(jnp.float32)

    def step(t, carry):
        c_prev, pre, cs = carry
        pre_t = _step_gates(xs[t], h_prev[t], w_xh, bias, dtype)
        c, _ = _cell_update(pre_t, c_prev, keep[t])
        return c, pre.at[t].set(pre_t), cs.at[t].set(c)

    shape = h_prev.shape  # [S, D, B, H]
    init = (
        jnp.zeros(shape[1:], jnp.float32),
        jnp.full(shape[:-1] + (w_xh.shape[-1],), tie),
        jnp.full(shape, tie),
    )
    return jax.lax.fori_loop(0, shape[0], step, init)[1:]


# Rows per direction (steps x batch) of each matmul in `_input_gradients_in_chunks`.
GRADIENT_CHUNK_ROWS = 512


def _input_gradients_in_chunks(xs, h_prev, d_pre, w_ih, dtype, tie):
    """(d_w_ih [D, I, 4H], d_w_hh [D, H, 4H], d_xs float32 [S, D, B, I]) from the gate gradients
    d_pre [S, D, B, 4H], ~GRADIENT_CHUNK_ROWS rows per direction at a time (`_stepwise_products`):
    the sums of the single matmuls, with operands that stay in cache. Buffers start as `tie`, as
    in `_gates_and_cell_states`."""
    steps, inputs = xs.shape[0], xs.shape[-1]
    chunk = min(max(1, GRADIENT_CHUNK_ROWS // xs.shape[2]), steps)
    whole = steps - steps % chunk
    w_ih_c = w_ih.astype(dtype)

    def grads(xs_part, h_part, d_part):
        xh = jnp.concatenate([xs_part.astype(dtype), h_part.astype(dtype)], axis=-1)
        d_part = d_part.astype(dtype)
        d_w = jnp.einsum("sdbi,sdbg->dig", xh, d_part).astype(jnp.float32)
        return d_w, jnp.einsum("sdbg,dig->sdbi", d_part, w_ih_c).astype(jnp.float32)

    def body(n, carry):
        d_w, d_xs = carry
        part = [jax.lax.dynamic_slice_in_dim(a, n * chunk, chunk) for a in (xs, h_prev, d_pre)]
        d_w_part, d_xs_part = grads(*part)
        return d_w + d_w_part, jax.lax.dynamic_update_slice_in_dim(d_xs, d_xs_part, n * chunk, 0)

    d_w = jnp.full((xs.shape[1], inputs + h_prev.shape[-1], d_pre.shape[-1]), tie)
    d_w, d_xs = jax.lax.fori_loop(0, whole // chunk, body, (d_w, jnp.full(xs.shape, tie)))
    if whole < steps:
        d_w_part, d_xs_part = grads(xs[whole:], h_prev[whole:], d_pre[whole:])
        d_w, d_xs = d_w + d_w_part, d_xs.at[whole:].set(d_xs_part)
    return d_w[:, :inputs], d_w[:, inputs:], d_xs


def _lstm_layer_bwd(dtype, residuals, d_y):
    x, w_ih, bias, w_hh, keep, projection, out = residuals
    dirs = w_ih.shape[0]
    # Make everything computed from the saved arrays depend on the incoming gradient (a zero with
    # a data dependency), so that XLA cannot schedule it in the forward pass, where it would keep
    # it alive until this backward pass: the gates, merged with the forward's projection (4H-wide
    # per step), or layout copies of x and the output for the weight gradients. (XLA:CPU drops
    # optimization barriers before scheduling, so jax.checkpoint alone does not do this.)
    tie = 0.0 * d_y[0, 0, 0].astype(jnp.float32)  # multiplication by zero is not folded (NaN, inf)
    x = x + tie.astype(x.dtype)
    out = out + tie
    d_projection = None
    if projection is None:
        d_out = d_y
    else:
        kernel, fc_bias = projection
        d_y_c = d_y.astype(dtype)
        d_out = jnp.einsum("bso,io->bsi", d_y_c, kernel.astype(dtype)).astype(jnp.float32)
        d_kernel = jnp.einsum("bsi,bso->io", out.astype(dtype), d_y_c)
        d_fc_bias = jnp.sum(d_y.astype(jnp.float32), axis=(0, 1))
        d_projection = type(projection)(  # tuple or list, as given
            (d_kernel.astype(kernel.dtype), d_fc_bias.astype(fc_bias.dtype))
        )
    xs = _time_major(x, dirs)  # [S, D, B, I]
    hs = _split_directions(out, dirs)  # [S, D, B, H]
    d_hs = _split_directions(d_out, dirs)
    h_prev = jnp.concatenate([jnp.zeros_like(hs[:1]), hs[:-1]])  # the state before each step
    w = w_hh.astype(dtype)
    w_xh = jnp.concatenate([w_ih.astype(dtype), w], axis=1)  # [D, I + H, 4H]
    if _stepwise_products():
        pre, cs = _gates_and_cell_states(xs, h_prev, w_xh, bias, keep, dtype, tie)
    else:
        # The forward's gates [S, D, B, 4H] from one matmul over [x, h_prev] (two products and
        # their sum would hold three 4H-wide arrays at once).
        xh = jnp.concatenate([xs.astype(dtype), h_prev.astype(dtype)], axis=-1)
        pre = jnp.einsum("sdbi,dig->sdbg", xh, w_xh).astype(jnp.float32)
        pre = pre + bias.astype(jnp.float32)[None, :, None, :]
        cs = _cell_states(pre, keep)
    c_prev = jnp.concatenate([jnp.zeros_like(cs[:1]), cs[:-1]])

    def step(n, carry):
        t = num_steps - 1 - n  # reverse time
        dh_next, dc_next, buf = carry  # gradients reaching step t from step t + 1; buf: see below
        i, f, g, o = _gate_activations(buf[t])
        c, c_before, k = cs[t], c_prev[t], keep[t]
        tanh_c = jnp.tanh(c)
        dh = d_hs[t] + dh_next
        dc = (dh * o * (1.0 - tanh_c**2) + dc_next) * k
        d_pre = jnp.concatenate(
            [
                dc * g * i * (1.0 - i),
                dc * c_before * f * (1.0 - f),
                dc * i * (1.0 - g**2),
                dh * tanh_c * o * (1.0 - o),
            ],
            axis=-1,
        )  # gradient of the pre-activation gates [D, B, 4H]
        dh_prev = jnp.einsum("dbg,dhg->dbh", d_pre.astype(dtype), w).astype(jnp.float32)
        return dh_prev, dc * f, buf.at[t].set(d_pre)

    # The gate gradient of step t overwrites the gates of step t in place, so the loop needs no
    # second [S, D, B, 4H] buffer (a zero-initialised one, which XLA would allocate up front).
    num_steps = hs.shape[0]
    zeros = jnp.zeros_like(hs[0])
    _, _, d_pre = jax.lax.fori_loop(0, num_steps, step, (zeros, zeros, pre))
    if _stepwise_products():
        d_w_ih, d_w_hh, d_xs = _input_gradients_in_chunks(xs, h_prev, d_pre, w_ih, dtype, tie)
    else:
        d_pre_c = d_pre.astype(dtype)
        d_w_hh = jnp.einsum("sdbh,sdbg->dhg", h_prev.astype(dtype), d_pre_c)
        d_w_ih = jnp.einsum("sdbi,sdbg->dig", xs.astype(dtype), d_pre_c)
        d_xs = jnp.einsum("sdbg,dig->sdbi", d_pre_c, w_ih.astype(dtype)).astype(jnp.float32)
    d_x = d_xs[:, 0] + jnp.flip(d_xs[:, 1], axis=0) if dirs == 2 else d_xs[:, 0]  # [S, B, I]
    return (
        jnp.swapaxes(d_x, 0, 1).astype(x.dtype),
        d_w_ih.astype(w_ih.dtype),
        jnp.sum(d_pre, axis=(0, 2)).astype(bias.dtype),
        d_w_hh.astype(w_hh.dtype),
        jnp.zeros_like(keep),
        d_projection,
    )


lstm_layer.defvjp(_lstm_layer_fwd, _lstm_layer_bwd)


class LSTM(nn.Module):
    """Single-layer (bi)directional LSTM over [B, S, I] in PyTorch's parameterisation.

    Parameters, stacked over directions d (forward, backward): kernel_ih[d] = weight_ih.T [I, 4H],
    kernel_hh[d] = weight_hh.T [H, 4H], bias_ih[d] and bias_hh[d] [4H]; gates ordered (i, f, g, o).
    Both directions share one scan (`lstm_layer`). With seq_lengths the backward direction
    starts at each item's last valid step (packed-sequence semantics: its state is held at zero
    over the padding), so padding never reaches valid outputs; outputs at padded steps are zero in
    that direction.
    """

    hidden: int  # H, units per direction
    is_bidirectional: bool = True
    dtype: Dtype = jnp.float32  # matmul dtype; cell state and gate activations stay float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, seq_lengths=None, projection=None):
        """x [B, S, I], seq_lengths [B] -> [B, S, D·H]; with projection = (kernel, bias) of a
        Linear layer (`LinearParams`) applied to the output: [B, S, O] (`lstm_layer`)."""
        dirs = 2 if self.is_bidirectional else 1
        h, in_features = self.hidden, x.shape[-1]
        k_ih, k_hh, b_ih, b_hh = torch_uniform_params(
            self,
            [
                ("kernel_ih", (dirs, in_features, 4 * h), h, (None, "embed", "mlp")),
                ("kernel_hh", (dirs, h, 4 * h), h, (None, None, "mlp")),
                ("bias_ih", (dirs, 4 * h), h, (None, "mlp")),
                ("bias_hh", (dirs, 4 * h), h, (None, "mlp")),
            ],
            self.param_dtype,
        )
        # Backward direction with seq_lengths: the state stays zero over the (reversed) padding, so
        # each item's scan effectively starts at its last valid step.
        if dirs == 2 and seq_lengths is not None:
            valid = jnp.arange(x.shape[1])[:, None] < seq_lengths[None, :]  # [S, B]
            keep = jnp.stack([jnp.ones_like(valid), jnp.flip(valid, axis=0)], axis=1)
        else:
            keep = jnp.ones((x.shape[1], dirs, x.shape[0]), bool)
        keep = keep[..., None].astype(jnp.float32)  # [S, D, B, 1]
        bias = b_ih.astype(jnp.float32) + b_hh.astype(jnp.float32)
        dtype = jnp.dtype(self.dtype)
        return lstm_layer(x.astype(dtype), k_ih, bias, k_hh, keep, projection, dtype).astype(dtype)


class DualPathBlock(nn.Module):
    """One BSRNN layer (REFERENCE.md §3.2): a residual RNN over time, then one over bands.

    Each path: norm → (B)LSTM with 2N hidden units per direction → Linear(D·2N → N) → residual add.
    `time_emb` [B, N] (FlowSE) is added after the time-path norm, broadcast over T and K.
    """

    num_channels: int  # N
    is_causal: bool = False  # unidirectional time LSTM
    norm_type: str = "GN"  # "GN" | "cLN" | "cfLN"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z, frame_counts, time_emb=None):  # z [B, T, K, N] float32 -> same
        batch, frames, bands, n = z.shape
        hidden = 2 * n  # LSTM units per direction
        frame_mask = jnp.arange(frames)[None, :] < frame_counts[:, None]  # [B, T]
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        pkw = {"param_dtype": self.param_dtype}  # the fc layers run inside their LSTM's VJP

        out = DualPathNorm(self.norm_type, name="time_norm", **kw)(z, frame_mask)
        if time_emb is not None:
            out = out + time_emb[:, None, None, :].astype(out.dtype)
        out = out.transpose(0, 2, 1, 3).reshape(batch * bands, frames, n)  # [B·K, T, N]
        lengths = jnp.repeat(frame_counts, bands)
        fc = LinearParams(n, 2 * hidden if not self.is_causal else hidden, name="time_fc", **pkw)
        out = LSTM(hidden, not self.is_causal, name="time_rnn", **kw)(out, lengths, fc())
        out = out.reshape(batch, bands, frames, n).transpose(0, 2, 1, 3)  # [B, T, K, N]
        z = z + out.astype(z.dtype)

        out = DualPathNorm(self.norm_type, name="band_norm", **kw)(z, frame_mask)
        out = out.reshape(batch * frames, bands, n)  # [B·T, K, N]
        fc = LinearParams(n, 2 * hidden, name="band_fc", **pkw)
        out = LSTM(hidden, True, name="band_rnn", **kw)(out, None, fc())
        return z + out.reshape(batch, frames, bands, n).astype(z.dtype)


# --- band split ------------------------------------------------------------------------------


def split_bands(spec_ri, band_widths: Sequence[int]) -> list:
    """[B, T, F, 2] -> one [B, T, c, 2w] array per run of equal-width bands covering F.

    Bands are consumed until F is covered; a partly covered band is zero-padded. Features are
    ordered (bin, re/im) as the reference flattens a band.
    """
    batch, frames, bins, _ = spec_ri.shape
    widths = band_widths[: num_bands(band_widths, bins)]
    x = jnp.pad(spec_ri, ((0, 0), (0, 0), (0, sum(widths) - bins), (0, 0)))
    return [
        x[:, :, f0 : f0 + count * width].reshape(batch, frames, count, 2 * width)
        for _, count, width, f0 in band_runs(widths)
    ]


class BandSplit(nn.Module):
    """Band-split encoder: per band, (re, im) of its w bins → norm1d(2w) → 1x1 conv to N."""

    band_widths: tuple[int, ...]  # bins per band, whole layout
    num_channels: int  # N
    norm_type: str = "GN"  # "GN" | "cLN"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, spec_ri, frame_mask):  # [B, T, F, 2], [B, T] -> z [B, T, K, N] float32
        features = tuple(2 * w for w in self.band_widths)
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        parts = split_bands(spec_ri, self.band_widths)
        parts = BandNorm(features, self.norm_type, name="norm", **kw)(parts, frame_mask)
        n_out = (self.num_channels,) * len(features)
        parts = BandDense(features, n_out, ("channel", "embed"), name="fc", **kw)(parts)
        return jnp.concatenate(parts, axis=2).astype(jnp.float32)  # [B, T, K, N]


def glu(x):
    """Gated linear unit over the last axis: first half · sigmoid(second half)."""
    a, b = jnp.split(x, 2, axis=-1)
    return a * jax.nn.sigmoid(b)
