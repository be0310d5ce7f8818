"""Shared layers against PyTorch: the LSTM (outputs and its custom VJP's gradients, alone and with
the Linear layer it can apply), the norms' hand-written gradient, band layout.

Whole-model forward and gradient parity with ESPnet is in test_convert.py; this file checks the
hand-written backward passes on their own, with and without padding.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from urgent_jax.models import layers

B, S, I, H = 3, 9, 5, 4  # batch, steps, input features, hidden units per direction


def torch_lstm(bidirectional: bool, seed: int = 0):
    torch.manual_seed(seed)
    return torch.nn.LSTM(I, H, batch_first=True, bidirectional=bidirectional)


def params_from_torch(tensors: dict, bidirectional: bool) -> dict:
    """Our LSTM's parameter tree from torch.nn.LSTM tensors (or their gradients), by name."""
    suffixes = ["", "_reverse"] if bidirectional else [""]

    def stack(name, transpose):
        arrays = [tensors[f"{name}_l0{s}"].detach().numpy() for s in suffixes]
        return np.stack([a.T for a in arrays] if transpose else arrays)

    return {
        "kernel_ih": stack("weight_ih", True),
        "kernel_hh": stack("weight_hh", True),
        "bias_ih": stack("bias_ih", False),
        "bias_hh": stack("bias_hh", False),
    }


def assert_close(ours, ref, tolerance=1e-5, name=""):
    """Relative L2 error <= tolerance (float32 throughout; the LSTM state is float32)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    error = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    assert error <= tolerance, f"{name}: relative error {error:.2e}"


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("use_lengths", [False, True])
@pytest.mark.parametrize("project", [False, True])
@pytest.mark.parametrize("stepwise", [True, False])
def test_lstm_outputs_and_gradients_match_torch(
    bidirectional, use_lengths, project, stepwise, rng, monkeypatch
):
    """project: a Linear(D·H -> 3) after the LSTM, inside our LSTM's VJP, torch.nn.Linear there.
    stepwise: the CPU schedule (matmuls per step; weight gradients per 2 steps here, so 4 chunks
    and a remainder of 1) or the accelerators' (single matmuls over all steps)."""
    monkeypatch.setattr(layers, "_stepwise_products", lambda: stepwise)
    monkeypatch.setattr(layers, "GRADIENT_CHUNK_ROWS", 2 * B)
    lstm = torch_lstm(bidirectional)
    dirs = 2 if bidirectional else 1
    fc = torch.nn.Linear(dirs * H, 3) if project else None
    x = rng.standard_normal((B, S, I)).astype(np.float32)
    lengths = np.array([S, 4, 7]) if use_lengths else np.full(B, S)
    valid = (np.arange(S)[None, :] < lengths[:, None])[..., None]  # [B, S, 1]
    # padded outputs carry no loss
    cotangent = (rng.standard_normal((B, S, 3 if project else dirs * H)) * valid).astype(np.float32)

    x_t = torch.tensor(x, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x_t, torch.tensor(lengths), batch_first=True, enforce_sorted=False
    )
    out_t, _ = lstm(packed)
    out_t = torch.nn.utils.rnn.pad_packed_sequence(out_t, batch_first=True, total_length=S)[0]
    if project:
        out_t = fc(out_t)
    (out_t * torch.tensor(cotangent)).sum().backward()
    named = dict(lstm.named_parameters())
    ref_grads = params_from_torch({k: p.grad for k, p in named.items()}, bidirectional)

    module = layers.LSTM(H, bidirectional)
    params = params_from_torch(named, bidirectional)
    seq_lengths = jnp.asarray(lengths) if use_lengths else None
    projection = (fc.weight.detach().numpy().T, fc.bias.detach().numpy()) if project else None

    def loss(params, x, projection):
        out = module.apply({"params": params}, x, seq_lengths, projection)
        return jnp.sum(out * cotangent), out

    grad_fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
    (_, out), (d_params, d_x, d_projection) = grad_fn(params, jnp.asarray(x), projection)
    # padded steps are unused: our forward direction runs on over them, torch's Linear maps them
    # to its bias
    out = np.asarray(out) * valid
    assert_close(out, out_t.detach().numpy() * valid, name="outputs")
    assert_close(d_x, x_t.grad.numpy(), name="input gradient")
    for name, ref in ref_grads.items():
        assert_close(d_params[name], ref, name=name)
    if project:
        assert_close(d_projection[0], fc.weight.grad.numpy().T, name="projection kernel")
        assert_close(d_projection[1], fc.bias.grad.numpy(), name="projection bias")


