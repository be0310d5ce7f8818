"""Uni-VERSA-Ext regressor: range activation, front-ends (shapes, jit, grads), masking, weights."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from urgent_jax import models
from urgent_jax.models import sqa

INF = math.inf
RANGES = ((1.0, 5.0), (0.0, INF), (-INF, 4.5), (-INF, INF))
NAMES = ("mos", "mcd", "capped", "sdr")
HEAD = dict(d_model=16, num_layers=1, num_heads=2, ffn_dim=32)
TINY_WAVLM = (
    ("hidden_size", 16),
    ("num_hidden_layers", 2),
    ("num_attention_heads", 2),
    ("intermediate_size", 32),
    ("conv_dim", (8, 8, 8)),
    ("conv_kernel", (10, 3, 3)),
    ("conv_stride", (5, 2, 2)),
    ("num_conv_pos_embeddings", 8),
    ("num_conv_pos_embedding_groups", 2),
)
FRONTENDS = {
    "wavlm": TINY_WAVLM,
    "conv": (("channels", 8), ("num_layers", 2), ("n_mels", 16)),
    "distillmos": (),
}


def _softplus(x):
    return np.logaddexp(0.0, x)


def test_range_activation_matches_numpy():
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32) * 4
    got = np.asarray(sqa.range_activation(jnp.asarray(x), RANGES))
    want = np.stack(
        [
            1 + 4 / (1 + np.exp(-x[:, 0])),
            0 + _softplus(x[:, 1] - 0),
            4.5 - _softplus(4.5 - x[:, 2]),
            x[:, 3],
        ],
        -1,
    )
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert (got[:, 0] > 1).all() and (got[:, 0] < 5).all() and (got[:, 1] >= 0).all()
    grads = jax.grad(lambda v: sqa.range_activation(v, RANGES).sum())(jnp.asarray(x))
    assert np.isfinite(grads).all()


def _model(frontend, **kw):
    return sqa.UniVersaExt(
        metric_names=NAMES,
        metric_ranges=RANGES,
        frontend=frontend,
        frontend_kwargs=FRONTENDS[frontend],
        **{**HEAD, **kw},
    )


def _check_model(frontend, variables, num_samples):
    """Shapes, jit, key-padding mask (padded samples change nothing), finite gradients, frozen
    WavLM front-end (stop_gradient) and, for the conv front-end, independence from the batch's
    padding."""
    rng = np.random.default_rng(1)
    audio = jnp.asarray(rng.standard_normal((2, num_samples)), jnp.float32)
    short = num_samples * 5 // 8
    lengths = jnp.array([num_samples, short], jnp.int32)
    model = _model(frontend)
    noisy_pad = audio.at[1, short:].set(10.0)
    others = {k: v for k, v in variables.items() if k != "params"}

    @jax.jit
    def run(params, key):
        def loss(p, frozen=False):
            if frozen:
                p = {**p, "frontend": jax.lax.stop_gradient(p["frontend"])}
            rngs = {"dropout": key}
            out = model.apply({"params": p, **others}, audio, lengths, train=True, rngs=rngs)
            return jnp.sum(out**2)

        apply = lambda a, n=lengths: model.apply({"params": params, **others}, a, n)  # noqa: E731
        alone = apply(audio[1:, :short], lengths[1:]) if frontend == "conv" else None
        frozen = jax.grad(loss)(params, True) if frontend == "wavlm" else None
        return apply(audio), apply(noisy_pad), alone, jax.grad(loss)(params), frozen

    pred, pred_pad, alone, grads, frozen = run(variables["params"], jax.random.key(2))
    assert pred.shape == (2, 4) and np.isfinite(pred).all()
    assert (pred[:, 0] > 1).all() and (pred[:, 0] < 5).all() and (pred[:, 1] >= 0).all()
    np.testing.assert_allclose(pred_pad, pred, rtol=1e-5, atol=1e-5)
    if frontend == "conv":  # per-frame LayerNorm: the amount of padding does not matter either
        np.testing.assert_allclose(alone, pred[1:], rtol=1e-5, atol=1e-5)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(np.isfinite(g).all() for g in leaves)
    front = jax.tree_util.tree_leaves(grads["frontend"])
    assert front and any(np.abs(g).max() > 0 for g in front)
    if frontend == "wavlm":
        assert np.abs(grads["layer_weights"]).max() > 0
        assert not any(np.any(g) for g in jax.tree_util.tree_leaves(frozen["frontend"]))
        np.testing.assert_allclose(frozen["head"]["kernel"], grads["head"]["kernel"], rtol=1e-5)


@pytest.mark.parametrize("frontend", ["wavlm", "conv"])
def test_shapes_jit_grads_and_padding(frontend):
    model = _model(frontend)
    audio, lengths = jnp.zeros((2, 6000)), jnp.array([6000, 6000])
    shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), audio, lengths))
    assert "frontend" in shapes["params"]
    assert ("layer_weights" in shapes["params"]) == (frontend == "wavlm")
    if frontend == "wavlm":
        assert shapes["params"]["layer_weights"].shape == (3,)  # L + 1 hidden states
    _check_model(frontend, _random_like(shapes), 6000)


def test_make_predict_chunks_equal_one_whole_batch_call():
    # 3 examples of different lengths: chunk 2 leaves a remainder step; each example must still
    # see the batch's padded length and its own mask, exactly as in model.apply on the batch.
    model = _model("wavlm")
    rng = np.random.default_rng(3)
    audio = jnp.asarray(rng.standard_normal((3, 6000)), jnp.float32)
    lengths = jnp.array([6000, 3500, 4700], jnp.int32)
    shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), audio, lengths))
    variables = _random_like(shapes)
    whole = np.asarray(jax.jit(model.apply)(variables, audio, lengths))
    other = audio.at[2].set(audio[0])
    for chunk in (1, 2):
        predict = sqa.make_predict(model, chunk)
        got = np.asarray(predict(variables, audio, lengths))
        assert got.shape == (3, len(NAMES))
        np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-5, err_msg=f"chunk {chunk}")
        # a different example in another row must change only that row
        changed = np.asarray(predict(variables, other, lengths))
        np.testing.assert_allclose(changed[:2], whole[:2], rtol=1e-5, atol=1e-5)
        assert np.abs(changed[2] - whole[2]).max() > 1e-4


def test_frontend_grad_scale():
    x = jnp.arange(3.0)
    np.testing.assert_array_equal(sqa._scale_gradient(x, 0.1), x)
    np.testing.assert_allclose(jax.grad(lambda v: sqa._scale_gradient(v, 0.1).sum())(x), 0.1)


def _random_like(tree, seed=0):
    """Random stand-ins for initialised values (LayerNorm scales 1): no init compile needed."""
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(tree)
    out = {
        k: jnp.ones(v.shape) if k[-1] == "scale" else jnp.asarray(0.1 * rng.normal(size=v.shape))
        for k, v in flat.items()
    }
    return traverse_util.unflatten_dict(out)


def test_distillmos_frontend_with_shipped_weights():
    """The shipped weights fit the model's "frontend" subtrees; shapes, jit, masking, grads."""
    from urgent_jax.metrics import distillmos

    try:
        distillmos.default_checkpoint_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    loaded = sqa.load_frontend("distillmos")
    assert set(loaded) == {"params", "batch_stats", "buffers"}
    model = _model("distillmos")
    audio, lengths = jnp.zeros((2, 640)), jnp.array([640, 640])
    shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), audio, lengths))
    variables = _random_like(shapes)
    for collection, tree in loaded.items():
        want = jax.tree_util.tree_map(lambda x: x.shape, shapes[collection]["frontend"])
        assert jax.tree_util.tree_map(lambda x: x.shape, tree) == want, collection
        variables[collection]["frontend"] = tree
    _check_model("distillmos", variables, 640)


