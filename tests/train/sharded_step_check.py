"""Run by test_train_cli.py in a fresh process with 8 fake CPU devices: two train steps of the smoke
BSRNN on a (data=4, fsdp=2) mesh vs. on a single-device mesh, from the same init and batches.
Prints one JSON line {max_abs_diff, max_abs_param, loss_sharded, loss_single, num_devices}."""

import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from urgent_jax.train.config_file import load_config  # noqa: E402
from urgent_jax.enhance.task import EnhancementTask  # noqa: E402
from urgent_jax.train import sharding  # noqa: E402
from urgent_jax.train.loop import make_train_fns  # noqa: E402
from urgent_jax.train.optim import make_optimizer  # noqa: E402


def main():
    config = load_config("configs/se/bsrnn.py:smoke")
    config.data.batch_size = 8
    task = EnhancementTask(config)
    tx, _ = make_optimizer(**{**config.optim.to_dict(), "steps_per_epoch": 100})
    example, rate = task.example_batch()
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(2):
        target = (0.1 * rng.standard_normal((8, 4000))).astype(np.float32)
        noisy = target + (0.05 * rng.standard_normal((8, 4000))).astype(np.float32)
        lengths = rng.integers(2000, 4001, 8).astype(np.int32)
        batches.append({"noisy": noisy, "target": target, "lengths": lengths})
    results = {}
    for name, mesh in (("sharded", sharding.make_mesh(2)), ("single", sharding.make_mesh(1, jax.devices()[:1]))):
        fns = make_train_fns(task, tx, mesh, 0, example, rate)
        state = fns.init()
        for b in batches:
            state, metrics = fns.step(state, sharding.global_batch(b, mesh), 8000)
        results[name] = (jax.device_get(state.params), float(metrics["loss"]))
        if name == "sharded":
            kinds = {str(x.sharding.spec) for x in jax.tree.leaves(state.params)}
            results["specs"] = sorted(kinds)
    diff = max(float(np.max(np.abs(a - b))) for a, b in
               zip(jax.tree.leaves(results["sharded"][0]), jax.tree.leaves(results["single"][0])))
    biggest = max(float(np.max(np.abs(a))) for a in jax.tree.leaves(results["single"][0]))
    print(json.dumps({"max_abs_diff": diff, "max_abs_param": biggest, "loss_sharded": results["sharded"][1],
                      "loss_single": results["single"][1], "num_devices": jax.device_count(),
                      "specs": results["specs"]}))


if __name__ == "__main__":
    main()
