"""Optimiser schedule, EMA, the pure train step (non-finite skip) and checkpoint fallbacks, in-process."""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from urgent_jax.train.checkpoint import Checkpointer, abstract_like
from urgent_jax.train.loop import train_step
from urgent_jax.train.optim import ema_update, make_optimizer, make_schedule
from urgent_jax.train.state import create


def test_step_decay_matches_steplr_per_epoch():
    sched = make_schedule(1e-3, "step_decay", steps_per_epoch=10, gamma=0.85)
    for step in (0, 9, 10, 25, 99):
        assert float(sched(step)) == pytest.approx(1e-3 * 0.85 ** (step // 10), rel=1e-6)


def test_warmup_then_decay():
    sched = make_schedule(2e-3, "step_decay", steps_per_epoch=100, gamma=0.5, warmup_steps=10)
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(1e-3, rel=1e-6)
    assert float(sched(10)) == pytest.approx(2e-3, rel=1e-6)
    assert float(sched(110)) == pytest.approx(1e-3, rel=1e-6)


def test_linear_schedule_needs_total_steps():
    with pytest.raises(ValueError, match="total_steps"):
        make_schedule(1e-3, "linear")
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule(1e-3, "cosine")


def test_ema_matches_torch_ema_recursion():
    shadow, param = np.float64(1.0), np.float64(0.0)
    e = {"w": jnp.ones(3)}
    for k in range(1, 6):
        decay = min(0.999, (1 + k) / (10 + k))
        shadow = shadow - (1 - decay) * (shadow - param)
        e = ema_update(e, {"w": jnp.zeros(3)}, jnp.asarray(k))
    np.testing.assert_allclose(np.asarray(e["w"]), shadow, rtol=1e-6)


class _LinearTask:
    """y = x @ w; loss is mean squared error; `poison` makes the loss NaN."""

    use_ema = True

    def loss_fn(self, params, constants, batch, key, sample_rate):
        del constants, key, sample_rate
        pred = batch["x"] @ params["w"]
        loss = jnp.mean((pred - batch["y"]) ** 2) + batch["poison"]
        return loss, {"mse": loss}


def _state(tx, use_ema=True):
    params = {"w": jnp.zeros((3, 1))}
    return create(params, tx.init(params), jax.random.PRNGKey(0), use_ema=use_ema)


def test_train_step_descends_and_matches_optax():
    tx, _ = make_optimizer(lr=0.1, clip_norm=None, weight_decay=0.0, schedule="constant")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 3)).astype(np.float32)
    batch = {"x": x, "y": x @ np.array([[1.0], [-2.0], [0.5]], np.float32), "poison": 0.0}
    state = _state(tx)
    new, metrics = train_step(state, batch, task=_LinearTask(), tx=tx, sample_rate=16000)
    # independent: one optax.adamw update on the same gradient
    grads = jax.grad(lambda p: jnp.mean((x @ p["w"] - batch["y"]) ** 2))(state.params)
    ref_tx = optax.adamw(0.1, weight_decay=0.0)
    upd, _ = ref_tx.update(grads, ref_tx.init(state.params), state.params)
    np.testing.assert_allclose(new.params["w"], optax.apply_updates(state.params, upd)["w"], rtol=1e-6)
    assert int(new.step) == 1 and int(new.num_skipped) == 0 and int(new.ema_count) == 1
    assert float(metrics["grad_norm"]) == pytest.approx(float(optax.tree.norm(grads)), rel=1e-6)


def test_non_finite_update_is_skipped_and_counted():
    tx, _ = make_optimizer(lr=0.1, clip_norm=0.5)
    x = np.ones((4, 3), np.float32)
    state = _state(tx)
    bad = {"x": x, "y": np.zeros((4, 1), np.float32), "poison": np.float32(np.nan)}
    new, metrics = jax.jit(lambda s, b: train_step(s, b, task=_LinearTask(), tx=tx, sample_rate=8000))(state, bad)
    assert int(new.num_skipped) == 1 and int(metrics["skipped"]) == 1
    assert int(new.step) == 1 and int(new.ema_count) == 0
    for a, b in zip(jax.tree.leaves((new.params, new.opt_state, new.ema_params)),
                    jax.tree.leaves((state.params, state.opt_state, state.ema_params))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _toy_state(value: float):
    tx, _ = make_optimizer(lr=0.1)
    s = _state(tx, use_ema=False)
    return s.replace(params={"w": jnp.full((3, 1), value)})


def test_interrupted_and_corrupt_checkpoints_fall_back(tmp_path, caplog):
    directory = tmp_path / "ckpt"
    ck = Checkpointer(str(directory), save_every=1, keep_last=5, keep_best=0, use_async=False)
    ck.save(1, _toy_state(1.0))
    ck.save(2, _toy_state(2.0))
    ck.close()
    # step 3: a save killed half-way (orbax's temporary directory), step 2: damaged files
    (directory / "3.orbax-checkpoint-tmp-1234").mkdir()
    damaged = 0
    for root, _, files in os.walk(directory / "2" / "state"):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"\0garbage")
            damaged += 1
    assert damaged
    template = _toy_state(0.0)
    shardings = jax.tree.map(lambda x: x.sharding, template)
    with caplog.at_level(logging.WARNING):
        ck = Checkpointer(str(directory), save_every=1, keep_last=5, keep_best=0, use_async=False)
        state, step = ck.restore(abstract_like(template, shardings))
        ck.close()
    assert step == 1
    np.testing.assert_array_equal(np.asarray(state.params["w"]), 1.0)
    text = caplog.text
    assert "interrupted checkpoint save" in text and "3.orbax-checkpoint-tmp-1234" in text
    assert "cannot restore checkpoint step 2" in text


def test_best_checkpoints_kept_by_metric(tmp_path):
    ck = Checkpointer(str(tmp_path / "c"), save_every=1, keep_last=1, keep_best=2, best_metric="val_loss",
                      best_mode="min", use_async=False)
    for step, loss in [(1, 5.0), (2, 1.0), (3, 3.0), (4, 2.0), (5, 4.0)]:
        ck.save(step, _toy_state(float(step)), metrics={"val_loss": loss})
    ck.save(6, _toy_state(6.0))
    ck.wait()
    kept = sorted(ck.manager.all_steps())
    best = ck.best_step()
    ck.close()
    assert best == 2
    assert {2, 4, 6} <= set(kept) and 1 not in kept and 3 not in kept and 5 not in kept


def test_unrestorable_checkpoints_raise_instead_of_restarting(tmp_path):
    """Steps that exist but all fail to restore (here: a changed model size) must not silently start
    a fresh run at step 0 over them; the error names the directory and the failing step."""
    directory = tmp_path / "ckpt"
    ck = Checkpointer(str(directory), save_every=1, keep_last=5, keep_best=0, use_async=False)
    ck.save(5, _toy_state(1.0))
    ck.close()
    tx, _ = make_optimizer(lr=0.1)
    params = {"w": jnp.zeros((4, 1))}  # the saved run had (3, 1)
    template = create(params, tx.init(params), jax.random.PRNGKey(0))
    shardings = jax.tree.map(lambda x: x.sharding, template)
    ck = Checkpointer(str(directory), save_every=1, keep_last=5, keep_best=0, use_async=False)
    try:
        with pytest.raises(RuntimeError, match=r"checkpoint steps \[5\] can be restored") as info:
            ck.restore(abstract_like(template, shardings))
    finally:
        ck.close()
    assert str(directory) in str(info.value) and "step 5:" in str(info.value)
