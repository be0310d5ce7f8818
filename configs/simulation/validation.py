"""Simulation settings of the official validation set (conf/simulation_validation.yaml): the training
settings with Vorbis as the only OGG encoder and no RIR reuse.

    python -m urgent_jax.simulation.generate_params --sources data/validation_sources \
        --out simulation_validation/log/meta.tsv --config configs/simulation/validation.py --seed 0
"""

import os
import runpy


def _train_config(arg):
    """configs/simulation/train.py's config (configs are loaded by path, not imported)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")
    return runpy.run_path(path)["get_config"](arg)


def get_config(arg=None):
    c = _train_config(arg)
    c.sample_params.ogg_encoders = ("vorbis",)
    c.selection.reuse_rir = False
    return c
