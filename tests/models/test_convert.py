"""Checkpoint conversion: parity with ESPnet's BSRNN and a PyTorch FlowSE reference, strictness.

The BSRNN reference is ESPnet's BSRNNSeparator between STFTEncoder/STFTDecoder, as the official
baseline (`baseline_code/models/bsrnn.py`) wires them; checkpoints are written with the official
Lightning key prefixes (`se_model.bsrnn.bsrnn.`, FlowSE `dnn.` plus torch-ema's `ema` entry).
Batches have equal lengths, where the reference's padding semantics do not matter.
"""

import importlib.util
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from espnet2.enh.decoder.stft_decoder import STFTDecoder
from espnet2.enh.encoder.stft_encoder import STFTEncoder
from espnet2.enh.separator.bsrnn_separator import BSRNNSeparator

from urgent_jax import models
from urgent_jax.models import convert
from urgent_jax.models.summary import count, variable_shapes

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-4  # relative L2 error


def load_flowse_reference():
    """experiments/benchmarks/flowse_reference.py (shared with the train-step benchmark)."""
    path = REPO / "experiments" / "benchmarks" / "flowse_reference.py"
    spec = importlib.util.spec_from_file_location("flowse_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def perturb_(module, scale=0.3):
    """Perturb every norm scale/shift and bias (norms start at ones/zeros and would test little)."""
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad and p.squeeze().dim() <= 1:
                p.add_(scale * torch.randn_like(p))


def save_lightning(path, state_dict, prefix, **extra):
    """A Lightning-style checkpoint whose hyper-parameters pickle a class unknown at load time."""
    package = types.ModuleType("baseline_code")
    config = types.ModuleType("baseline_code.config")
    config.Config = type("Config", (), {"__module__": "baseline_code.config"})
    sys.modules.update({"baseline_code": package, "baseline_code.config": config})
    try:
        cfg = config.Config()
        cfg.learning_rate = 1e-3
        ckpt = {
            "state_dict": {prefix + k: v for k, v in state_dict.items()},
            "hyper_parameters": {"cfg": cfg},
            "epoch": 3,
            **extra,
        }
        torch.save(ckpt, path)
    finally:
        del sys.modules["baseline_code"], sys.modules["baseline_code.config"]


def relative_error(ours, ref):
    return float(np.linalg.norm(np.asarray(ours) - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def espnet_bsrnn():
    torch.manual_seed(0)
    separator = BSRNNSeparator(
        481, num_spk=1, num_channels=16, num_layers=2, target_fs=48000, causal=False
    ).eval()
    perturb_(separator)
    return separator


def espnet_enhance(separator, x, fs):
    encoder = STFTEncoder(n_fft=960, hop_length=480, use_builtin_complex=True, default_fs=48000)
    decoder = STFTDecoder(n_fft=960, hop_length=480, default_fs=48000)
    lengths = torch.full((x.shape[0],), x.shape[1])
    with torch.no_grad():
        spec, flens = encoder(torch.from_numpy(x), lengths, fs=fs)
        enhanced = separator(spec, flens)[0][0]
        return decoder(enhanced, lengths, fs=fs)[0].numpy()


def test_parameter_counts_match_the_references():
    """Official sizes: ours (shapes only) against the PyTorch modules built on the meta device."""
    with torch.device("meta"):
        separator = BSRNNSeparator(481, num_spk=1, num_channels=196, num_layers=6, causal=False)
        flow_net = load_flowse_reference().FlowSEBSRNN(num_channel=384, num_layer=6)
    for name, reference in (("bsrnn", separator), ("flowse", flow_net)):
        expected = sum(p.numel() for p in reference.parameters())
        assert count(variable_shapes(models.build(name))) == expected, name
    assert expected == 103_245_488 and abs(expected - 103.2e6) / 103.2e6 < 0.01  # REFERENCE §3.3


def test_bsrnn_lightning_checkpoint_parity(espnet_bsrnn, tmp_path, rng):
    ckpt = tmp_path / "best.ckpt"
    save_lightning(ckpt, espnet_bsrnn.state_dict(), "se_model.bsrnn.")  # -> se_model.bsrnn.bsrnn.*
    assert convert.main(["--from", "espnet_bsrnn", str(ckpt), "--out", str(tmp_path / "out")]) == 0
    model, variables = convert.load_converted(tmp_path / "out")
    plain = models.load_variables(tmp_path / "out")
    assert jax.tree_util.tree_all(jax.tree.map(np.array_equal, plain, variables))
    assert model.num_channels == 16 and model.num_layers == 2 and not model.is_causal
    assert count(variables) == sum(p.numel() for p in espnet_bsrnn.parameters())
    for fs in (16000, 48000):
        n = fs // 5
        x = rng.standard_normal((2, n)).astype(np.float32)
        ref = espnet_enhance(espnet_bsrnn, x, fs)
        lengths = jnp.array([n, n])
        ours = jax.jit(model.apply, static_argnames="sample_rate")(
            variables, x, lengths, sample_rate=fs
        )
        assert relative_error(ours, ref) <= TOLERANCE, fs


def test_bsrnn_gradients_match_espnet(tmp_path, rng):
    """Parameter gradients of <output, random cotangent> equal ESPnet's (custom LSTM VJP, norms)."""
    torch.manual_seed(3)
    separator = BSRNNSeparator(481, num_channels=8, num_layers=1, causal=False)
    perturb_(separator)
    torch.save(separator.state_dict(), tmp_path / "sep.pt")
    model, variables, _ = convert.convert_checkpoint("espnet_bsrnn", tmp_path / "sep.pt")
    fs, n = 8000, 1200
    x = rng.standard_normal((2, n)).astype(np.float32)
    cotangent = rng.standard_normal((2, n)).astype(np.float32)
    separator.zero_grad()
    encoder = STFTEncoder(n_fft=960, hop_length=480, use_builtin_complex=True, default_fs=48000)
    decoder = STFTDecoder(n_fft=960, hop_length=480, default_fs=48000)
    lengths = torch.full((2,), n)
    spec, flens = encoder(torch.from_numpy(x), lengths, fs=fs)
    out = decoder(separator(spec, flens)[0][0], lengths, fs=fs)[0]
    (out * torch.from_numpy(cotangent)).sum().backward()
    ref = {  # bands above 4 kHz are not used at 8 kHz: no gradient
        k: np.zeros(p.shape, np.float32) if p.grad is None else p.grad.numpy()
        for k, p in separator.named_parameters()
    }
    ref = convert.convert_state("espnet_bsrnn", convert.strip_prefix(ref, convert.BSRNN_TOP), model)

    def loss(params):
        out = model.apply({"params": params}, x, jnp.array([n, n]), sample_rate=fs)
        return jnp.sum(out * cotangent)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    flat_ref = dict(jax.tree_util.tree_flatten_with_path(ref["params"])[0])
    for path, grad in jax.tree_util.tree_flatten_with_path(grads)[0]:
        expected = flat_ref[path]
        used = np.any(expected.reshape(expected.shape[0], -1) != 0, axis=1)  # per stacked band
        if expected.ndim > 1 and not np.all(used):  # a band group partly above 4 kHz
            assert not np.any(grad[~used]), jax.tree_util.keystr(path)
            grad, expected = grad[used], expected[used]
        if not np.any(expected):
            assert not np.any(grad), jax.tree_util.keystr(path)
            continue
        assert relative_error(grad, expected) <= 1e-4, jax.tree_util.keystr(path)


def test_causal_bsrnn_plain_state_dict_parity(tmp_path, rng):
    torch.manual_seed(1)
    separator = BSRNNSeparator(
        481, num_channels=16, num_layers=1, causal=True, norm_type="cLN"
    ).eval()
    perturb_(separator)
    torch.save(separator.state_dict(), tmp_path / "sep.pt")  # keys bsrnn.*
    model, variables, (_, overrides) = convert.convert_checkpoint(
        "espnet_bsrnn", tmp_path / "sep.pt", "bsrnn_causal"
    )
    assert overrides["is_causal"] and overrides["norm_type"] == "cLN"
    fs, n = 8000, 1600
    x = rng.standard_normal((1, n)).astype(np.float32)
    ours = jax.jit(lambda v, a: model.apply(v, a, jnp.array([n]), sample_rate=fs))(variables, x)
    assert relative_error(ours, espnet_enhance(separator, x, fs)) <= TOLERANCE


def test_conversion_is_strict(espnet_bsrnn):
    state = {k: v.numpy() for k, v in espnet_bsrnn.state_dict().items()}
    state = convert.strip_prefix(state, convert.BSRNN_TOP)
    model = models.build("bsrnn", **convert.infer_overrides("espnet_bsrnn", state))
    convert.convert_state("espnet_bsrnn", state, model)  # complete: no error

    missing = dict(state)
    del missing["rnn_freq.1.bias_hh_l0_reverse"]
    with pytest.raises(
        ValueError, match=r"missing reference keys \(1\).*rnn_freq.1.bias_hh_l0_rev"
    ):
        convert.convert_state("espnet_bsrnn", missing, model)
    extra = {**state, "mask_decoder.mlp_mask.99.0.weight": np.zeros(16, np.float32)}
    with pytest.raises(ValueError, match=r"unmatched reference keys \(1\).*mlp_mask.99"):
        convert.convert_state("espnet_bsrnn", extra, model)
    wrong = {**state, "fc_time.0.weight": np.zeros((16, 32), np.float32)}
    with pytest.raises(ValueError, match=r"shape mismatches \(1\).*fc_time.0.weight"):
        convert.convert_state("espnet_bsrnn", wrong, model)
    with pytest.raises(ValueError, match="keys outside the model"):
        convert.strip_prefix(
            {"se_model.bsrnn.bsrnn.band_split.norm.0.weight": 0, "other.w": 0}, convert.BSRNN_TOP
        )


def test_flowse_lightning_checkpoint_with_ema_parity(tmp_path, rng):
    reference = load_flowse_reference()
    torch.manual_seed(2)
    net = reference.FlowSEBSRNN(num_channel=16, num_layer=2).eval()
    perturb_(net)
    # torch-ema 0.3 keeps every parameter (the fixed W included) in parameters() order
    shadow = [p.detach() + 0.05 * torch.randn_like(p) for p in net.parameters()]
    ema = {"decay": 0.999, "num_updates": 10, "shadow_params": shadow, "collected_params": None}
    save_lightning(tmp_path / "flow.ckpt", net.state_dict(), "dnn.", ema=ema)
    out = tmp_path / "out"
    assert convert.main(["--from", "flowse", str(tmp_path / "flow.ckpt"), "--out", str(out)]) == 0
    model, variables = convert.load_converted(out)
    assert count(variables) == sum(p.numel() for p in net.parameters())
    raw = convert.convert_checkpoint("flowse", tmp_path / "flow.ckpt", use_ema=False)[1]
    np.testing.assert_array_equal(
        raw["constants"]["time_embeddings_1"]["W"], net.t_cond[1].W.detach().numpy()
    )
    with torch.no_grad():
        for p, s in zip(net.parameters(), shadow):
            p.copy_(s)  # the reference evaluates with the EMA weights
    np.testing.assert_array_equal(
        variables["constants"]["time_embeddings_1"]["W"], net.t_cond[1].W.numpy()
    )

    t = np.array([0.2, 0.9], np.float32)
    for fs, frames in ((16000, 20), (48000, 6)):  # 48 kHz: all 48 bands, 769 bins (short input)
        shape = (2, model.frontend.num_bins(fs), frames)
        x_t = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
        y = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
        x_t, y = 0.3 * x_t, 0.3 * y
        with torch.no_grad():
            dnn_input = torch.from_numpy(np.stack([x_t, y], axis=1))
            ref = -net(dnn_input, torch.from_numpy(t))[:, 0].numpy()
        field = jax.jit(model.apply)(
            variables, x_t.transpose(0, 2, 1), y.transpose(0, 2, 1), t, jnp.array([frames, frames])
        )
        assert relative_error(np.asarray(field).transpose(0, 2, 1), ref) <= TOLERANCE, fs


def test_cli_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match=r"nosuch\.ckpt: checkpoint file not found"):
        convert.main(["--from", "espnet_bsrnn", str(tmp_path / "nosuch.ckpt"), "--out",
                      str(tmp_path / "out")])  # fmt: skip
    assert not (tmp_path / "out").exists()
