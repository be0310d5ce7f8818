"""The train loop: `run(config, task, workdir)`, one readable function from mesh to finish.

mesh -> data -> eval_shape init -> shardings -> jitted init -> restore -> loop (step, log, checkpoint,
evaluate, pre-emption) -> finish. New behaviour enters through the `Task` (enhance/task.py,
sqa/task.py), never by forking this loop. `train_step` is a top-level pure function, jitted once per
batch shape with shardings and a donated state; tests call it unjitted.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from urgent_jax.train import sharding
from urgent_jax.train.checkpoint import Checkpointer, abstract_like
from urgent_jax.train.optim import ema_update, make_optimizer
from urgent_jax.train.state import TrainState, create
from urgent_jax.train.writers import MetricWriter, ProgressBar

log = logging.getLogger(__name__)


class Task(Protocol):
    """What the loop needs from a task (speech enhancement, quality assessment, ...)."""

    use_ema: bool

    def example_batch(self) -> tuple[dict, int]:
        """A representative device batch (numpy, global shapes) and its sampling rate, for init."""

    def init_variables(self, key, batch: dict, sample_rate: int) -> dict:
        """Model variables ({'params': ..., other collections}); may carry logical-axis boxes."""

    def loss_fn(self, params, constants, batch: dict, key, sample_rate: int) -> tuple[jax.Array, dict]:
        """(scalar loss, {name: scalar}) for one batch; pure."""

    def train_data(self, seed: int, shard_index: int, shard_count: int):
        """A checkpointable iterator of host batches."""

    def split_batch(self, batch: dict) -> tuple[dict, int, dict]:
        """Host batch -> (device arrays, sampling rate, host-side info e.g. skip counts)."""

    def audio_seconds(self, device_batch: dict, sample_rate: int) -> float:
        """Audio-seconds in a batch (throughput)."""

    def steps_per_epoch(self) -> int:
        """Batches per epoch of the training data (after train_data())."""

    def evaluate(self, params, constants, step: int) -> dict:
        """Validation metrics (flat scalars), computed on all processes; {} when disabled."""

    # Optional: `load_pretrained(state) -> state` puts pretrained weights (e.g. a frozen SSL front-end)
    # into a freshly initialised state, keeping each leaf's sharding; not called on resume.


# --- the step -------------------------------------------------------------------------------------


def train_step(state: TrainState, batch: dict, *, task: Task, tx, sample_rate: int):
    """One optimiser update; non-finite loss or gradients skip it (counted). Pure."""
    key = jax.random.fold_in(state.rng, state.step)

    def loss(params):
        return task.loss_fn(params, state.constants, batch, key, sample_rate)

    (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    is_finite = jnp.isfinite(value) & jnp.isfinite(grad_norm)

    def keep(new, old):
        return jax.tree.map(lambda a, b: jnp.where(is_finite, a, b), new, old)

    params = keep(params, state.params)
    opt_state = keep(opt_state, state.opt_state)
    ema_params, ema_count = state.ema_params, state.ema_count
    if ema_params is not None:
        count = ema_count + is_finite.astype(jnp.int32)
        ema_params = keep(ema_update(ema_params, params, count), ema_params)
        ema_count = count
    num_skipped = state.num_skipped + (~is_finite).astype(jnp.int32)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema_params=ema_params, ema_count=ema_count, num_skipped=num_skipped)
    metrics = {"loss": value, "grad_norm": grad_norm, "skipped": num_skipped, **aux}
    return new_state, metrics


# --- helpers --------------------------------------------------------------------------------------


def _like_params(tree, params_treedef, params_shardings, fallback):
    """Shardings for an optimiser-state tree: subtrees shaped like params get the params' ones."""
    if jax.tree.structure(tree) == params_treedef:
        return params_shardings
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "shape"):
        children = [_like_params(t, params_treedef, params_shardings, fallback) for t in tree]
        return type(tree)(*children) if hasattr(tree, "_fields") else type(tree)(children)
    if isinstance(tree, dict):
        return {k: _like_params(v, params_treedef, params_shardings, fallback) for k, v in tree.items()}
    return jax.tree.map(lambda _: fallback, tree)


