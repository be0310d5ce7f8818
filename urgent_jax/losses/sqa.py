"""SQA regression loss: NaN-masked, weighted MSE over metrics (REFERENCE.md §3.7).

For each metric m with at least one valid label in the batch:
    L_m = w_m * sum_valid (pred - label)^2 / n_valid,
and the loss is the mean of L_m over those metrics. A label is valid where it is not NaN and its
item is valid (padding items of a fixed-size batch are not). Unlike the reference (§6 item 19) a
batch without any valid label gives loss 0 (and zero gradients) instead of dividing by zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mse(pred, labels, valid=None, weights=None) -> tuple[jax.Array, jax.Array]:
    """(loss scalar, per-metric losses [M] with NaN for metrics without a valid label).

    pred, labels: [B, M] float (labels NaN where missing); valid: [B] bool or None (all items);
    weights: [M] or None (all 1). Computed in float32.
    """
    pred = jnp.asarray(pred, jnp.float32)
    labels = jnp.asarray(labels, jnp.float32)
    mask = ~jnp.isnan(labels)  # [B, M]
    if valid is not None:
        mask = mask & jnp.asarray(valid, bool)[:, None]
    safe = jnp.where(mask, labels, 0.0)  # keeps NaN out of the gradient
    sq = jnp.where(mask, jnp.square(pred - safe), 0.0)
    count = jnp.sum(mask, axis=0)  # [M]
    has = count > 0
    per_metric = jnp.sum(sq, axis=0) / jnp.maximum(count, 1).astype(jnp.float32)
    if weights is not None:
        per_metric = per_metric * jnp.asarray(weights, jnp.float32)
    num_metrics = jnp.sum(has)
    total = jnp.sum(jnp.where(has, per_metric, 0.0))
    loss = total / jnp.maximum(num_metrics, 1).astype(jnp.float32)
    return loss, jnp.where(has, per_metric, jnp.nan)
