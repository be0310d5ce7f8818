"""3x3 convolutions over (time, frequency) for the metric networks (DNSMOS, Distill-MOS).

`conv3x3` runs a channels-last [N, T, F, C] input through a 3x3 kernel [3, 3, C, O] (HWIO, H = time)
either directly (XLA's convolution) or with Winograd's minimal filtering F(m, 3) along time (Lavin
and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): each group of m output frames
comes from m + 2 input frames through m + 2 convolutions with 1 x 3 (frequency-only) kernels, the
transforms of the three time taps, instead of 3 m time-tap convolutions, for a few element-wise
sums before and after. m = 4 (points 0, +-1, +-2, infinity; integer input and output transforms)
halves the multiply-adds; m = 6 (also +-1/2; transform coefficients up to 21/4 and 32) needs 4/9
of them and fewer transformed frames. Both agree with the direct convolution to ~3e-6 of the
output's scale in float32 (F(6, 3) rounds ~20% more).

Whether it pays depends on the shape; measured on 2 CPU cores (ms, direct -> F(4, 3), 450 frames):
64 -> 64 channels over 161 bins 36 -> 25, 64 -> 32 21 -> 16; Distill-MOS's frequency-stride-2
layers (410 frames) 17 -> 13, 15 -> 10, 28 -> 17 (128 -> 256), 25 -> 16 (256 -> 256); but
128 -> 64 over 161 bins 69 -> 75 and 32-channel layers over <= 60 bins about even. F(6, 3) took
another 3-8% off Distill-MOS's four layers (414 frames: 14.4 -> 13.3, 11.0 -> 10.4, 18.2 -> 16.9,
17.9 -> 17.3) and, in the whole networks, was as fast or faster than F(4, 3) on 4 s, 3-6 s and
10 s clips, and made DNSMOS's 128 -> 64 layer pay too (the whole network ~10% faster per clip).
Alone, a layer over many frames (DNSMOS's shared layers over 1500 frames, Distill-MOS's 64-channel
layer over a full 768-frame crop) ran faster direct than with either transform, but inside the
networks switching those to direct made them slower. So callers choose per layer (`winograd=`),
by measurement in context.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# F(m, 3): Y = A^T [(G g) * (B^T d)] for m + 2 input frames d, 3 taps g, m outputs Y (Toom-Cook
# with the points below and infinity; B^T solved exactly from A^T and G).
_F4 = (  # points 0, 1, -1, 2, -2
    np.array(
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ]
    ),
    np.array(
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ]
    ),
    np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
)
_F6 = (  # points 0, 1, -1, 2, -2, 1/2, -1/2
    np.array(
        [
            [-1, 0, 21 / 4, 0, -21 / 4, 0, 1, 0],
            [0, 1, 1, -17 / 4, -17 / 4, 1, 1, 0],
            [0, -1, 1, 17 / 4, -17 / 4, -1, 1, 0],
            [0, 1 / 2, 1 / 4, -5 / 2, -5 / 4, 2, 1, 0],
            [0, -1 / 2, 1 / 4, 5 / 2, -5 / 4, -2, 1, 0],
            [0, 2, 4, -5 / 2, -5, 1 / 2, 1, 0],
            [0, -2, 4, 5 / 2, -5, -1 / 2, 1, 0],
            [0, -1, 0, 21 / 4, 0, -21 / 4, 0, 1],
        ]
    ),
    np.array(
        [
            [-1, 0, 0],
            [-2 / 9, -2 / 9, -2 / 9],
            [-2 / 9, 2 / 9, -2 / 9],
            [1 / 90, 1 / 45, 2 / 45],
            [1 / 90, -1 / 45, 2 / 45],
            [32 / 45, 16 / 45, 8 / 45],
            [32 / 45, -16 / 45, 8 / 45],
            [0, 0, 1],
        ]
    ),
    np.array(
        [
            [1, 1, 1, 1, 1, 1, 1, 0],
            [0, 1, -1, 2, -2, 1 / 2, -1 / 2, 0],
            [0, 1, 1, 4, 4, 1 / 4, 1 / 4, 0],
            [0, 1, -1, 8, -8, 1 / 8, -1 / 8, 0],
            [0, 1, 1, 16, 16, 1 / 16, 1 / 16, 0],
            [0, 1, -1, 32, -32, 1 / 32, -1 / 32, 1],
        ]
    ),
)
WINOGRAD_TRANSFORMS = {4: _F4, 6: _F6}  # output frames per group (m) -> (B^T, G, A^T)

def _combine(coefficients, arrays):
    """sum_i c_i a_i over the non-zero integer coefficients (no multiply for +-1)."""
    total = None
    for c, a in zip(coefficients, arrays):
        if c == 0:
            continue
        term = a if c == 1 else -a if c == -1 else a * np.float32(c)
        total = term if total is None else total + term
    return total


# Input channels up to which a stride-1 convolution runs as broadcast multiply-adds. A library
# convolution with so few channels is a matrix product with rows of 9 C; the multiply-adds fuse
# with what follows (bias, activation, pooling). Per call on 2 cores: DNSMOS's 1 -> 128 and
# P.808's 1 -> 32 first layers 40 -> 30 and 5.4 -> 1.8 ms per segment (AVX2 VM), Distill-MOS's
# 2 -> 64 first layer over 412 frames 4.6 -> 1.0 ms (AVX-512 VM).
BROADCAST_MAX_CHANNELS = 2


def _broadcast_conv(x, w, time_pad, freq_pad):
    """conv3x3 with stride 1 as 9 C broadcast multiply-adds (see BROADCAST_MAX_CHANNELS)."""
    xp = jnp.pad(x, ((0, 0), tuple(time_pad), tuple(freq_pad), (0, 0)))
    t, f = xp.shape[1] - 2, xp.shape[2] - 2
    taps = [
        xp[:, i : i + t, j : j + f, c : c + 1] * w[i, j, c]
        for i in range(3)
        for j in range(3)
        for c in range(x.shape[-1])
    ]
    total = taps[0]
    for tap in taps[1:]:
        total = total + tap
    return total


def conv3x3(
    x: jax.Array,
    w: jax.Array,
    *,
    time_pad: tuple[int, int] = (1, 1),
    freq_pad: tuple[int, int] = (1, 1),
    strides: tuple[int, int] = (1, 1),
    precision=None,
    winograd: int = 0,
) -> jax.Array:
    """x [N, T, F, C], w [3, 3, C, O] -> [N, T', F', O] (no bias), zero padding `time_pad` and
    `freq_pad` (before, after), `strides` (time, frequency). winograd = m in WINOGRAD_TRANSFORMS
    uses F(m, 3) along time (module doc; True means 4); it needs time stride 1 and is the same
    convolution up to float rounding. 0 (or False) is XLA's direct convolution, or broadcast
    multiply-adds for stride 1 and at most BROADCAST_MAX_CHANNELS input channels."""
    dims = ("NHWC", "HWIO", "NHWC")
    if x.shape[-1] <= BROADCAST_MAX_CHANNELS and tuple(strides) == (1, 1) and not winograd:
        return _broadcast_conv(x, w, time_pad, freq_pad)
    if not winograd:
        padding = (tuple(time_pad), tuple(freq_pad))
        return lax.conv_general_dilated(
            x, w, strides, padding, dimension_numbers=dims, precision=precision
        )
    tile = 4 if winograd is True else int(winograd)
    if tile not in WINOGRAD_TRANSFORMS:
        raise ValueError(f"Winograd tile must be one of {sorted(WINOGRAD_TRANSFORMS)}, got {tile}")
    if strides[0] != 1:
        raise ValueError(f"Winograd F({tile}, 3) along time needs time stride 1, got {strides}")
    bt, g, at = WINOGRAD_TRANSFORMS[tile]
    n, t = x.shape[:2]
    out_frames = t + time_pad[0] + time_pad[1] - 2
    groups = -(-out_frames // tile)
    span = tile * groups + 2  # input frames the groups read
    xp = jnp.pad(x, ((0, 0), (time_pad[0], span - t - time_pad[0]), (0, 0), (0, 0)))
    frames = [xp[:, j : j + tile * groups : tile] for j in range(tile + 2)]
    taps = jnp.einsum("ai,ifco->afco", jnp.asarray(g, w.dtype), w, precision="highest")
    products = [
        lax.conv_general_dilated(
            _combine(bt[a], frames),
            taps[a][None],  # [1, 3, C, O]
            (1, strides[1]),
            ((0, 0), tuple(freq_pad)),
            dimension_numbers=dims,
            precision=precision,
        )
        for a in range(tile + 2)
    ]  # each [N, groups, F', O]
    y = jnp.stack([_combine(at[r], products) for r in range(tile)], axis=2)
    return y.reshape(n, tile * groups, *y.shape[3:])[:, :out_frames]
