"""3x3 convolutions over (time, frequency) for the metric networks (DNSMOS, Distill-MOS).

`conv3x3` runs a channels-last [N, T, F, C] input through a 3x3 kernel [3, 3, C, O] (HWIO, H = time)
either directly (XLA's convolution) or with Winograd's minimal filtering F(4, 3) along time (Lavin
and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): each group of 4 output frames
comes from 6 input frames through 6 convolutions with 1 x 3 (frequency-only) kernels, the
transforms of the three time taps, instead of 4 x 3 = 12 time-tap convolutions: half the
multiply-adds, for a few element-wise sums before and after. Interpolation points 0, +-1, +-2 and
infinity; the input and output transforms have small integer coefficients (exact in float32 for
inputs of similar size), the kernel transform has 1/4, 1/6, 1/12, 1/24. Results agree with the
direct convolution to ~3e-6 of the output's scale (float32).

Whether it pays depends on the shape; measured on 2 CPU cores (ms, direct -> F(4, 3), 450 frames):
64 -> 64 channels over 161 bins 36 -> 25, 64 -> 32 21 -> 16; Distill-MOS's frequency-stride-2
layers (410 frames) 17 -> 13, 15 -> 10, 28 -> 17 (128 -> 256), 25 -> 16 (256 -> 256); but
128 -> 64 over 161 bins 69 -> 75 and 32-channel layers over <= 60 bins about even. So callers
choose per layer (`winograd=`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# F(4, 3): Y = A^T [(G g) * (B^T d)] for 6 input frames d, 3 taps g, 4 outputs Y.
_BT = np.array(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ]
)
_G = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ]
)
_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]])
WINOGRAD_TILE = 4  # output frames per group


def _combine(coefficients, arrays):
    """sum_i c_i a_i over the non-zero integer coefficients (no multiply for +-1)."""
    total = None
    for c, a in zip(coefficients, arrays):
        if c == 0:
            continue
        term = a if c == 1 else -a if c == -1 else a * np.float32(c)
        total = term if total is None else total + term
    return total


def conv3x3(
    x: jax.Array,
    w: jax.Array,
    *,
    time_pad: tuple[int, int] = (1, 1),
    freq_pad: tuple[int, int] = (1, 1),
    strides: tuple[int, int] = (1, 1),
    precision=None,
    winograd: bool = False,
) -> jax.Array:
    """x [N, T, F, C], w [3, 3, C, O] -> [N, T', F', O] (no bias), zero padding `time_pad` and
    `freq_pad` (before, after), `strides` (time, frequency). winograd=True uses F(4, 3) along time
    (module doc); it needs time stride 1 and is the same convolution up to float rounding."""
    dims = ("NHWC", "HWIO", "NHWC")
    if not winograd:
        padding = (tuple(time_pad), tuple(freq_pad))
        return lax.conv_general_dilated(
            x, w, strides, padding, dimension_numbers=dims, precision=precision
        )
    if strides[0] != 1:
        raise ValueError(f"Winograd F(4, 3) along time needs time stride 1, got {strides}")
    n, t = x.shape[:2]
    out_frames = t + time_pad[0] + time_pad[1] - 2
    groups = -(-out_frames // WINOGRAD_TILE)
    span = WINOGRAD_TILE * groups + 2  # input frames the groups read
    xp = jnp.pad(x, ((0, 0), (time_pad[0], span - t - time_pad[0]), (0, 0), (0, 0)))
    frames = [xp[:, j : j + WINOGRAD_TILE * groups : WINOGRAD_TILE] for j in range(6)]
    taps = jnp.einsum("ai,ifco->afco", jnp.asarray(_G, w.dtype), w, precision="highest")
    products = [
        lax.conv_general_dilated(
            _combine(_BT[a], frames),
            taps[a][None],  # [1, 3, C, O]
            (1, strides[1]),
            ((0, 0), tuple(freq_pad)),
            dimension_numbers=dims,
            precision=precision,
        )
        for a in range(6)
    ]  # each [N, groups, F', O]
    y = jnp.stack([_combine(_AT[r], products) for r in range(WINOGRAD_TILE)], axis=2)
    return y.reshape(n, WINOGRAD_TILE * groups, *y.shape[3:])[:, :out_frames]
