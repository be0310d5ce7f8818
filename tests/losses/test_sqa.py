"""NaN-masked weighted MSE of the SQA regressor against numpy."""

import jax
import jax.numpy as jnp
import numpy as np

from urgent_jax.losses.sqa import masked_mse


def _numpy_loss(pred, labels, valid, weights):
    per = np.full(labels.shape[1], np.nan)
    for m in range(labels.shape[1]):
        ok = valid & ~np.isnan(labels[:, m])
        if ok.any():
            per[m] = weights[m] * np.mean((pred[ok, m] - labels[ok, m]) ** 2)
    return np.nanmean(per) if np.isfinite(per).any() else 0.0, per


def test_masked_mse_matches_numpy():
    rng = np.random.default_rng(0)
    pred = rng.standard_normal((6, 4)).astype(np.float32)
    labels = rng.standard_normal((6, 4)).astype(np.float32)
    labels[[0, 2, 3], 1] = np.nan
    labels[:, 3] = np.nan  # metric without any label: skipped
    labels[5, 2] = np.nan
    valid = np.array([True, True, True, True, False, True])
    labels[4, :] = 1e6  # invalid item: ignored
    weights = np.array([1.0, 2.0, 0.5, 1.0], np.float32)
    loss, per = jax.jit(masked_mse)(pred, labels, valid, weights)
    want_loss, want_per = _numpy_loss(pred, labels, valid, weights)
    np.testing.assert_allclose(per, want_per, rtol=1e-6)
    assert np.isnan(per[3])
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    loss_none, _ = masked_mse(pred, labels, None, None)
    want_none, _ = _numpy_loss(pred, labels, np.ones(6, bool), np.ones(4))
    np.testing.assert_allclose(loss_none, want_none, rtol=1e-6)


def test_gradients_finite_and_zero_where_masked():
    pred = jnp.ones((3, 2))
    labels = jnp.array([[2.0, jnp.nan], [jnp.nan, jnp.nan], [0.0, 1.0]])
    grad = jax.grad(lambda p: masked_mse(p, labels, jnp.array([True, True, False]))[0])(pred)
    assert np.isfinite(grad).all()
    # only (0, 0) is valid: metric 0 has n = 1, metric 1 none -> loss = (1 - 2)^2
    np.testing.assert_allclose(grad, [[-2.0, 0.0], [0.0, 0.0], [0.0, 0.0]])


def test_nothing_valid_gives_zero_not_nan():
    pred = jnp.ones((2, 3))
    labels = jnp.full((2, 3), jnp.nan)
    loss, per = masked_mse(pred, labels, jnp.array([True, True]))
    assert float(loss) == 0.0 and np.isnan(per).all()
    grad = jax.grad(lambda p: masked_mse(p, labels, None)[0])(pred)
    assert np.isfinite(grad).all() and not np.asarray(grad).any()
