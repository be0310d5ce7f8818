"""What every training command shares (`python -m urgent_jax.{enhance,sqa}.train`): the flags, the
log levels, and `train(config, make_task, workdir)` — join the processes, record the resolved config,
run the loop, record its summary.

    python -m urgent_jax.enhance.train --config configs/se/bsrnn.py:tiny --workdir exp/tiny
    python -m urgent_jax.sqa.train --config configs/sqa/universa_ext.py:tiny --workdir exp/sqa

The config is locked: a misspelt override (`--config.optim.lrr=1`) fails. `<workdir>/config.json`
is what the inference commands rebuild the model from.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable

from absl import flags, logging as absl_logging
from ml_collections import config_flags

from urgent_jax.train.loop import Task, maybe_initialize_distributed, run


def define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].", lock_config=True)
    flags.DEFINE_string("workdir", None, "Checkpoints, logs and config.json go here.")
    flags.mark_flags_as_required(["config", "workdir"])


def quiet_logs() -> None:
    """INFO from urgent_jax, warnings only from jax / orbax / absl internals."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("urgent_jax").setLevel(logging.INFO)


def train(config, make_task: Callable[[object], Task], workdir: str) -> dict:
    """Train `make_task(config)` in `workdir` (resuming), write config.json (the config after the
    task is made) and train_summary.json there (process 0), and return the loop's summary."""
    import jax

    tc = config.train
    maybe_initialize_distributed(tc.coordinator_address, tc.num_processes, tc.process_id,
                                 tc.distributed_timeout_s)
    is_main = jax.process_index() == 0
    task = make_task(config)  # first: a task may record what it resolved in the config
    if is_main:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json(indent=2))
    summary = run(config, task, workdir)
    if is_main:
        with open(os.path.join(workdir, "train_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def make_main(train_fn: Callable[[object, str], dict]) -> Callable:
    """An absl main(argv) running `train_fn(--config, --workdir)` and printing its summary."""

    def main(argv) -> None:
        from absl import app

        from urgent_jax import prepare_runtime

        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        prepare_runtime()
        quiet_logs()
        summary = train_fn(flags.FLAGS.config, flags.FLAGS.workdir)
        print(json.dumps(summary, indent=2), file=sys.stderr)

    return main
