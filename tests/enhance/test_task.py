"""EnhancementTask's loss: the optional SI-SNR term equals -w * SI-SNR of the model's own estimate."""

from __future__ import annotations

import os

import jax
import numpy as np

from tests.losses.test_time_domain import _numpy_si_snr
from urgent_jax.enhance.task import EnhancementTask
from urgent_jax.train.config_file import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _task(weight: float) -> EnhancementTask:
    config = load_config(os.path.join(REPO, "configs", "se", "bsrnn.py") + ":smoke")
    config.data.mixing = "loader"  # batches hold (noisy, target, lengths): no simulation in the step
    config.loss.si_snr_weight = weight
    return EnhancementTask(config)


def test_si_snr_weight_subtracts_weighted_si_snr():
    rng = np.random.default_rng(0)
    fs, n = 16000, 4000
    target = (0.1 * rng.standard_normal((2, n))).astype(np.float32)
    noisy = (target + 0.05 * rng.standard_normal((2, n))).astype(np.float32)
    lengths = np.array([n, 3000], np.int32)
    noisy[1, 3000:] = target[1, 3000:] = 0.0
    batch = {"noisy": noisy, "target": target, "lengths": lengths}
    key = jax.random.key(0)

    plain = _task(0.0)
    variables = plain.init_variables(jax.random.key(1), None, fs)
    params = variables["params"]
    constants = {k: v for k, v in variables.items() if k != "params"}
    # jitted: eager tracing of the model costs several times its compile
    loss0, aux0 = jax.jit(plain.loss_fn, static_argnums=4)(params, constants, batch, key, fs)
    loss1, aux1 = jax.jit(_task(40.0).loss_fn, static_argnums=4)(params, constants, batch, key, fs)

    est = np.asarray(jax.jit(plain.enhance, static_argnums=3)(variables, noisy, lengths, fs))
    snr = np.mean([_numpy_si_snr(target[i, : lengths[i]], est[i, : lengths[i]]) for i in range(2)])
    np.testing.assert_allclose(float(aux0["si_snr"]), snr, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(float(loss1), float(loss0) - 40.0 * snr, rtol=1e-4, atol=0.05)
    assert float(aux1["si_snr"]) == float(aux0["si_snr"])
