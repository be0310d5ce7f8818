"""conv3x3 (direct and Winograd F(4, 3) / F(6, 3) along time) against a numpy convolution, and
Distill-MOS's Conv3x3 module against flax's nn.Conv with the same parameters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from urgent_jax.metrics.conv import conv3x3
from urgent_jax.metrics.distillmos import Conv3x3


def numpy_conv(x, w, time_pad, freq_pad, strides):
    """Cross-correlation in float64, zero padding, channels-last, HWIO kernel."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), time_pad, freq_pad, (0, 0)))
    w = np.asarray(w, np.float64)
    st, sf = strides
    t_out = (x.shape[1] - 3) // st + 1
    f_out = (x.shape[2] - 3) // sf + 1
    y = np.zeros((x.shape[0], t_out, f_out, w.shape[-1]))
    for i in range(3):
        for j in range(3):
            patch = x[:, i : i + st * (t_out - 1) + 1 : st, j : j + sf * (f_out - 1) + 1 : sf]
            y += np.einsum("ntfc,co->ntfo", patch, w[i, j])
    return y


SHAPES = [
    (frames, time_pad)
    for frames in (1, 3, 4, 5, 17, 64)
    for time_pad in ((1, 1), (1, 0), (0, 1))
    if frames + sum(time_pad) >= 3  # at least one output frame
]


@pytest.mark.parametrize(("frames", "time_pad"), SHAPES)
@pytest.mark.parametrize("freq", [((1, 1), 1), ((0, 0), 2), ((0, 0), 1)])
@pytest.mark.parametrize("channels", [8, 2, 1])
def test_winograd_and_direct_match_numpy(frames, time_pad, freq, channels):
    """channels <= BROADCAST_MAX_CHANNELS with frequency stride 1: the direct convolution is the
    broadcast multiply-add path."""
    freq_pad, freq_stride = freq
    rng = np.random.default_rng(frames)
    x = rng.standard_normal((2, frames, 13, channels)).astype(np.float32)
    w = rng.standard_normal((3, 3, channels, 5)).astype(np.float32)
    expected = numpy_conv(x, w, time_pad, freq_pad, (1, freq_stride))
    scale = np.abs(expected).max()
    for winograd in (0, 4, 6):
        run = jax.jit(
            lambda x, w, winograd=winograd: conv3x3(
                x,
                w,
                time_pad=time_pad,
                freq_pad=freq_pad,
                strides=(1, freq_stride),
                precision="highest",
                winograd=winograd,
            )
        )
        ours = np.asarray(run(x, w))
        assert ours.shape == expected.shape
        # Winograd rounds a little more than the direct sum (transform coefficients up to 32)
        np.testing.assert_allclose(
            ours, expected, rtol=0, atol=(2e-5 if winograd else 2e-6) * scale
        )


def test_winograd_needs_time_stride_one_and_a_known_tile():
    x = jnp.zeros((1, 8, 9, 4))
    w = jnp.zeros((3, 3, 4, 4))
    with pytest.raises(ValueError, match="time stride 1"):
        conv3x3(x, w, strides=(2, 1), winograd=True)
    with pytest.raises(ValueError, match="tile must be one of"):
        conv3x3(x, w, winograd=5)


@pytest.mark.parametrize(
    ("winograd", "strides"), [(0, (1, 2)), (4, (1, 2)), (6, (1, 2)), (0, (2, 2))]
)
def test_module_equals_flax_conv(winograd, strides):
    """Same parameter tree as nn.Conv (so Distill-MOS checkpoints load unchanged), same output."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 21, 17, 6)).astype(np.float32))
    reference = nn.Conv(7, (3, 3), strides=strides, padding=((1, 1), (0, 0)), precision="highest")
    params = reference.init(jax.random.key(0), x)
    params = jax.tree.map(lambda p: p + 0.1, params)  # non-zero bias
    ours = Conv3x3(7, strides, "highest", winograd=winograd)
    assert jax.tree.structure(ours.init(jax.random.key(0), x)) == jax.tree.structure(params)
    expected = np.asarray(reference.apply(params, x))
    np.testing.assert_allclose(np.asarray(ours.apply(params, x)), expected, rtol=0, atol=2e-5)
