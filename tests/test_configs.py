"""Every experiment config loads, names a registered model whose fields accept its kwargs, and
locks: a misspelt key fails."""

from __future__ import annotations

import argparse
import runpy
from pathlib import Path

import pytest

from urgent_jax import models
from urgent_jax.train.config_file import load_config
from urgent_jax.train.optim import make_optimizer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VARIANTS = {
    "se/bsrnn.py": ("baseline", "dm", "tiny", "smoke"),
    "se/flowse.py": ("baseline", "dm", "tiny", "smoke"),
    "se/tfgridnet.py": ("urgent25", "urgent24", "tiny", "smoke"),
}


def _load(rel: str):
    return argparse.Namespace(**runpy.run_path(str(CONFIGS / rel)))


@pytest.mark.parametrize("rel,variant", [(r, v) for r, vs in VARIANTS.items() for v in vs])
def test_config_builds_model_and_optimizer(rel, variant):
    config = _load(rel).get_config(variant)
    model = models.build(config.model.name, **config.model.kwargs.to_dict())
    assert model is not None
    optim = {**config.optim.to_dict(), "steps_per_epoch": config.optim.steps_per_epoch or 10}
    tx, schedule = make_optimizer(**optim)
    assert float(schedule(0)) >= 0.0
    assert config.data.kind in ("presimulated", "dynamic_mixing")
    assert "--config" in _load(rel).__doc__ and variant in _load(rel).__doc__


def test_reference_settings():
    base = _load("se/bsrnn.py").get_config("baseline")
    assert (base.model.kwargs.num_channels, base.model.kwargs.num_layers) == (196, 6)
    assert (base.optim.lr, base.optim.gamma, base.optim.clip_norm, base.data.batch_size) == (1e-3, 0.85, 0.5, 4)
    assert base.data.max_num_samples == 96000 and base.train.seed == 2024
    flow = _load("se/flowse.py").get_config("baseline")
    assert (flow.model.kwargs.num_channels, flow.optim.lr, flow.data.batch_size, flow.train.seed) == (
        384, 1e-4, 2, 20250)
    assert flow.train.use_ema


def test_unknown_variant_and_locked_keys():
    with pytest.raises(ValueError, match="unknown variant"):
        _load("se/bsrnn.py").get_config("huge")
    config = _load("se/bsrnn.py").get_config("smoke")
    config.lock()
    with pytest.raises(AttributeError):
        config.optim.lrate = 1.0


def test_load_config_by_spec_string(tmp_path):
    assert load_config("configs/se/bsrnn.py:smoke").model.kwargs.num_channels == 8
    assert load_config("configs/se/flowse.py").model.name == "flowse"  # default variant
    with pytest.raises(FileNotFoundError, match="nowhere.py"):
        load_config(str(tmp_path / "nowhere.py") + ":x")
