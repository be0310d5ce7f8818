"""Train a speech-enhancement model: `python -m urgent_jax.enhance.train --config FILE:VARIANT --workdir W`.

    python -m urgent_jax.enhance.train --config configs/se/bsrnn.py:baseline --workdir exp/bsrnn \
        --config.data.train_dir data/train_simulation --config.eval.set_dir data/validation \
        [--config.optim.lr=3e-4 ...]

Resumes from the newest checkpoint in --workdir; SIGTERM saves and exits. The config is locked: a
misspelt override fails. The resolved config is written to <workdir>/config.json (the enhancement
command rebuilds the model from it).
"""

from __future__ import annotations

from absl import app

from urgent_jax.train import launch
from urgent_jax.train.launch import quiet_logs  # noqa: F401  (re-exported for scripts)


def train(config, workdir: str) -> dict:
    """Train the enhancement task per `config` in `workdir` (see urgent_jax.train.launch.train)."""
    from urgent_jax.enhance.task import EnhancementTask

    return launch.train(config, EnhancementTask, workdir)


main = launch.make_main(train)


if __name__ == "__main__":
    launch.define_flags()
    app.run(main)
