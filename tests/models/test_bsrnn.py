"""BSRNN: parameter count, shapes at every rate, jit, gradients, padding invariance, causal variant.

Parity with ESPnet's BSRNNSeparator is in test_convert.py. Jit-heavy tests use one tiny layer and
few rates; every rate is covered by shape-only evaluation (jax.eval_shape).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from urgent_jax import models
from urgent_jax.models.bsrnn import BSRNN
from urgent_jax.models.frontend import SAMPLE_RATES
from urgent_jax.models.summary import count, variable_shapes

ONE_LAYER = {"num_channels": 16, "num_layers": 1}


def init(model, fs):
    return models.init_variables(model, jax.random.key(0), fs)


@pytest.fixture(scope="module")
def one_layer_variables():
    """Variables of BSRNN(**ONE_LAYER), with or without remat (same tree at every rate)."""
    return init(BSRNN(**ONE_LAYER), 8000)


def apply_fn(model, fs):
    return jax.jit(lambda v, x, lengths: model.apply(v, x, lengths, sample_rate=fs))


def test_baseline_parameter_count():
    n = count(variable_shapes(models.build("bsrnn")))
    assert n == 37_800_844  # ESPnet BSRNNSeparator(num_channels=196, num_layers=6)
    assert abs(n - 37.8e6) / 37.8e6 < 0.01


@pytest.mark.parametrize("name", ["bsrnn", "bsrnn_causal"])
def test_shapes_at_all_rates(name):
    model = models.build(name, **models.TINY[name])
    trees = []
    for fs in SAMPLE_RATES if name == "bsrnn" else (8000, 44100):
        n = fs // 10 + 3
        noisy = jax.ShapeDtypeStruct((2, n), jnp.float32)
        lengths = jax.ShapeDtypeStruct((2,), jnp.int32)
        variables = jax.eval_shape(lambda k, fs=fs: init(model, fs), jax.random.key(0))
        out = jax.eval_shape(
            lambda v, x, le, fs=fs: model.apply(v, x, le, sample_rate=fs), variables, noisy, lengths
        )
        assert out.shape == (2, n) and out.dtype == jnp.float32
        trees.append(jax.tree_util.tree_structure(variables))
    assert all(t == trees[0] for t in trees)  # one parameter tree for every rate


def test_bfloat16_compute_keeps_float32_io():
    model = BSRNN(**ONE_LAYER, dtype=jnp.bfloat16)
    variables = jax.eval_shape(lambda k: init(model, 16000), jax.random.key(0))
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(nn.unbox(variables)))
    out = jax.eval_shape(
        lambda v, x: model.apply(v, x, None, sample_rate=16000),
        variables,
        jax.ShapeDtypeStruct((1, 1600), jnp.float32),
    )
    assert out.dtype == jnp.float32


def test_remat_keeps_parameter_tree():
    trees = [
        jax.tree_util.tree_map(lambda a: a.shape, variable_shapes(BSRNN(**ONE_LAYER, use_remat=r)))
        for r in (False, True)
    ]
    assert trees[0] == trees[1]


def test_jit_apply_and_padding_invariance(one_layer_variables, rng):
    fs = 16000
    model = BSRNN(**ONE_LAYER)
    n, short = fs // 10, fs // 10 - fs // 30
    x = rng.standard_normal((2, n)).astype(np.float32)
    run = apply_fn(model, fs)
    out = np.asarray(run(one_layer_variables, x, jnp.array([n, short])))
    assert out.shape == (2, n) and np.all(np.isfinite(out))
    assert np.all(out[1, short:] == 0)
    # the padded item (with garbage in its padding) comes out as it does alone
    alone = np.asarray(run(one_layer_variables, x[1:, :short], jnp.array([short])))
    np.testing.assert_allclose(out[1, :short], alone[0], atol=1e-5 * np.abs(alone).max())
    # traced lengths cannot be checked: beyond T they are clipped to T (same compiled program)
    clipped = np.asarray(run(one_layer_variables, x, jnp.array([n + 700, short])))
    np.testing.assert_array_equal(clipped, out)


def test_inputs_are_checked(one_layer_variables):
    model = BSRNN(**ONE_LAYER)
    x = np.zeros((2, 800), np.float32)

    def shapes(x, lengths, fs):  # tracing is enough to reach the checks
        return jax.eval_shape(
            lambda v: model.apply(v, x, lengths, sample_rate=fs), one_layer_variables
        )

    with pytest.raises(ValueError, match=r"expected noisy waveforms as \[batch, time\].*\(800,\)"):
        shapes(x[0], None, 8000)
    with pytest.raises(ValueError, match=r"lengths must be \[batch\] = \(2,\)"):
        shapes(x, np.array([800]), 8000)
    with pytest.raises(ValueError, match="unsupported sampling rate 96000 Hz"):
        shapes(x, None, 96000)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 800\]"):
        model.apply(one_layer_variables, x, np.array([0, 800]), sample_rate=8000)


def test_gradients_finite_with_remat(one_layer_variables, rng):
    fs, n = 8000, 800
    x = jnp.asarray(rng.standard_normal((2, n)), jnp.float32)
    lengths = jnp.array([n, n - 300])
    model = BSRNN(**ONE_LAYER, use_remat=True)  # FlowSE's test covers the path without remat

    def loss(params):
        return jnp.mean(jnp.square(model.apply({"params": params}, x, lengths, sample_rate=fs)))

    grads = jax.jit(jax.grad(loss))(one_layer_variables["params"])
    leaves = jax.tree_util.tree_leaves(nn.unbox(grads))
    assert all(np.all(np.isfinite(g)) for g in leaves)
    rnn = grads["layers_0"]["time_rnn"]
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree_util.tree_leaves(nn.unbox(rnn)))


@pytest.fixture(scope="module")
def causal_variables():
    return init(models.build("bsrnn_causal", **ONE_LAYER), 8000)


def test_causal_variant_ignores_the_future(causal_variables, rng):
    fs, n, cut = 8000, 1600, 1000
    model = models.build("bsrnn_causal", **ONE_LAYER)
    variables = causal_variables
    x = rng.standard_normal((1, n)).astype(np.float32)
    changed = x.copy()
    changed[:, cut:] = rng.standard_normal(n - cut)
    run = apply_fn(model, fs)
    a = np.asarray(run(variables, x, jnp.array([n])))
    b = np.asarray(run(variables, changed, jnp.array([n])))
    n_fft = 160  # 20 ms at 8 kHz: an output sample depends on inputs up to one window ahead
    np.testing.assert_allclose(a[:, : cut - n_fft], b[:, : cut - n_fft], atol=1e-6)
    assert not np.allclose(a[:, cut:], b[:, cut:])


def test_causal_variant_at_48khz_keeps_length_and_ignores_padding(causal_variables, rng):
    """A real (not shape-only) apply at the top rate, where every band is in use."""
    fs, n, short = 48000, 2417, 1500  # 5 frames, not a whole number of hops
    model = models.build("bsrnn_causal", **ONE_LAYER)
    run = apply_fn(model, fs)
    x = rng.standard_normal((2, n)).astype(np.float32)
    lengths = jnp.array([n, short])
    out = np.asarray(run(causal_variables, x, lengths))
    assert out.shape == (2, n) and np.all(np.isfinite(out)) and np.std(out[1, :short]) > 0
    assert np.all(out[1, short:] == 0)
    x[1, short:] = 5.0 * rng.standard_normal(n - short)  # other padding content, same program
    again = np.asarray(run(causal_variables, x, lengths))
    np.testing.assert_allclose(again, out, atol=1e-6 * np.abs(out).max())
