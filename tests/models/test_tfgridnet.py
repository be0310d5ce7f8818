"""TF-GridNet: shapes at every rate, jit, gradients, length invariance, and parity with ESPnet's
TFGridNetV3 (+ STFTEncoder/STFTDecoder and variance normalisation) on converted random weights."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from urgent_jax.models.tfgridnet import TFGridNet, from_torch_state_dict

RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
# Tiny config: 2 blocks, 8 channels, 2 heads; the real sizes are checked by eval_shape only.
TINY = dict(num_layers=2, lstm_hidden=8, emb_dim=8, num_heads=2, qk_channels=2)
MODEL = TFGridNet(**TINY)
APPLY = jax.jit(MODEL.apply, static_argnames="sample_rate")  # one compile cache shared by the tests
ONE_BLOCK = TFGridNet(**{**TINY, "num_layers": 1})  # runs on the first block of MODEL's params
APPLY_ONE_BLOCK = jax.jit(ONE_BLOCK.apply, static_argnames="sample_rate")


@pytest.fixture(scope="module")
def variables():
    init = jax.jit(MODEL.init, static_argnames="sample_rate")
    x = jnp.zeros((1, 800))
    key = jax.random.key(0, impl="rbg")  # compiles in half the time of threefry on CPU
    return nn.meta.unbox(init(key, x, jnp.array([800]), sample_rate=8000))


def _signal(rng, batch, num_samples):
    t = np.arange(num_samples)
    tone = np.sin(2 * np.pi * 0.013 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.0007 * t))
    noise = 0.3 * rng.standard_normal((batch, num_samples))
    return (0.1 * (tone + noise)).astype(np.float32)


def test_stft_sizes_scale_with_rate():
    sizes = {fs: MODEL.stft_config(fs) for fs in RATES}
    assert sizes[8000] == (256, 128) and sizes[16000] == (512, 256) and sizes[48000] == (1536, 768)
    assert sizes[22050] == (705, 352) and sizes[44100] == (1411, 705)


def test_full_config_parameter_count():
    model = TFGridNet()  # REFERENCE.md §3.6
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 4000)), None, sample_rate=16000)
    )
    count = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(nn.meta.unbox(shapes)))
    # ESPnet's 8,524,352 counts both LSTM biases (b_ih + b_hh); flax has one: 6*2*2*4*200 fewer.
    assert count == 8_524_352 - 6 * 2 * 2 * 4 * 200
    # logical axes are attached to the large kernels
    specs = nn.get_partition_spec(shapes)["params"]["block_0"]
    assert tuple(specs["intra_frame"]["blstm"]["input_kernel"]) == (None, "embed", "mlp")
    assert tuple(specs["attention"]["query"]["kernel"]) == ("embed", "heads")


def test_init_at_every_rate_gives_the_same_params(variables):
    # TF-GridNet v3 is sampling-frequency independent: no parameter depends on F or T.
    want = jax.tree_util.tree_map(lambda a: a.shape, variables)
    remat = TFGridNet(**TINY, use_remat=True)
    for fs in RATES:
        model = remat if fs == 48000 else MODEL  # remat keeps the parameter tree
        x = jnp.zeros((1, fs // 20))

        def init(model=model, x=x, fs=fs):
            return model.init(jax.random.key(0), x, jnp.array([fs // 20]), sample_rate=fs)

        shapes = jax.tree_util.tree_map(lambda a: a.shape, nn.meta.unbox(jax.eval_shape(init)))
        assert shapes == want, fs


@pytest.mark.parametrize("sample_rate", RATES)
def test_apply_at_every_rate(variables, rng, sample_rate):
    params = {"params": {k: v for k, v in variables["params"].items() if k != "block_1"}}
    num_samples = sample_rate // 10 + 37  # 0.1 s, not a whole number of hops
    noisy = _signal(rng, 2, num_samples)
    lengths = jnp.array([num_samples, num_samples - sample_rate // 40])
    out = APPLY_ONE_BLOCK(params, noisy, lengths, sample_rate=sample_rate)
    assert out.shape == (2, num_samples) and out.dtype == jnp.float32
    out = np.asarray(out)
    assert np.all(np.isfinite(out)) and np.std(out[0]) > 0
    assert np.all(out[1, int(lengths[1]) :] == 0)


def test_padding_does_not_change_the_output(variables, rng):
    noisy = _signal(rng, 2, 1600)  # the shape of the 8 kHz parity batch: one compile for both
    lengths = [1600, 1100]  # 13 vs 9 frames at 8 kHz
    noisy[1, 1100:] = 3.0 * rng.standard_normal(500)  # padding content must not leak
    batched = np.asarray(APPLY(variables, noisy, jnp.array(lengths), sample_rate=8000))
    alone = np.asarray(APPLY(variables, noisy[1:, :1100], jnp.array([1100]), sample_rate=8000))
    np.testing.assert_allclose(batched[1, :1100], alone[0], rtol=1e-5, atol=1e-6)
    assert np.all(batched[1, 1100:] == 0)
    noisy[1, 1100:] = 0.0  # and the other example does not see it
    again = np.asarray(APPLY(variables, noisy, jnp.array(lengths), sample_rate=8000))
    np.testing.assert_allclose(again[0], batched[0], rtol=1e-5, atol=1e-6)
    # traced lengths cannot be checked: beyond T they are clipped to T (same compiled program)
    clipped = np.asarray(APPLY(variables, noisy, jnp.array([2500, 1100]), sample_rate=8000))
    np.testing.assert_array_equal(clipped, again)


def test_inputs_are_checked(variables):
    """The shared checks (urgent_jax.models.frontend.check_inputs) guard TF-GridNet too."""
    x = np.zeros((2, 800), np.float32)

    def shapes(x, lengths, fs):  # tracing is enough to reach the checks
        return jax.eval_shape(lambda v: MODEL.apply(v, x, lengths, sample_rate=fs), variables)

    with pytest.raises(ValueError, match=r"expected noisy waveforms as \[batch, time\].*\(800,\)"):
        shapes(x[0], None, 8000)
    with pytest.raises(ValueError, match=r"lengths must be \[batch\] = \(2,\)"):
        shapes(x, np.array([800, 800, 800]), 8000)
    with pytest.raises(ValueError, match="unsupported sampling rate 11025 Hz"):
        shapes(x, None, 11025)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 800\]"):
        MODEL.apply(variables, x, np.array([800, 0]), sample_rate=8000)


def test_gradients_finite_with_remat(variables, rng):
    model = TFGridNet(**{**TINY, "num_layers": 1}, use_remat=True)
    params = {"params": {k: v for k, v in variables["params"].items() if k != "block_1"}}
    noisy = _signal(rng, 2, 1700)
    target = np.roll(noisy, 3, axis=-1)
    lengths = jnp.array([1700, 1250])

    def loss(params):
        est = model.apply(params, noisy, lengths, sample_rate=16000)
        return jnp.mean((est - target) ** 2)

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    leaves = jax.tree_util.tree_leaves(grads)
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)  # every parameter is used
    recurrent = grads["params"]["block_0"]["inter_frame"]["blstm"]["recurrent_kernel"]
    assert float(jnp.min(jnp.max(jnp.abs(recurrent), axis=(1, 2)))) > 0  # both directions


# --- parity with ESPnet ---------------------------------------------------------------------


def _espnet_enhance(torch_model, noisy, sample_rate):
    """ESPnet: std normalisation -> STFTEncoder -> TFGridNetV3 -> STFTDecoder -> times std."""
    import torch
    from espnet2.enh.decoder.stft_decoder import STFTDecoder
    from espnet2.enh.encoder.stft_encoder import STFTEncoder

    encoder = STFTEncoder(n_fft=256, hop_length=128, window="hann", default_fs=8000)
    decoder = STFTDecoder(n_fft=256, hop_length=128, window="hann", default_fs=8000)
    x = torch.from_numpy(noisy)
    lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
    with torch.no_grad():
        std = torch.std(x, dim=1, keepdim=True)
        spec, flens = encoder(x / std, lengths, fs=sample_rate)
        est, _, _ = torch_model(spec, flens)
        wav, _ = decoder(est[0], lengths, fs=sample_rate)
    return (wav * std).numpy()


@pytest.fixture(scope="module")
def torch_model():
    import torch
    from espnet2.enh.separator.tfgridnetv3_separator import TFGridNetV3

    torch.manual_seed(0)
    model = TFGridNetV3(
        None,
        n_srcs=1,
        n_layers=TINY["num_layers"],
        lstm_hidden_units=TINY["lstm_hidden"],
        attn_n_head=TINY["num_heads"],
        attn_qk_output_channel=TINY["qk_channels"],
        emb_dim=TINY["emb_dim"],
        emb_ks=4,
        emb_hs=1,
    ).eval()
    with torch.no_grad():  # move norms and PReLUs off their identity init so they are exercised
        for name, p in model.named_parameters():
            if p.ndim <= 1 or "gamma" in name or "beta" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("sample_rate", [8000, 16000])
def test_parity_with_espnet(torch_model, noizeus_pair, sample_rate):
    clean, noisy, fs = noizeus_pair
    step = fs // sample_rate  # 16 kHz NOIZEUS; every other sample for 8 kHz (aliasing is harmless)
    n = 1600  # 0.2 s at 8 kHz, 0.1 s at 16 kHz
    batch = np.stack([noisy[4000 : 4000 + n * step : step], clean[9000 : 9000 + n * step : step]])
    want = _espnet_enhance(torch_model, batch, sample_rate)
    params = from_torch_state_dict(MODEL, torch_model.state_dict())
    # the masked path (equal lengths) at both rates, the unmasked path (lengths=None) at 8 kHz
    paths = (jnp.array([n, n]), None) if sample_rate == 8000 else (jnp.array([n, n]),)
    for lengths in paths:
        got = np.asarray(APPLY(params, batch, lengths, sample_rate=sample_rate))
        rel = np.linalg.norm(got - want) / np.linalg.norm(want)
        print(f"{sample_rate} Hz, lengths={lengths}: relative error {rel:.2e}")
        assert rel <= 1e-4, (lengths, rel)
