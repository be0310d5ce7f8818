"""Checkpoints: orbax CheckpointManager holding the train state and the Grain iterator together.

- asynchronous saves every `save_every` steps (and on demand: pre-emption, end of training);
- keep the latest `keep_last` plus the best `keep_best` by a validation metric (`best_metric`,
  `best_mode` min|max) — one manager, an orbax preservation policy combining LatestN and BestN;
- automatic resume from the newest complete step; a save that was interrupted (an orbax temporary
  directory left by a killed process) is reported and ignored, and a step that fails to restore is
  skipped with a warning in favour of the previous one.
"""

from __future__ import annotations

import logging
import os

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

try:  # the Grain iterator handlers
    import grain
except ImportError:  # pragma: no cover - grain is a core dependency
    grain = None

log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(
        self,
        directory: str,
        *,
        save_every: int = 1000,
        keep_last: int = 3,
        keep_best: int = 5,
        best_metric: str = "val_loss",
        best_mode: str = "min",
        use_async: bool = True,
    ):
        self.directory = os.path.abspath(directory)
        self.save_every = save_every
        self.best_metric, self.best_mode = best_metric, best_mode
        policies = [ocm.LatestN(keep_last)]
        if keep_best:
            policies.append(
                ocm.BestN(
                    get_metric_fn=lambda metrics: metrics[best_metric],
                    reverse=best_mode == "min",
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=use_async,
            preservation_policy=ocm.AnyPreservationPolicy(policies),
            best_fn=(lambda metrics: metrics[best_metric]) if keep_best else None,  # metrics are stored
            best_mode=best_mode,
            cleanup_tmp_directories=False,
        )
        self._report_interrupted()
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def _report_interrupted(self) -> None:
        if not os.path.isdir(self.directory):
            return
        for name in sorted(os.listdir(self.directory)):
            if "orbax-checkpoint-tmp" in name:
                log.warning("ignoring an interrupted checkpoint save: %s", os.path.join(self.directory, name))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def should_save(self, step: int) -> bool:
        return self.save_every > 0 and step % self.save_every == 0

    def save(self, step: int, state, data_iterator=None, metrics: dict | None = None) -> bool:
        """Save (asynchronously) unless this step already exists; returns whether it saved."""
        if step in self.manager.all_steps():
            return False
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        clean = {k: float(v) for k, v in (metrics or {}).items()}
        if clean and self.best_metric not in clean:
            clean = None
        self.manager.save(step, args=ocp.args.Composite(**items), metrics=clean or None, force=True)
        return True

    def restore(self, abstract_state, data_iterator=None):
        """(state, step) from the newest restorable step, or (None, None) if there are no steps.

        abstract_state: jax.ShapeDtypeStruct tree carrying the target shardings. Raises RuntimeError
        when steps exist but none restores (a changed model or data.num_workers, not corruption):
        starting from scratch over them would silently throw the run away.
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        failures = []
        for step in steps:
            items = {"state": ocp.args.StandardRestore(abstract_state)}
            if data_iterator is not None:
                items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(**items))
            except Exception as e:  # a corrupt or partial step: fall back to the previous one
                log.warning("cannot restore checkpoint step %d (%s); trying an older one", step, e)
                failures.append(f"step {step}: {type(e).__name__}: {str(e)[:300]}")
                continue
            log.info("restored checkpoint step %d from %s", step, self.directory)
            return restored["state"], step
        if failures:
            raise RuntimeError(
                f"{self.directory}: none of the checkpoint steps {steps} can be restored, refusing "
                "to start from scratch over them. Restore needs the config that saved them (model "
                "sizes, data.num_workers: the Grain iterator state depends on it); or use a new "
                "--workdir.\n"
                + "\n".join(failures)
            )
        return None, None

    def best_step(self) -> int | None:
        """The kept step with the best `best_metric` (None when no saved step has it)."""
        scored = []
        for step in self.manager.all_steps():
            metrics = self.manager.metrics(step) or {}
            if self.best_metric in metrics:
                scored.append((float(metrics[self.best_metric]), step))
        if not scored:
            return None
        return (min if self.best_mode == "min" else max)(scored)[1]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree, shardings):
    """ShapeDtypeStructs of `tree` carrying `shardings` (the restore target)."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def restore_on_host(directory: str, step: int | None = None) -> tuple[dict, int]:
    """(train state as a dict of arrays on this process's first device, step) from a checkpoint
    directory, whatever mesh or number of processes saved it (inference, analysis). step None: newest."""
    manager = ocp.CheckpointManager(os.path.abspath(directory),
                                    item_handlers={"state": ocp.StandardCheckpointHandler()})
    try:
        chosen = manager.latest_step() if step is None else step
        if chosen is None or chosen not in manager.all_steps():
            raise FileNotFoundError(f"{directory}: no checkpoint" + ("" if step is None else f" at step {step}"))
        metadata = manager.item_metadata(chosen)["state"]
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
        restored = manager.restore(chosen, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    finally:
        manager.close()
    return restored["state"], chosen
