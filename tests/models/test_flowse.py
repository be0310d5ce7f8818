"""FlowSE: parameter count, flow-matching loss and gradients, Euler sampler, time and noise draws.

Parity of the vector field with a PyTorch reference is in test_convert.py.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from urgent_jax import models
from urgent_jax.losses.flow import flow_matching_loss
from urgent_jax.models import flowse
from urgent_jax.models.flowse import FlowSE
from urgent_jax.models.frontend import SAMPLE_RATES
from urgent_jax.models.summary import count, variable_shapes

ONE_LAYER = {"num_channels": 16, "num_layers": 1}


@pytest.fixture(scope="module")
def model_and_variables():
    model = FlowSE(**ONE_LAYER)
    return model, models.init_variables(model, jax.random.key(0), 8000)


def test_parameter_count():
    variables = variable_shapes(models.build("flowse"))
    assert count(variables["constants"]) == 6 * 192  # fixed Fourier weights, not trained
    total = count(variables)
    assert total == 103_245_488  # the reference-structured PyTorch module has the same count
    assert abs(total - 103.2e6) / 103.2e6 < 0.01


def test_time_and_noise_distributions():
    t = np.asarray(flowse.sample_time(jax.random.key(0), 200_000))
    assert t.min() > 0.03 and t.max() <= 1.0
    assert abs(t.mean() - 0.515) < 0.003  # uniform on (0.03, 1]
    z = np.asarray(flowse.complex_normal(jax.random.key(1), (400, 500)))
    assert abs(z.real.var() - 0.5) < 0.01 and abs(z.imag.var() - 0.5) < 0.01
    times, steps = map(np.asarray, flowse.sampler_steps(15))
    np.testing.assert_allclose(times[[0, -1]], [1.0, 0.03], rtol=1e-6)
    np.testing.assert_allclose(steps[-1], 0.03, rtol=1e-6)
    np.testing.assert_allclose(np.sum(steps), 1.0, rtol=1e-6)


def test_loss_finite_with_finite_gradients(model_and_variables, rng):
    model, variables = model_and_variables
    fs, n = 8000, 1200
    clean = jnp.asarray(rng.standard_normal((2, n)) * 0.1, jnp.float32)
    noisy = clean + jnp.asarray(rng.standard_normal((2, n)) * 0.05, jnp.float32)
    lengths = jnp.array([n, 900])

    def loss(params):
        full = {"params": params, "constants": variables["constants"]}
        return flow_matching_loss(model, full, clean, noisy, lengths, fs, jax.random.key(3))

    value, grads = jax.jit(jax.value_and_grad(loss))(variables["params"])
    assert np.isfinite(value) and value > 0
    leaves = jax.tree_util.tree_leaves(nn.unbox(grads))
    assert all(np.all(np.isfinite(g)) for g in leaves)
    rnn = nn.unbox(grads["layers_0"]["time_rnn"])
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree_util.tree_leaves(rnn))
    assert "constants" not in grads and "time_embeddings_0" not in grads


def test_vector_field_padding_invariance(model_and_variables, rng):
    """Whatever fills an item's padded frames, its valid frames get the same vector field."""
    model, variables = model_and_variables
    frames, short, bins = 12, 7, model.frontend.num_bins(8000)

    def spec(*shape):
        return jnp.asarray(
            rng.standard_normal(shape) + 1j * rng.standard_normal(shape), jnp.complex64
        )

    x_t, y = spec(2, frames, bins), spec(2, frames, bins)
    t, counts = jnp.array([0.4, 0.8]), jnp.array([frames, short])
    field = jax.jit(model.apply)
    a = field(variables, x_t, y, t, counts)
    garbage = spec(2, frames - short, bins)
    b = field(
        variables, x_t.at[1, short:].set(garbage[0]), y.at[1, short:].set(garbage[1]), t, counts
    )
    np.testing.assert_allclose(b[:, :short], a[:, :short], atol=1e-5 * float(jnp.abs(a).max()))
    np.testing.assert_allclose(b[0], a[0], atol=1e-5 * float(jnp.abs(a).max()))


def test_init_loss_and_sampler_shapes_at_all_rates(model_and_variables):
    model, variables = model_and_variables
    trees = []
    for fs in SAMPLE_RATES:
        n = fs // 10 + 3  # not a whole number of hops
        wave = jax.ShapeDtypeStruct((2, n), jnp.float32)
        lengths = jax.ShapeDtypeStruct((2,), jnp.int32)
        init = jax.eval_shape(
            lambda k, fs=fs: models.init_variables(model, k, fs), jax.random.key(0)
        )
        trees.append(jax.tree_util.tree_structure(init))
        out = jax.eval_shape(
            lambda v, x, le, fs=fs: flowse.enhance(model, v, x, le, fs, jax.random.key(0), 3),
            variables,
            wave,
            lengths,
        )
        assert out.shape == (2, n) and out.dtype == jnp.float32, fs
        loss = jax.eval_shape(
            lambda v, x, le, fs=fs: flow_matching_loss(model, v, x, x, le, fs, jax.random.key(0)),
            variables,
            wave,
            lengths,
        )
        assert loss.shape == () and loss.dtype == jnp.float32, fs
    assert all(t == trees[0] for t in trees)  # one parameter tree for every rate


def test_sampler_is_deterministic_per_key(model_and_variables, rng):
    model, variables = model_and_variables
    fs, n = 8000, 1000
    noisy = jnp.asarray(rng.standard_normal((2, n)) * 0.1, jnp.float32)
    lengths = jnp.array([n, 700])

    def run(seed):
        return np.asarray(
            flowse.enhance(model, variables, noisy, lengths, fs, jax.random.key(seed), 2)
        )

    a, b, c = run(5), run(5), run(6)
    assert a.shape == (2, n) and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.all(a[1, 700:] == 0)


def test_sampler_checks_its_arguments(model_and_variables):
    model, variables = model_and_variables
    noisy = jnp.zeros((2, 800), jnp.float32)
    for steps in (0, -1):
        with pytest.raises(ValueError, match="num_steps must be a positive int"):
            flowse.enhance(model, variables, noisy, None, 8000, jax.random.key(0), steps)
    with pytest.raises(ValueError, match=r"expected noisy waveforms as \[batch, time\]"):
        flowse.enhance(model, variables, noisy[0], None, 8000, jax.random.key(0), 1)
    with pytest.raises(ValueError, match="unsupported sampling rate 96000 Hz"):
        flowse.enhance(model, variables, noisy, None, 96000, jax.random.key(0), 1)


def test_sampler_at_48khz_keeps_length_and_ignores_padding(model_and_variables, rng):
    """A real (not shape-only) 48 kHz run, where all 48 bands are in use."""
    model, variables = model_and_variables
    fs, n, short = 48000, 2017, 1300  # 6 frames, not a whole number of hops
    noisy = rng.standard_normal((2, n)).astype(np.float32) * 0.1
    lengths = jnp.array([n, short])
    out = np.asarray(flowse.enhance(model, variables, noisy, lengths, fs, jax.random.key(1), 1))
    assert out.shape == (2, n) and np.all(np.isfinite(out)) and np.std(out[1, :short]) > 0
    assert np.all(out[1, short:] == 0)
    noisy[1, short:] = rng.standard_normal(n - short)  # other padding content, same program
    again = flowse.enhance(model, variables, noisy, lengths, fs, jax.random.key(1), 1)
    np.testing.assert_allclose(np.asarray(again), out, atol=1e-6 * np.abs(out).max())