def test_wavlm_frontend_loads_hf_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    kwargs = dict(TINY_WAVLM)
    config = transformers.WavLMConfig(**{**kwargs, "conv_dim": list(kwargs["conv_dim"])})
    transformers.WavLMModel(config).save_pretrained(tmp_path)
    frontend_kwargs = sqa.wavlm_frontend_kwargs(tmp_path)
    model = sqa.UniVersaExt(
        metric_names=NAMES, metric_ranges=RANGES, frontend_kwargs=frontend_kwargs, **HEAD
    )
    audio, lengths = jnp.zeros((1, 4000)), jnp.array([4000])
    shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), audio, lengths))
    loaded = sqa.load_frontend("wavlm", tmp_path)
    want = jax.tree_util.tree_map(lambda x: x.shape, shapes["params"]["frontend"])
    assert jax.tree_util.tree_map(lambda x: x.shape, loaded["params"]) == want


def test_registry_builds_universa_ext():
    model = models.build("universa_ext", **models.TINY["universa_ext"])
    assert isinstance(model, sqa.UniVersaExt)
    variables = jax.eval_shape(lambda k: models.init_variables(model, k, 16000), jax.random.key(0))
    assert "frontend" in variables["params"]
    vocabulary = {"batch", "time", "freq", "band", "channel", "embed", "heads", "mlp", None}
    boxed = jax.tree_util.tree_leaves(
        variables["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned)
    )
    assert boxed and all(isinstance(p, nn.Partitioned) for p in boxed)
    assert all(set(p.names) <= vocabulary for p in boxed)


def _zero_mean_unit_var_norm(audio, lengths):
    """transformers' Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm in numpy: per item over its
    first `length` samples (x - mean) / sqrt(var + 1e-7), padding 0."""
    out = np.zeros_like(audio, dtype=np.float64)
    for b, n in enumerate(lengths):
        x = audio[b, :n].astype(np.float64)
        out[b, :n] = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    return out


def test_wavlm_input_normalisation_matches_the_feature_extractor():
    from urgent_jax.models import wavlm

    rng = np.random.default_rng(3)
    lengths = np.array([4000, 2500, 700, 1], np.int32)
    audio = (0.05 * rng.standard_normal((4, 4000)) + rng.uniform(-0.3, 0.3, (4, 1))).astype(np.float32)
    audio[np.arange(4000)[None, :] >= lengths[:, None]] = 7.0  # padding must not count
    want = _zero_mean_unit_var_norm(audio, lengths)
    got = np.asarray(wavlm.normalize_waveform(audio, lengths))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)

    # Inside the model: do_normalize=True on the raw padded batch == False on normalised input.
    plain = wavlm.WavLMConfig.from_dict(dict(TINY_WAVLM))
    norm = wavlm.WavLMConfig.from_dict({**dict(TINY_WAVLM), "do_normalize": True})
    batch, n = audio[:3, :2500], lengths[:3].clip(max=2500)
    shapes = jax.eval_shape(wavlm.WavLM(plain).init, jax.random.key(0), batch, n)
    params = _random_like(nn.unbox(shapes))
    hidden, frames = jax.jit(wavlm.WavLM(norm).apply)(params, batch, n)
    normalised = _zero_mean_unit_var_norm(batch, n).astype(np.float32)
    hidden_ref, frames_ref = jax.jit(wavlm.WavLM(plain).apply)(params, normalised, n)
    np.testing.assert_array_equal(frames, frames_ref)
    valid = np.arange(hidden.shape[2])[None, :] < np.asarray(frames)[:, None]  # [B, T']
    np.testing.assert_allclose(np.asarray(hidden)[:, valid], np.asarray(hidden_ref)[:, valid],
                               rtol=1e-4, atol=1e-4)  # fmt: skip