def test_lstm_bfloat16_compute_stays_close(rng):
    """bfloat16 matmuls with float32 state: outputs and gradients near the float32 ones."""
    x = jnp.asarray(rng.standard_normal((B, S, I)), jnp.float32)
    variables = nn.unbox(layers.LSTM(H).init(jax.random.key(0), x))

    def run(dtype):
        module = layers.LSTM(H, dtype=dtype)
        loss = jax.jit(jax.value_and_grad(lambda v: jnp.sum(module.apply(v, x) ** 2)))
        out, grads = loss(variables)
        return out, jax.tree_util.tree_leaves(grads)

    (ref, ref_grads), (low, low_grads) = run(jnp.float32), run(jnp.bfloat16)
    assert abs(float(low) - float(ref)) <= 0.02 * abs(float(ref))
    for a, b in zip(ref_grads, low_grads):
        assert b.dtype == jnp.float32
        assert float(jnp.linalg.norm(a - b)) <= 0.05 * float(jnp.linalg.norm(a))


@pytest.mark.parametrize(
    "axes, masked", [((1, 2, 3), True), ((1, 2, 3), False), ((3,), False), ((1, 3), True), ((2, 3), False)]
)
def test_normalize_values_and_gradient_match_torch_autograd(axes, masked, rng):
    """The hand-written gradient of `normalize` (GN over valid frames, cLN, cfLN, per-band GN)
    against torch autograd of the same formula in float64, padding included."""
    x = (rng.standard_normal((2, 7, 5, 6)) * 3 + 1).astype(np.float32)
    weight = rng.standard_normal(x.shape).astype(np.float32)  # a generic loss sum(w * y)
    valid = np.arange(7)[None, :] < np.array([7, 4])[:, None]
    mask = valid[:, :, None, None].astype(np.float32) if masked else None
    eps = 1e-5

    def loss(x):
        y = layers.normalize(x, axes, eps, None if mask is None else jnp.asarray(mask))
        return jnp.sum(y * weight), y

    (_, y), d_x = jax.jit(jax.value_and_grad(loss, has_aux=True))(jnp.asarray(x))

    x_t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    m = torch.ones(1, 1, 1, 1, dtype=torch.float64) if mask is None else torch.tensor(mask).double()
    count = m.expand_as(x_t).sum(axes, keepdim=True).clamp(min=1)
    mean = (x_t * m).sum(axes, keepdim=True) / count
    var = (((x_t - mean) * m) ** 2).sum(axes, keepdim=True) / count
    y_t = (x_t - mean) / torch.sqrt(var + eps)
    (y_t * torch.tensor(weight).double()).sum().backward()
    assert_close(y, y_t.detach().numpy(), name="outputs")
    assert_close(d_x, x_t.grad.numpy(), name="input gradient")


def test_band_layout_helpers():
    widths = (5,) + (4,) * 19 + (10,) * 6 + (40,) * 7 + (60,)
    assert layers.band_groups(widths) == [(0, 1), (1, 19), (20, 6), (26, 7), (33, 1)]
    assert layers.band_runs(widths[:3]) == [(0, 1, 5, 0), (1, 2, 4, 5)]
    assert layers.num_bands(widths, 161) == 27  # 16 kHz: band 27 (40 bins) is half covered
    with pytest.raises(ValueError, match="exceed"):
        layers.num_bands(widths, 482)
    spec = jnp.arange(2 * 3 * 10 * 2, dtype=jnp.float32).reshape(2, 3, 10, 2)
    parts = layers.split_bands(spec, (2, 2, 4, 4))  # 10 bins: the last band gets 2 zero bins
    assert [p.shape for p in parts] == [(2, 3, 2, 4), (2, 3, 2, 8)]
    np.testing.assert_array_equal(parts[0][0, 0, 1], spec[0, 0, 2:4].reshape(-1))  # (bin, re/im)
    np.testing.assert_array_equal(parts[1][0, 0, 1, 4:], 0.0)
