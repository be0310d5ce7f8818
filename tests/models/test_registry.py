"""Model registry and the summary command."""

import flax.linen as nn
import jax
import pytest

from urgent_jax import models
from urgent_jax.models import summary
from urgent_jax.models.bsrnn import BSRNN
from urgent_jax.models.flowse import FlowSE


def test_build_names_and_overrides():
    assert set(models.names()) == {"bsrnn", "bsrnn_causal", "flowse", "tfgridnet", "universa_ext"}
    assert models.build("bsrnn") == BSRNN()
    causal = models.build("bsrnn_causal", num_channels=16)
    assert causal.is_causal and causal.norm_type == "cLN" and causal.num_channels == 16
    assert models.build("flowse", **models.TINY["flowse"]).num_channels == 16
    assert isinstance(models.build("flowse"), FlowSE)
    with pytest.raises(KeyError, match="unknown model"):
        models.build("convtasnet")
    with pytest.raises(TypeError, match="unknown fields"):
        models.build("bsrnn", num_chanels=16)


def test_tfgridnet_is_imported_lazily(monkeypatch):
    model = models.build("tfgridnet", **models.TINY["tfgridnet"])
    assert type(model).__name__ == "TFGridNet"
    monkeypatch.setitem(models._MODELS, "tfgridnet", ("urgent_jax.models.not_written", "X", {}))
    with pytest.raises(ImportError, match="not available yet"):
        models.build("tfgridnet")


@pytest.mark.parametrize("name", ["bsrnn", "bsrnn_causal", "flowse", "tfgridnet"])
def test_tiny_models_initialise(name):
    model = models.build(name, **models.TINY[name])
    variables = jax.eval_shape(lambda k: models.init_variables(model, k, 16000), jax.random.key(0))
    assert 0 < summary.count(nn.unbox(variables)) < 2_000_000


def test_summary_command(capsys):
    assert summary.main(["bsrnn"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "total_params: 37800844"
    assert any(line.startswith("layers_5/time_rnn") for line in lines)
    summary.main(["flowse", "--num_channels=16", "--num_layers=2", "--sample_rate=16000"])
    out = capsys.readouterr().out
    assert "constants: 16" in out and out.strip().splitlines()[-1].startswith("total_params: ")


def test_summary_command_bad_overrides():
    # Before: --num_channels=abc crashed deep in the model (TypeError: int + str) and a misspelled
    # field raised a TypeError traceback; now both stop with a one-line error naming the flag.
    with pytest.raises(SystemExit, match="--num_channels=abc: expected int"):
        summary.main(["bsrnn", "--num_channels=abc"])
    with pytest.raises(SystemExit, match="unknown fields \\['num_chanels'\\]"):
        summary.main(["bsrnn", "--num_chanels=64"])


@pytest.mark.parametrize("name", ["bsrnn", "flowse"])
def test_parameters_carry_logical_axes(name):
    """Every parameter names one logical axis (or None) per dimension, from the STYLE.md set."""
    vocabulary = {"batch", "time", "freq", "band", "channel", "embed", "heads", "mlp", None}
    model = models.build(name, **models.TINY[name])
    variables = jax.eval_shape(lambda k: models.init_variables(model, k, 16000), jax.random.key(0))
    boxed = jax.tree_util.tree_leaves(
        variables["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned)
    )
    assert boxed and all(isinstance(p, nn.Partitioned) for p in boxed)
    for p in boxed:
        assert len(p.names) == p.value.ndim and set(p.names) <= vocabulary, p.names