def test_wavlm_do_normalize_read_from_preprocessor_config(tmp_path):
    import json

    from urgent_jax.models import wavlm

    (tmp_path / "config.json").write_text(json.dumps({k: list(v) if isinstance(v, tuple) else v
                                                      for k, v in TINY_WAVLM}))  # fmt: skip
    assert not wavlm.WavLMConfig.from_pretrained(tmp_path).do_normalize  # no preprocessor file
    preprocessor = tmp_path / "preprocessor_config.json"
    preprocessor.write_text(json.dumps({"do_normalize": False, "feature_size": 1}))
    assert not wavlm.WavLMConfig.from_pretrained(tmp_path).do_normalize
    preprocessor.write_text(json.dumps({"do_normalize": True, "feature_size": 1}))
    assert wavlm.WavLMConfig.from_pretrained(tmp_path / "config.json").do_normalize
    assert dict(sqa.wavlm_frontend_kwargs(tmp_path))["do_normalize"] is True
    preprocessor.write_text(json.dumps({"feature_size": 1}))  # Wav2Vec2FeatureExtractor default
    assert wavlm.WavLMConfig.from_pretrained(tmp_path).do_normalize


def test_encoder_layer_matches_torch_with_key_padding():
    """EncoderLayer == torch TransformerEncoderLayer (post-norm, ReLU, eval) with a padding mask."""
    torch = pytest.importorskip("torch")
    d, heads, ffn, t = 16, 4, 32, 9
    torch.manual_seed(0)
    ref = torch.nn.TransformerEncoderLayer(d, heads, ffn, dropout=0.1, batch_first=True).eval()
    s = {name: p.detach().numpy() for name, p in ref.state_dict().items()}
    lin = lambda n: {"kernel": s[f"{n}.weight"].T, "bias": s[f"{n}.bias"]}  # noqa: E731
    norm = lambda n: {"scale": s[f"{n}.weight"], "bias": s[f"{n}.bias"]}  # noqa: E731
    params = {
        "in_proj": {"kernel": s["self_attn.in_proj_weight"].T, "bias": s["self_attn.in_proj_bias"]},
        "out_proj": lin("self_attn.out_proj"),
        "linear1": lin("linear1"),
        "linear2": lin("linear2"),
        "norm1": norm("norm1"),
        "norm2": norm("norm2"),
    }
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, t, d)).astype(np.float32)
    mask = np.arange(t)[None] < np.array([[t], [5]])
    with torch.no_grad():
        want = ref(torch.from_numpy(x), src_key_padding_mask=torch.from_numpy(~mask)).numpy()
    layer = sqa.EncoderLayer(d_model=d, num_heads=heads, ffn_dim=ffn)
    got = layer.apply({"params": params}, jnp.asarray(x), jnp.asarray(mask))
    # torch's fast path may zero padded query rows; only the frames the pooling reads count
    np.testing.assert_allclose(np.asarray(got)[mask], want[mask], rtol=1e-4, atol=1e-4)
