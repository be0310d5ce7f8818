"""Simulation settings of the official validation set (conf/simulation_validation.yaml): the training
settings with Vorbis as the only OGG encoder and no RIR reuse.

    python -m urgent_jax.simulation.generate_params --sources data/validation_sources \
        --out simulation_validation/log/meta.tsv --config configs/simulation/validation.py --seed 0
"""

import importlib.util
import os


def _train_config(arg):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")
    spec = importlib.util.spec_from_file_location("configs_simulation_train", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def get_config(arg=None):
    c = _train_config(arg)
    c.sample_params.ogg_encoders = ("vorbis",)
    c.selection.reuse_rir = False
    return c
