"""EnhancementTask's loss: the optional SI-SNR term equals -w * SI-SNR of the model's own estimate."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

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


def _config_from_command_line(*overrides: str):
    """The config as `python -m urgent_jax.enhance.train --config ... --config.a.b=v` parses it."""
    from absl import flags
    from ml_collections import config_flags

    argv = ["train", f"--config={REPO}/configs/se/bsrnn.py:smoke", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", values, lock_config=True, sys_argv=argv)
    values(argv)
    return values.config


def test_precision_fields_from_the_command_line_reach_the_model():
    import flax.linen as nn
    import jax.numpy as jnp

    config = _config_from_command_line(
        "--config.model.kwargs.dtype=bfloat16",
        "--config.model.kwargs.param_dtype=bfloat16",
        "--config.model.kwargs.use_remat=True",
    )
    task = EnhancementTask(config)
    assert (task.model.dtype, task.model.param_dtype, task.model.use_remat) == (
        jnp.bfloat16, jnp.bfloat16, True
    )  # fmt: skip
    fs = 16000
    variables = jax.eval_shape(lambda k: task.init_variables(k, None, fs), jax.random.key(0))
    leaves = jax.tree_util.tree_leaves(nn.unbox(variables))
    assert {p.dtype for p in leaves} == {jnp.dtype("bfloat16")}  # param_dtype
    noisy = jax.ShapeDtypeStruct((1, 1600), jnp.float32)

    def apply(variables, noisy):
        return task.model.apply(variables, noisy, None, sample_rate=fs, capture_intermediates=True,
                                mutable=["intermediates"])  # fmt: skip

    out, state = jax.eval_shape(apply, variables, noisy)
    rnn = state["intermediates"]["layers_0"]["time_rnn"]["__call__"][0]
    assert rnn.dtype == jnp.bfloat16  # the dual-path layers compute in bfloat16
    assert out.dtype == jnp.float32  # the STFT front-end stays float32


def test_default_dtype_is_auto_and_float32_on_cpu():
    import jax.numpy as jnp

    from urgent_jax import models

    config = _config_from_command_line()
    assert config.model.kwargs.dtype == "auto" and config.model.kwargs.param_dtype == "float32"
    assert jax.default_backend() == "cpu"
    task = EnhancementTask(config)
    assert task.model.dtype == jnp.float32 and task.model.param_dtype == jnp.float32
    assert models.resolve_dtype("auto", backend="gpu") == jnp.bfloat16
    assert models.resolve_dtype("auto", backend="tpu") == jnp.bfloat16
    with pytest.raises(ValueError, match="param_dtype must be one of float32"):
        models.build("bsrnn", param_dtype="auto")


@pytest.mark.parametrize("variant, key", [("baseline", "train_dir"), ("dm", "sources_dir")])
def test_missing_training_data_directory_names_the_flag(variant, key):
    # Before: TypeError "expected str, bytes or os.PathLike object, not NoneType" from pathlib.
    config = load_config(os.path.join(REPO, "configs", "se", "bsrnn.py") + f":{variant}")
    with pytest.raises(ValueError, match=f"--config.data.{key}=DIR"):
        EnhancementTask(config).train_data(0, 0, 1)
