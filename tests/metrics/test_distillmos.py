"""Distill-MOS: torch-free checkpoint reader == torch.load; flax model == distillmos torch model.

The reference is `distillmos.ConvTransformerSQAModel` (shipped weights, eval mode) on NOIZEUS
speech. Its module imports torchaudio only for file loading and resampling, so a stub stands in for
it and the torch model is fed 16 kHz audio directly. For 8 / 48 kHz input the torch model gets the
audio resampled to 16 kHz as the reference does it (torchaudio `Resample` defaults), by the numpy
implementation of torchaudio's algorithm in tests/audio/test_resample.py, one file at a time.
"""

from __future__ import annotations

import functools
import pickle
import sys
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.audio.test_resample import torchaudio_resample_reference
from urgent_jax.audio.resample import resample_numpy
from urgent_jax.metrics import distillmos as dm
from urgent_jax.metrics import torch_checkpoint
from urgent_jax.metrics.torch_checkpoint import load_torch_checkpoint, load_torch_state_dict

TOL_MOS = 0.01  # |delta MOS| vs the torch model (issue requirement)
TOL_SAME = 1e-4  # same jax computation batched differently


@pytest.fixture(scope="module")
def checkpoint():
    return dm.default_checkpoint_path()


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("URGENT_JAX_CACHE", str(tmp_path_factory.mktemp("cache")))
        return dm.load_params()


@pytest.fixture(scope="module")
def torch_model():
    # distillmos.sqa imports torchaudio (not installed) only for file I/O and resampling: a stub is
    # enough, present only while the module is imported.
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "torchaudio", types.ModuleType("torchaudio"))
        from distillmos.sqa import ConvTransformerSQAModel

    return ConvTransformerSQAModel(load_weights=True).eval()


def torch_mos(model, x: np.ndarray) -> np.ndarray:
    """Reference MOS of equal-length 16 kHz clips [B, T]."""
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()[:, 0]


score = jax.jit(dm.distill_mos, static_argnames=("sample_rate", "crops_per_call"))


def pad_batch(clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(c) for c in clips], np.int32)
    batch = np.zeros((len(clips), lengths.max()), np.float32)
    for i, c in enumerate(clips):
        batch[i, : len(c)] = c
    return batch, lengths


# --- checkpoint reader ---------------------------------------------------------------------------


def test_reader_equals_torch_load(checkpoint):
    ref = torch.load(checkpoint, map_location="cpu", weights_only=True)
    ours = load_torch_state_dict(checkpoint)
    assert list(ours) == list(ref["model"])
    for name, tensor in ref["model"].items():
        expected = tensor.numpy()
        assert ours[name].dtype == expected.dtype, name
        assert ours[name].shape == expected.shape, name
        np.testing.assert_array_equal(ours[name], expected, err_msg=name)
    assert load_torch_checkpoint(checkpoint)["step"] == ref["step"]


def test_reader_handles_views_dtypes_and_shared_storage(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "transposed": base.t(),  # strides (1, 6)
        "offset": base[1:, 2:5],  # storage offset 8, shared storage
        "half": torch.linspace(-2, 2, 7, dtype=torch.float16),
        "bf16": torch.linspace(-2, 2, 7, dtype=torch.bfloat16),
        "double": torch.randn(3, dtype=torch.float64),
        "long": torch.tensor([-(2**40), 3]),
        "bool": torch.tensor([True, False]),
        "int8": torch.tensor([-5, 7], dtype=torch.int8),
        "scalar": torch.tensor(1.5),
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.ones(2)),
    }
    path = tmp_path / "views.pt"
    torch.save(state, path)
    ours = load_torch_state_dict(path)
    for name, tensor in state.items():
        expected = tensor.detach().float().numpy() if name == "bf16" else tensor.detach().numpy()
        got = ours[name].astype(np.float32) if name == "bf16" else ours[name]
        assert got.shape == expected.shape, name
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_reader_refuses_foreign_globals(tmp_path):
    payload = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."  # os.system("true")
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", payload)
    with pytest.raises(pickle.UnpicklingError, match="refusing global os.system"):
        load_torch_checkpoint(path)
    (tmp_path / "plain.txt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a zip"):
        load_torch_checkpoint(tmp_path / "plain.txt")


# --- weights: conversion, cache, location -------------------------------------------------------


