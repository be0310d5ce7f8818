"""Train state: everything a step reads and writes, one pytree (checkpointed as a whole)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class TrainState:
    step: jax.Array  # int32, optimiser updates applied or skipped
    params: Any  # trainable parameters
    opt_state: Any
    rng: jax.Array  # base key; step keys are fold_in(rng, step)
    constants: Any  # non-trainable variables (e.g. FlowSE's fixed Fourier features), {} if none
    ema_params: Any  # exponential moving average of params (FlowSE), or None
    ema_count: jax.Array  # EMA updates so far (torch-ema's counter)
    num_skipped: jax.Array  # updates skipped for a non-finite loss or gradient


def create(params, opt_state, rng, constants=None, use_ema: bool = False) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=opt_state,
        rng=rng,
        constants=constants if constants is not None else {},
        ema_params=jax.tree.map(jnp.copy, params) if use_ema else None,
        ema_count=jnp.zeros((), jnp.int32),
        num_skipped=jnp.zeros((), jnp.int32),
    )
