"""Shared layers against PyTorch: the LSTM (outputs and its custom VJP's gradients), band layout.

Whole-model forward and gradient parity with ESPnet is in test_convert.py; this file checks the
hand-written LSTM backward pass on its own, with and without padding.
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
def test_lstm_outputs_and_gradients_match_torch(bidirectional, use_lengths, rng):
    lstm = torch_lstm(bidirectional)
    dirs = 2 if bidirectional else 1
    x = rng.standard_normal((B, S, I)).astype(np.float32)
    lengths = np.array([S, 4, 7]) if use_lengths else np.full(B, S)
    valid = (np.arange(S)[None, :] < lengths[:, None])[..., None]  # [B, S, 1]
    # padded outputs carry no loss
    cotangent = (rng.standard_normal((B, S, dirs * H)) * valid).astype(np.float32)

    x_t = torch.tensor(x, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x_t, torch.tensor(lengths), batch_first=True, enforce_sorted=False
    )
    out_t, _ = lstm(packed)
    out_t = torch.nn.utils.rnn.pad_packed_sequence(out_t, batch_first=True, total_length=S)[0]
    (out_t * torch.tensor(cotangent)).sum().backward()
    named = dict(lstm.named_parameters())
    ref_grads = params_from_torch({k: p.grad for k, p in named.items()}, bidirectional)

    module = layers.LSTM(H, bidirectional)
    params = params_from_torch(named, bidirectional)
    seq_lengths = jnp.asarray(lengths) if use_lengths else None

    def loss(params, x):
        out = module.apply({"params": params}, x, seq_lengths)
        return jnp.sum(out * cotangent), out

    (_, out), (d_params, d_x) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        params, jnp.asarray(x)
    )
    out = np.asarray(out) * valid  # the forward direction runs on over padding (unused outputs)
    assert_close(out, out_t.detach().numpy(), name="outputs")
    assert_close(d_x, x_t.grad.numpy(), name="input gradient")
    for name, ref in ref_grads.items():
        assert_close(d_params[name], ref, name=name)


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