def test_load_params_caches_the_conversion(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("URGENT_JAX_CACHE", str(tmp_path))
    first = dm.load_params(checkpoint)
    cached = list(tmp_path.glob("distillmos_*.npz"))
    assert len(cached) == 1

    def no_torch_read(*args, **kwargs):
        raise AssertionError("the second load must read the .npz cache")

    monkeypatch.setattr(torch_checkpoint, "load_torch_state_dict", no_torch_read)
    second = dm.load_params()
    jax.tree_util.tree_map(np.testing.assert_array_equal, first, second)
    assert set(first) == {"params", "batch_stats", "buffers"}


def test_missing_weights_give_the_install_hint(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="pip install --no-deps distillmos==0.9.1"):
        dm.load_params(tmp_path / "nope.pt")
    monkeypatch.setattr(dm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps distillmos==0.9.1"):
        dm.default_checkpoint_path()


# --- crops --------------------------------------------------------------------------------------


def test_crop_starts_equal_the_reference_float64_rule():
    # Every 31st overlength up to 25 s, plus ones where float64 linspace makes int(c * O) one below
    # the exact k O / (n - 1) (the case the integer arithmetic must correct).
    overlengths = np.concatenate([np.arange(0, 400_000, 31), [128052, 128115, 0, 1, 16000, 16001]])
    lengths = overlengths + dm.CROP_SAMPLES
    max_crops = dm.num_crops(int(lengths.max()))
    starts, valid = jax.jit(dm.crop_starts, static_argnums=1)(lengths, max_crops)
    starts, valid = np.asarray(starts), np.asarray(valid)
    mismatches = corrected = 0
    for i, o in enumerate(overlengths):
        n = int(np.ceil(o / dm.CROP_HOP_SAMPLES)) + 1  # reference sqa.py
        expected = [int(c * o) for c in list(np.linspace(0, 1, n))]
        assert valid[i].sum() == n
        mismatches += starts[i, :n].tolist() != expected
        corrected += expected != [k * o // max(n - 1, 1) for k in range(n)]
    assert mismatches == 0
    assert corrected > 10
    assert dm.num_crops(1000) == 1 and dm.num_crops(dm.CROP_SAMPLES + 1) == 2


# --- network parity ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clips(noizeus_pair):
    clean, noisy, fs = noizeus_pair
    short, long = 4 * fs, int(9.5 * fs)  # 1 crop (zero-padded) and 3 crops of 7.68 s
    return {
        "short": np.stack([clean[:short], noisy[:short]]),
        "long": np.stack([clean[:long], noisy[:long]]),
    }


@pytest.fixture(scope="module")
def reference_16k(torch_model, clips):
    return {name: torch_mos(torch_model, x) for name, x in clips.items()}


@pytest.fixture(scope="module")
def padded_16k(params, clips):
    """Scores of one padded batch: two 4 s clips (one crop each, two masked) and two 9.5 s clips."""
    batch, lengths = pad_batch([*clips["short"], *clips["long"]])
    return np.asarray(score(batch, lengths, 16000, params))


def test_padded_batch_matches_torch_at_16k(padded_16k, reference_16k):
    expected = np.concatenate([reference_16k["short"], reference_16k["long"]])
    assert np.all((expected > 1) & (expected < 5))
    assert expected[0] > expected[1] + 0.5 and expected[2] > expected[3] + 0.5  # clean > noisy
    np.testing.assert_allclose(padded_16k, expected, rtol=0, atol=TOL_MOS)


def test_short_batch_matches_torch_and_the_padded_batch(params, clips, reference_16k, padded_16k):
    # Padded length < 7.68 s: the CNN skips the all-zero frames; same scores as in the longer batch.
    lengths = np.full(2, clips["short"].shape[1])
    alone = np.asarray(score(clips["short"], lengths, 16000, params))
    np.testing.assert_allclose(alone, reference_16k["short"], rtol=0, atol=TOL_MOS)
    np.testing.assert_allclose(alone, padded_16k[:2], rtol=0, atol=TOL_SAME)
    for crops_per_call in (1, 2):  # one step per crop (the CPU default) and all crops in one step
        chunked = score(clips["short"], lengths, 16000, params, crops_per_call=crops_per_call)
        np.testing.assert_allclose(chunked, alone, rtol=0, atol=TOL_SAME)


@pytest.mark.parametrize("sample_rate", [8000, 48000])
def test_other_rates_match_torch_on_torchaudio_resampled_audio(
    params, torch_model, noizeus_pair, sample_rate
):
    # The reference resamples each file to 16 kHz with torchaudio's Resample; `distill_mos` must
    # reproduce that resampler (with our Kaiser resampler this test was 0.116 / 0.070 MOS off).
    _, noisy, fs = noizeus_pair
    clip = resample_numpy(noisy[: 3 * fs], fs, sample_rate)  # any 8 / 48 kHz signal will do
    # A padded batch: the full clip and its first 2 s, padded with noise (never part of a score:
    # the reference resamples the 2 s file alone, with zeros past its end).
    short = clip[: 2 * sample_rate]
    batch, lengths = pad_batch([clip, short])
    batch[1, len(short) :] = 0.5 * np.random.default_rng(0).standard_normal(len(clip) - len(short))
    got = np.asarray(score(batch, lengths, sample_rate, params))
    expected = [
        torch_mos(torch_model, torchaudio_resample_reference(c, sample_rate, fs)[None])[0]
        for c in (clip, short)
    ]
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL_MOS)


# --- flax module --------------------------------------------------------------------------------


def _narrow_model(num_layers: int):
    """A narrow copy of the architecture (same crop length and frame count), two crops, and random
    variables in the shapes of init (compiling init's random initialisers is slow on CPU)."""
    model = dm.DistillMOS(
        cnn_channels=(4, 4, 4, 4, 4, 8), dim=16, num_heads=2, num_layers=num_layers
    )
    crops = jax.random.normal(jax.random.key(0), (2, dm.CROP_SAMPLES)) * 0.1
    shapes = jax.eval_shape(model.init, jax.random.key(1), crops)
    assert set(shapes) == {"params", "batch_stats", "buffers"}
    rng = np.random.default_rng(0)
    variables = jax.tree_util.tree_map_with_path(
        lambda path, s: jnp.asarray(
            (1.0 + rng.random(s.shape) if path[-1].key == "var" else rng.normal(0, 0.1, s.shape)),
            jnp.float32,
        ),
        shapes,
    )
    return model, crops, variables


def test_module_trains_with_batch_statistics():
    model, crops, variables = _narrow_model(num_layers=1)

    def loss(p):
        q, updates = model.apply(
            {**variables, "params": p}, crops, train=True, mutable=["batch_stats"]
        )
        return jnp.mean((q - 0.5) ** 2), updates

    (value, updates), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
    assert jax.tree_util.tree_structure(updates["batch_stats"]) == jax.tree_util.tree_structure(
        variables["batch_stats"]
    )
    emb = model.apply(variables, crops, method=dm.DistillMOS.embed)
    assert emb.shape == (2, 384, 16)


@pytest.mark.parametrize("train", [False, True])
def test_embed_output_frames_equal_the_leading_frames(train):
    """embed(output_frames=n) == embed()[:, :n]; without batch statistics the last layer computes
    only those frames, the earlier ones all (they are the last layer's keys and values)."""
    model, crops, variables = _narrow_model(num_layers=2)
    embed = functools.partial(model.apply, variables, crops, train, method=dm.DistillMOS.embed)
    if train:
        embed = functools.partial(embed, mutable=["batch_stats"])
    full, head = embed(), embed(output_frames=150)
    if train:
        (full, _), (head, _) = full, head
    assert head.shape == (2, 150, 16)
    np.testing.assert_allclose(head, full[:, :150], rtol=1e-5, atol=1e-5)


def _attention_numpy(q, k, v, key_mask, bias, drop_mask):
    """softmax(q.k / sqrt(Dh) + bias) over unmasked keys, times a dropout mask, then v (float64)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))  # [N, T, H, Dh or Dv]
    scores = np.einsum("nqhd,nkhd->nhqk", q, k) / np.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias
    scores = np.where(key_mask[:, None, None, :], scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights = weights / weights.sum(-1, keepdims=True) * drop_mask
    out = np.einsum("nhqk,nkhd->nqhd", weights, v)
    return out.reshape(*out.shape[:2], -1)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("with_dropout", [False, True])
@pytest.mark.parametrize("dv", [4, dm.ONES_COLUMN_MAX_DIM + 8])  # softmax sums: both forms
def test_dot_product_attention_matches_numpy(with_bias, with_dropout, dv):
    n, t, h, dh = 2, 7, 3, 5
    rng = np.random.default_rng(0)
    q, k = (rng.standard_normal((n, t, h, dh)).astype(np.float32) for _ in range(2))
    v = rng.standard_normal((n, t, h, dv)).astype(np.float32)
    key_mask = np.arange(t)[None] < np.array([[t], [4]])  # second example: 3 padded keys
    bias = rng.standard_normal((n, h, t, t)).astype(np.float32) if with_bias else None
    drop_mask = np.ones((n, h, t, t), np.float32)
    if with_dropout:
        drop_mask = (rng.uniform(size=drop_mask.shape) > 0.3) / np.float32(0.7)
    out = dm.dot_product_attention(
        jnp.asarray(q),
        jnp.asarray(k),
        jnp.asarray(v),
        key_mask=jnp.asarray(key_mask),
        bias=None if bias is None else jnp.asarray(bias),
        dropout=(lambda w: w * drop_mask) if with_dropout else None,
        precision="highest",
    )
    ref = _attention_numpy(q, k, v, key_mask, bias, drop_mask)
    assert out.shape == (n, t, h * dv)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5)
