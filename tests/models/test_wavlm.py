"""WavLM in flax against transformers' torch WavLMModel (test-only dependency), small configs."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from urgent_jax.models import wavlm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4  # max |flax - torch| over every hidden state, every frame (padded ones included)

SMALL = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    conv_dim=(16, 16, 16),
    conv_kernel=(10, 3, 3),
    conv_stride=(5, 2, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    num_buckets=32,
    max_bucket_distance=48,
)
VARIANTS = {
    "base": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
    "large": dict(
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
        num_conv_pos_embeddings=15,  # odd kernel: no frame dropped
    ),
}


def _torch_model(variant: str, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.WavLMConfig(**{**SMALL, **VARIANTS[variant]})
    model = transformers.WavLMModel(config).eval()
    with torch.no_grad():  # randomise parameters that init to constants (norms, gates, biases)
        for name, p in model.named_parameters():
            if "bias" in name or "layer_norm" in name or "gru_rel_pos_const" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _save(model, directory, form: str):
    model.save_pretrained(directory)
    if form == "bin":
        for f in directory.glob("*.safetensors"):
            f.unlink()
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
    return directory


@pytest.mark.parametrize(
    "variant,form", [("base", "safetensors"), ("base", "bin"), ("large", "safetensors")]
)
def test_hidden_states_match_transformers(tmp_path, variant, form):
    model = _torch_model(variant)
    config, params = wavlm.convert_hf_checkpoint(_save(model, tmp_path, form))
    assert config.num_hidden_layers == 2 and config.do_stable_layer_norm == (variant == "large")

    rng = np.random.default_rng(0)
    audio = rng.standard_normal((2, 4000)).astype(np.float32)
    lengths = np.array([4000, 2500], np.int32)
    audio[1, 2500:] = 0.0
    attention_mask = (np.arange(4000)[None] < lengths[:, None]).astype(np.int64)
    with torch.no_grad():
        out = model(
            torch.from_numpy(audio),
            attention_mask=torch.from_numpy(attention_mask),
            output_hidden_states=True,
        )
    want = np.stack([h.numpy() for h in out.hidden_states])  # [L + 1, B, T', D]

    hidden, frames = jax.jit(wavlm.WavLM(config).apply)({"params": params}, audio, lengths)
    assert hidden.shape == want.shape == (3, 2, want.shape[2], 32)
    frames_hf = model._get_feat_extract_output_lengths(torch.from_numpy(lengths)).numpy()
    np.testing.assert_array_equal(frames, frames_hf)
    err = np.max(np.abs(np.asarray(hidden) - want))
    assert err <= TOL, err


def test_relative_position_buckets_match_transformers():
    model = _torch_model("base")
    attn = model.encoder.layers[0].attention
    t = 300
    rel = torch.arange(t)[None, :] - torch.arange(t)[:, None]
    want = attn._relative_positions_bucket(rel).numpy()
    got = wavlm.relative_position_buckets(t, attn.num_buckets, attn.max_distance)
    np.testing.assert_array_equal(got, want)


def test_frame_lengths_conv_formula():
    config = wavlm.WavLMConfig()
    lengths = jnp.array([16000, 400, 399, 64000])
    # 20 ms frames: 49 for 1 s (the conv formula), 1 for the 400-sample receptive field
    np.testing.assert_array_equal(wavlm.frame_lengths(config, lengths), [49, 1, 0, 199])


def test_frozen_use_and_dropout():
    config = wavlm.WavLMConfig(**SMALL)
    module = wavlm.WavLM(config)
    audio = jax.random.normal(jax.random.key(1), (2, 3000))
    lengths = jnp.array([3000, 2000])
    variables = jax.jit(module.init)(jax.random.key(0), audio, lengths)

    def loss(params):
        hidden, _ = module.apply({"params": jax.lax.stop_gradient(params)}, audio, lengths)
        return jnp.sum(hidden**2)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree_util.tree_leaves(grads))
    apply = jax.jit(module.apply, static_argnames="train")
    h1, _ = apply(variables, audio, lengths, train=True, rngs={"dropout": jax.random.key(2)})
    h0, _ = apply(variables, audio, lengths)
    assert not np.allclose(h1, h0)


def test_converter_rejects_mismatch(tmp_path):
    model = _torch_model("base")
    _save(model, tmp_path, "safetensors")
    config, params = wavlm.convert_hf_checkpoint(tmp_path / "config.json")
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    state["encoder.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="unconverted"):
        wavlm.convert_state_dict(config, state)
    other = dataclasses.replace(config, num_hidden_layers=1)
    with pytest.raises(ValueError, match="unconverted"):
        wavlm.convert_state_dict(other, {k: v.numpy() for k, v in model.state_dict().items()})
