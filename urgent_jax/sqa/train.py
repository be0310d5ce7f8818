"""Train a quality-assessment model: `python -m urgent_jax.sqa.train --config FILE:VARIANT --workdir W`.

    python -m urgent_jax.sqa.train --config configs/sqa/universa_ext.py:5metric --workdir exp/sqa5 \
        --config.data.train_jsonl="('data/urgent2024-sqa/train/data.jsonl', \
                                    'data/bvcc/train/data.jsonl')" \
        --config.eval.jsonl="('data/chime-7-udase-eval/test/data.jsonl',)" \
        --config.model.frontend_weights=/models/wavlm-base-plus

The data.jsonl fields are tuples: quote each path (a comma-joined list works for relative paths
only; ml_collections rejects an unquoted path starting with /). The shared train loop
(urgent_jax.train.loop.run): sharded over all devices, resumes from the newest checkpoint in
--workdir, SIGTERM saves and exits, a misspelt override fails. Then
`python -m urgent_jax.sqa.infer --workdir W ...` predicts and `python -m urgent_jax.sqa.eval` scores.
"""

from __future__ import annotations

from absl import app

from urgent_jax.train import launch


def train(config, workdir: str) -> dict:
    """Train the SQA task per `config` in `workdir` (see urgent_jax.train.launch.train)."""
    from urgent_jax.sqa.task import SqaTask

    return launch.train(config, SqaTask, workdir)


main = launch.make_main(train)


if __name__ == "__main__":
    launch.define_flags()
    app.run(main)
