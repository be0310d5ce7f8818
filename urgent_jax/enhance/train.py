"""Train a speech-enhancement model: `python -m urgent_jax.enhance.train --config FILE:VARIANT --workdir W`.

    python -m urgent_jax.enhance.train --config configs/se/bsrnn.py:baseline --workdir exp/bsrnn \
        --config.data.train_dir data/train_simulation --config.eval.set_dir data/validation \
        [--config.optim.lr=3e-4 ...]

Resumes from the newest checkpoint in --workdir; SIGTERM saves and exits. The config is locked: a
misspelt override fails. The resolved config is written to <workdir>/config.json (the enhancement
command rebuilds the model from it).
"""

from __future__ import annotations

import json
import logging
import os
import sys

from absl import app, flags, logging as absl_logging
from ml_collections import config_flags

from urgent_jax import prepare_runtime


def _define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].", lock_config=True)
    flags.DEFINE_string("workdir", None, "Checkpoints, logs and config.json go here.")
    flags.mark_flags_as_required(["config", "workdir"])


def train(config, workdir: str) -> dict:
    """Train per `config` in `workdir` (resuming), write config.json and train_summary.json there
    (process 0), and return the loop's summary."""
    import jax

    from urgent_jax.enhance.task import EnhancementTask
    from urgent_jax.train.loop import maybe_initialize_distributed, run

    tc = config.train
    maybe_initialize_distributed(tc.coordinator_address, tc.num_processes, tc.process_id,
                                 tc.distributed_timeout_s)
    is_main = jax.process_index() == 0
    if is_main:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json(indent=2))
    summary = run(config, EnhancementTask(config), workdir)
    if is_main:
        with open(os.path.join(workdir, "train_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def quiet_logs() -> None:
    """INFO from urgent_jax, warnings only from jax / orbax / absl internals."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("urgent_jax").setLevel(logging.INFO)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    prepare_runtime()
    quiet_logs()
    summary = train(flags.FLAGS.config, flags.FLAGS.workdir)
    print(json.dumps(summary, indent=2), file=sys.stderr)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
