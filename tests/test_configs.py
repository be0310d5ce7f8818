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


SQA_VARIANTS = ("mos_only", "5metric", "22metric", "distillmos_ft", "tiny", "smoke")


@pytest.mark.parametrize("variant", SQA_VARIANTS)
def test_sqa_config_builds_model_and_optimizer(variant):
    module = _load("sqa/universa_ext.py")
    config = module.get_config(variant)
    model = models.build(config.model.name, **config.model.kwargs.to_dict())
    assert len(model.metric_names) == len(model.metric_ranges)
    if config.model.loss_weights is not None:
        assert len(config.model.loss_weights) == len(model.metric_names)
    tx, schedule = make_optimizer(**{**config.optim.to_dict(), "total_steps": 100})
    assert float(schedule(0)) >= 0.0
    assert variant in module.__doc__ and "--config" in module.__doc__


def test_sqa_reference_settings():
    """REFERENCE.md §3.7: metric sets, ranges, optimiser, batching, seed, frozen WavLM."""
    module = _load("sqa/universa_ext.py")
    five = module.get_config("5metric")
    assert five.model.kwargs.metric_names == ("mos", "dnsmos_ovrl", "scoreq", "utmos", "nisqa_mos")
    assert all(r == (1.0, 5.0) for r in five.model.kwargs.metric_ranges)
    assert five.model.kwargs.frontend == "wavlm" and five.model.freeze_frontend
    assert (five.model.kwargs.d_model, five.model.kwargs.num_layers, five.model.kwargs.num_heads,
            five.model.kwargs.ffn_dim, five.model.kwargs.dropout) == (768, 6, 8, 2048, 0.1)
    assert (five.optim.lr, five.optim.weight_decay, five.optim.clip_norm, five.optim.warmup_steps,
            five.optim.schedule) == (3e-5, 0.01, 1.0, 2500, "linear")
    assert (five.data.max_total_samples, five.data.max_batch_size, five.eval.max_total_samples,
            five.train.seed, five.train.num_epochs, five.train.eval_every) == (
        9_600_000, 128, 4_800_000, 42, 5, 1000)
    full = module.get_config("22metric").model.kwargs
    ranges = dict(zip(full.metric_names, full.metric_ranges))
    assert len(full.metric_names) == 22
    assert ranges["lps"] == (0.0, 1.0) and ranges["spksim"] == (-1.0, 1.0)
    assert ranges["mcd"] == (0.0, float("inf")) and ranges["sdr"] == (float("-inf"), float("inf"))
    assert ranges["pesq"] == (1.0, 4.5) and ranges["estoi"] == (0.0, 1.0)
    assert module.get_config("mos_only").train.num_epochs == 20
