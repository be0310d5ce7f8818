"""Flow-matching objective (REFERENCE.md §3.3): t range, z statistics, x_t / u formulas, masked
error, and the FlowSE loss on padded batches against a numpy transcription."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from urgent_jax import models
from urgent_jax.losses.flow import flow_matching_loss, flow_path, masked_sq_error
from urgent_jax.models import flowse


def _spectra(rng, shape):
    x0 = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    y = x0 + 0.5 * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    return x0.astype(np.complex64), y.astype(np.complex64)


def test_t_range():
    x0 = jnp.zeros((4096, 1), jnp.complex64)
    t, _, _ = flow_path(jax.random.key(0), x0, x0)
    t = np.asarray(t)
    assert t.shape == (4096,) and t.dtype == np.float32
    assert t.min() > 0.03 and t.max() <= 1.0
    assert abs(t.mean() - 0.515) < 0.02  # uniform on (0.03, 1]
    t2, _, _ = flow_path(jax.random.key(0), x0, x0, t_eps=0.1, t_max=0.5)
    assert np.asarray(t2).min() > 0.1 and np.asarray(t2).max() <= 0.5


def test_z_has_variance_half_per_part():
    # With x0 = y = 0 the target is u = (sigma_max - sigma_min) z, so z = u / 0.45.
    x0 = jnp.zeros((8, 64, 257), jnp.complex64)
    _, _, u = flow_path(jax.random.key(3), x0, x0)
    z = np.asarray(u) / 0.45
    for part in (z.real, z.imag):
        assert abs(part.mean()) < 0.01
        assert abs(part.var() - 0.5) < 0.01  # 131k draws: std error of the variance ~0.002
    assert abs(np.mean(z.real * z.imag)) < 0.01
    assert abs(np.mean(np.abs(z) ** 2) - 1.0) < 0.02


def test_path_formulas(rng):
    x0, y = _spectra(rng, (3, 5, 7))
    sigma_min, sigma_max = 0.05, 0.5
    t, x_t, u = flow_path(jax.random.key(7), x0, y, sigma_min=sigma_min, sigma_max=sigma_max)
    t, x_t, u = np.asarray(t, np.float64), np.asarray(x_t, complex), np.asarray(u, complex)
    tb = t[:, None, None]
    z = (u - (y - x0)) / (sigma_max - sigma_min)  # recover z from u, then check x_t
    want_x_t = (1 - tb) * x0 + tb * y + ((1 - tb) * sigma_min + tb * sigma_max) * z
    np.testing.assert_allclose(x_t, want_x_t, atol=1e-5)
    # and the same key gives the same draw
    t2, x_t2, u2 = flow_path(jax.random.key(7), x0, y, sigma_min=sigma_min, sigma_max=sigma_max)
    np.testing.assert_array_equal(np.asarray(t2), t.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(u2), u.astype(np.complex64))
    np.testing.assert_array_equal(np.asarray(x_t2), x_t.astype(np.complex64))


def test_masked_sq_error(rng):
    v, u = _spectra(rng, (2, 6, 5))  # [B, T, F]
    valid = np.array([6, 4])
    mask = (np.arange(6)[None, :] < valid[:, None])[..., None]  # [B, T, 1]
    got = np.asarray(masked_sq_error(v, u, mask))
    want = [0.5 * np.sum(np.abs(v[b, :n] - u[b, :n]) ** 2) for b, n in enumerate(valid)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    full = np.asarray(masked_sq_error(v, u))
    np.testing.assert_allclose(full, 0.5 * np.sum(np.abs(v - u) ** 2, axis=(1, 2)), rtol=1e-5)
    real = np.asarray(masked_sq_error(v.real, u.real, mask))
    want_real = [0.5 * np.sum((v.real[b, :n] - u.real[b, :n]) ** 2) for b, n in enumerate(valid)]
    np.testing.assert_allclose(real, want_real, rtol=1e-5)
    grad = jax.grad(lambda a: jnp.sum(masked_sq_error(a, u, mask)))(jnp.asarray(v.real))
    assert np.all(np.asarray(grad)[1, 4:] == 0)


def _numpy_path(t, z, x0, y, counts, sigma_min=0.05, sigma_max=0.5):
    """§3.3 in float64 on [B, T, F] spectra with padded frames excluded: z = 0 beyond counts."""
    valid = (np.arange(x0.shape[1])[None, :] < np.asarray(counts)[:, None])[:, :, None]
    z = np.asarray(z, complex) * valid
    tb = np.asarray(t, np.float64)[:, None, None]
    x_t = (1 - tb) * x0 + tb * y + ((1 - tb) * sigma_min + tb * sigma_max) * z
    u = (sigma_max - sigma_min) * z + (y - x0)
    return x_t, u, valid


def test_path_with_frame_counts_zeroes_padded_frames(rng):
    x0, y = _spectra(rng, (2, 6, 5))
    counts = np.array([6, 4])
    x0[1, 4:] = y[1, 4:] = 0.0  # encoders zero padded frames
    t, x_t, u = flow_path(jax.random.key(5), x0, y, jnp.asarray(counts))
    # recover z from the unmasked path of the same key (its formulas are checked above)
    _, _, u_all = flow_path(jax.random.key(5), x0, y)
    z = (np.asarray(u_all, complex) - (y - x0)) / 0.45
    want_x_t, want_u, _ = _numpy_path(np.asarray(t), z, x0, y, counts)
    np.testing.assert_allclose(np.asarray(x_t), want_x_t, atol=1e-5)
    np.testing.assert_allclose(np.asarray(u), want_u, atol=1e-5)
    assert np.all(np.asarray(x_t)[1, 4:] == 0) and np.all(np.asarray(u)[1, 4:] == 0)


def test_flow_matching_loss_matches_numpy_on_a_padded_batch(rng):
    """The one FlowSE training loss (used by enhance.task): path, masking and reduction vs numpy."""
    fs, n, short = 8000, 1200, 700
    model = models.build("flowse", num_channels=16, num_layers=1)
    variables = models.init_variables(model, jax.random.key(0), fs)
    clean = (0.1 * rng.standard_normal((2, n))).astype(np.float32)
    noisy = (clean + 0.05 * rng.standard_normal((2, n))).astype(np.float32)
    clean[1, short:], noisy[1, short:] = 3.0, -2.0  # padding content must not matter
    lengths, key = np.array([n, short]), jax.random.key(3)

    @jax.jit  # one program: the loss, and the compressed spectra for the reference below
    def run(variables, clean, noisy, lengths):
        spectra = (model.encode(clean, lengths, fs), model.encode(noisy, lengths, fs)[0])
        return flow_matching_loss(model, variables, clean, noisy, lengths, fs, key), spectra

    got, ((x0, counts), y) = jax.device_get(run(variables, clean, noisy, lengths))
    # compressed spectra: the front-end is checked against ESPnet in tests/models/test_frontend.py
    assert counts[1] < x0.shape[1] and np.all(x0[1, counts[1] :] == 0)
    # the draws of the key: t, then z (distributions checked in tests/models/test_flowse.py)
    t_key, z_key = jax.random.split(key)
    t = np.asarray(flowse.sample_time(t_key, 2, model.t_eps, model.t_max))
    z = np.asarray(flowse.complex_normal(z_key, x0.shape))
    x_t, u, valid = _numpy_path(t, z, x0.astype(complex), y.astype(complex), counts)
    field = jax.jit(model.apply)(variables, x_t.astype(np.complex64), y, t, jnp.asarray(counts))
    err = np.abs(np.asarray(field, complex) - u) ** 2 * valid
    want = np.mean(0.5 * np.sum(err, axis=(1, 2)))
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    # padded frames are excluded from the loss: the reference's unmasked sum differs
    assert not np.isclose(np.mean(0.5 * np.sum(np.abs(np.asarray(field) - u) ** 2, (1, 2))), want)