def maybe_initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                                 process_id: int | None = None, timeout_s: int = 300) -> None:
    """jax.distributed.initialize() for multi-process runs: explicit arguments (timeout_s bounds the
    wait for peers), or JAX's own auto-detection on TPU pods / SLURM / the JAX_COORDINATOR_ADDRESS
    environment. A missing peer aborts the process (JAX's behaviour): launchers check exit codes."""
    if jax.distributed.is_initialized():
        return
    if coordinator_address:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   initialization_timeout=timeout_s)
    elif os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0:
        jax.distributed.initialize()


class _Preemption:
    """SIGTERM sets a flag; the loop saves and exits cleanly at the next step boundary."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        def handler(signum, frame):
            log.warning("SIGTERM received: saving a checkpoint and stopping")
            self.requested = True

        try:
            self._previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class TrainFns(NamedTuple):
    init: Callable[[], TrainState]  # jitted, returns the sharded initial state
    step: Callable  # jitted step(state, batch, sample_rate) -> (state, metrics); donates state
    abstract_state: TrainState  # ShapeDtypeStructs
    state_shardings: TrainState  # NamedShardings


def make_train_fns(task: Task, tx, mesh, seed: int, example: dict, example_rate: int) -> TrainFns:
    """Shardings from the logical-axis rules and the jitted init / train step over `mesh`."""
    rep = sharding.replicated(mesh)
    init_key, state_key = jax.random.split(jax.random.PRNGKey(seed))
    abstract_vars = jax.eval_shape(functools.partial(task.init_variables, sample_rate=example_rate),
                                   init_key, example)
    var_sh = sharding.variable_shardings(abstract_vars, mesh)
    params_sh = var_sh["params"]
    constants_sh = {k: v for k, v in var_sh.items() if k != "params"}

    def init_state(key):
        variables = dict(nn.meta.unbox(task.init_variables(key, example, sample_rate=example_rate)))
        params = variables.pop("params")
        return create(params, tx.init(params), state_key, constants=variables, use_ema=task.use_ema)

    abstract_state = jax.eval_shape(init_state, init_key)
    params_def = jax.tree.structure(abstract_state.params)
    state_sh = TrainState(
        step=rep, params=params_sh,
        opt_state=_like_params(abstract_state.opt_state, params_def, params_sh, rep),
        rng=rep, constants=constants_sh,
        ema_params=params_sh if task.use_ema else None, ema_count=rep, num_skipped=rep,
    )  # fmt: skip
    init = jax.jit(init_state, out_shardings=state_sh)

    def step_positional(state, batch, sample_rate):  # pjit takes no kwargs with in_shardings
        return train_step(state, batch, task=task, tx=tx, sample_rate=sample_rate)

    step = jax.jit(step_positional, static_argnums=2, in_shardings=(state_sh, sharding.batch_sharding(mesh)),
                   out_shardings=(state_sh, rep), donate_argnums=0)
    return TrainFns(functools.partial(init, init_key), step, abstract_state, state_sh)


# --- the loop -------------------------------------------------------------------------------------


def run(config, task: Task, workdir: str) -> dict[str, Any]:
    """Train `task` with config.train / config.optim; resumes from workdir. Returns a summary."""
    tc = config.train
    os.makedirs(workdir, exist_ok=True)

    # --- mesh ---
    maybe_initialize_distributed(tc.coordinator_address, tc.num_processes, tc.process_id,
                                 tc.distributed_timeout_s)
    mesh = sharding.make_mesh(tc.num_fsdp)
    log.info("mesh %s over %d devices (%d processes)", dict(mesh.shape), jax.device_count(),
             jax.process_count())

    # --- data ---
    data = task.train_data(tc.seed, jax.process_index(), jax.process_count())
    example, example_rate = task.example_batch()

    # --- optimiser (epoch-based settings resolved from the data plan) ---
    optim_kwargs = config.optim.to_dict()
    if not optim_kwargs.get("steps_per_epoch"):
        optim_kwargs["steps_per_epoch"] = task.steps_per_epoch()
    num_steps = tc.num_steps or tc.num_epochs * optim_kwargs["steps_per_epoch"]
    if optim_kwargs.get("schedule") == "linear" and not optim_kwargs.get("total_steps"):
        optim_kwargs["total_steps"] = num_steps
    tx, schedule = make_optimizer(**optim_kwargs)

    # --- init (abstract), shardings, jitted init, restore ---
    fns = make_train_fns(task, tx, mesh, tc.seed, example, example_rate)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), save_every=tc.checkpoint_every,
                        keep_last=tc.keep_last, keep_best=tc.keep_best, best_metric=tc.best_metric,
                        best_mode=tc.best_mode)
    restored, start = ckpt.restore(abstract_like(fns.abstract_state, fns.state_shardings), data)
    if restored is None:
        state = fns.init()
        start = 0
        load_pretrained = getattr(task, "load_pretrained", None)  # optional Task hook
        if load_pretrained is not None:
            state = load_pretrained(state)
    else:
        state = restored
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(fns.abstract_state.params))
    log.info("model: %d parameters; starting at step %d", num_params, start)
    step_fn = fns.step

    # --- loop ---
    writer = MetricWriter(workdir, use_tensorboard=tc.use_tensorboard)
    bar = ProgressBar(num_steps, start, enabled=tc.progress_bar)
    shapes: set = set()
    skipped_files = 0
    audio_s, t_window, window_audio = 0.0, time.time(), 0.0
    last_eval: dict = {}
    stop_reason = "num_steps"
    step = start
    t_train = time.time()
    deadline = t_train + tc.max_train_s if tc.get("max_train_s") else None
    with _Preemption() as preemption:
        while step < num_steps:
            host = next(data)
            device, rate, info = task.split_batch(host)
            skipped_files += int(info.get("skipped_files", 0))
            shape = (rate,) + tuple(sorted((k, v.shape) for k, v in device.items()))
            if shape not in shapes:
                shapes.add(shape)
                log.info("compiling train_step for batch shape %s (%d compiles)", shape[:1] + shape[1:], len(shapes))
            batch = sharding.global_batch(device, mesh)
            state, metrics = step_fn(state, batch, rate)
            step += 1
            seconds = task.audio_seconds(device, rate) * jax.process_count()
            audio_s += seconds
            window_audio += seconds

            if step % tc.log_every == 0 or step == num_steps:
                metrics = jax.device_get(metrics)
                now = time.time()
                rate_audio = window_audio / max(now - t_window, 1e-9)
                t_window, window_audio = now, 0.0
                extra = {"lr": float(schedule(step - 1)), "audio_s_per_s": rate_audio,
                         "compiles": len(shapes), "skipped_files": skipped_files}
                writer.write(step, {**metrics, **extra}, prefix="train/")
                bar.update(tc.log_every if step % tc.log_every == 0 else step % tc.log_every,
                           loss=metrics["loss"], si_snr=metrics.get("si_snr"),
                           gnorm=metrics["grad_norm"], skipped=metrics["skipped"],
                           audio_s_s=rate_audio, compiles=len(shapes))

            out_of_time = deadline is not None and time.time() > deadline
            do_eval = tc.eval_every > 0 and (step % tc.eval_every == 0 or step == num_steps or out_of_time)
            if do_eval:
                params = state.ema_params if state.ema_params is not None else state.params
                last_eval = task.evaluate(params, state.constants, step)
                if last_eval:
                    writer.write(step, last_eval, prefix="")
                    log.info("step %d validation: %s", step, {k: round(float(v), 4) for k, v in last_eval.items()})
            if ckpt.should_save(step) or do_eval:
                ckpt.save(step, state, data, metrics=last_eval if do_eval else None)
            if preemption.requested:
                stop_reason = "preempted"
                break
            if out_of_time:
                stop_reason = "max_train_s"
                break

    # --- finish ---
    ckpt.save(step, state, data, metrics=None)
    ckpt.wait()
    best_step = ckpt.best_step()
    ckpt.close()
    bar.close()
    writer.close()
    close = getattr(data, "close", None)
    if close is not None:
        close()
    summary = {
        "step": step, "stop_reason": stop_reason, "num_params": num_params,
        "train_s": round(time.time() - t_train, 1), "audio_s": round(audio_s, 1),
        "compiles": len(shapes), "skipped_updates": int(jax.device_get(state.num_skipped)),
        "skipped_files": skipped_files, "last_eval": {k: float(v) for k, v in last_eval.items()},
        "best_step": best_step,
    }  # fmt: skip
    log.info("training finished: %s", summary)
    return summary
