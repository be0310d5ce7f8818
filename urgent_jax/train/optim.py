"""Optimiser: AdamW with the reference schedules, global-norm clipping and EMA (REFERENCE.md §3.5, §3.7).

Schedules (per optimiser step):
- `step_decay`: lr * gamma ** floor(step / steps_per_epoch), the reference's StepLR(x0.85 per epoch),
  after an optional linear warm-up;
- `linear`: linear warm-up then linear decay to 0 at total_steps (the Track 2 baseline);
- `constant`.
Skipping non-finite updates lives in the train step (it also counts them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def make_schedule(
    lr: float,
    schedule: str = "step_decay",
    steps_per_epoch: int = 1000,
    gamma: float = 0.85,
    warmup_steps: int = 0,
    total_steps: int | None = None,
):
    if schedule == "step_decay":
        main = optax.exponential_decay(lr, transition_steps=steps_per_epoch, decay_rate=gamma,
                                       staircase=True)
    elif schedule == "linear":
        if not total_steps:
            raise ValueError("the linear schedule needs total_steps")
        main = optax.linear_schedule(lr, 0.0, max(1, total_steps - warmup_steps))
    elif schedule == "constant":
        main = optax.constant_schedule(lr)
    else:
        raise ValueError(f"unknown schedule {schedule!r} (step_decay, linear, constant)")
    if warmup_steps <= 0:
        return main
    warm = optax.linear_schedule(0.0, lr, warmup_steps)
    return optax.join_schedules([warm, main], [warmup_steps])


def make_optimizer(
    lr: float = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-6,
    clip_norm: float | None = 0.5,
    schedule: str = "step_decay",
    steps_per_epoch: int = 1000,
    gamma: float = 0.85,
    warmup_steps: int = 0,
    total_steps: int | None = None,
) -> tuple[optax.GradientTransformation, callable]:
    """(tx, schedule_fn). Config keys equal these arguments (config.optim)."""
    sched = make_schedule(lr, schedule, steps_per_epoch, gamma, warmup_steps, total_steps)
    parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
    parts.append(optax.adamw(sched, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
    return optax.chain(*parts), sched


def ema_decay(count, max_decay: float = 0.999):
    """torch-ema's warm-up: min(max_decay, (1 + k) / (10 + k)) for the k-th update (k from 1)."""
    k = count.astype(jnp.float32)
    return jnp.minimum(max_decay, (1.0 + k) / (10.0 + k))


def ema_update(ema_params, params, count):
    """shadow <- shadow - (1 - decay)(shadow - param), decay from the update count (from 1)."""
    decay = ema_decay(count)
    return jax.tree.map(lambda e, p: e - (1.0 - decay) * (e - p), ema_params, params)
