"""STFT / iSTFT against librosa and scipy, plus round-trip and jit/vmap properties."""

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import scipy.signal

from urgent_jax.audio import stft as S

# (n_fft, hop) pairs of the BSRNN / FlowSE front-ends at several rates (REFERENCE.md §3.1), including
# hops that do not divide n_fft.
CONFIGS = [(320, 160), (441, 220), (960, 480), (705, 176), (1411, 352), (256, 64), (512, 128)]


def test_hann_window_matches_scipy():
    for n in (4, 255, 320, 441):
        np.testing.assert_allclose(S.hann_window(n), scipy.signal.get_window("hann", n), atol=1e-15)
        np.testing.assert_allclose(
            S.hann_window(n, periodic=False), scipy.signal.windows.hann(n, sym=True), atol=1e-15
        )


@pytest.mark.parametrize("n_fft,hop", CONFIGS)
def test_stft_matches_librosa_reflect(n_fft, hop, rng):
    x = rng.standard_normal((2, 8000)).astype(np.float32)
    ours = np.asarray(S.stft(x, n_fft, hop))
    ref = librosa.stft(x, n_fft=n_fft, hop_length=hop, window="hann", center=True, pad_mode="reflect")
    ref = np.swapaxes(ref, -1, -2)  # librosa is [..., bins, frames]
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-4 * np.abs(ref).max())


def test_stft_constant_padding_and_short_window(rng):
    x = rng.standard_normal(4000).astype(np.float32)
    ours = np.asarray(S.stft(x, 512, 128, win_length=400, center=True, pad_mode="constant"))
    ref = librosa.stft(x, n_fft=512, hop_length=128, win_length=400, center=True, pad_mode="constant")
    np.testing.assert_allclose(ours, ref.T, atol=2e-4 * np.abs(ref).max())


def test_num_frames_formula():
    for n in (1000, 8000, 8001, 16000):
        for n_fft, hop in CONFIGS:
            x = jax.ShapeDtypeStruct((n,), jnp.float32)  # shapes only: nothing to compute
            shape = jax.eval_shape(lambda v, f=n_fft, h=hop: S.stft(v, f, h), x).shape
            assert shape[-2] == S.num_frames(n, n_fft, hop)
            assert int(S.frame_lengths(jnp.array(n), n_fft, hop)) == S.num_frames(n, n_fft, hop)


@pytest.mark.parametrize("n_fft,hop", CONFIGS)
def test_istft_round_trip(n_fft, hop, rng):
    x = rng.standard_normal((3, 12345)).astype(np.float32)
    spec = S.stft(x, n_fft, hop)
    y = np.asarray(S.istft(spec, n_fft, hop, length=x.shape[-1]))
    rel = np.linalg.norm(y - x) / np.linalg.norm(x)
    assert rel < 1e-5, rel


def test_istft_matches_librosa(rng):
    x = rng.standard_normal(8000).astype(np.float32)
    spec = librosa.stft(x, n_fft=512, hop_length=128, center=True, pad_mode="reflect")
    ref = librosa.istft(spec, hop_length=128, n_fft=512, length=8000)
    ours = np.asarray(S.istft(jnp.asarray(spec.T), 512, 128, length=8000))
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_overlap_add_against_loop(rng):
    frames = rng.standard_normal((2, 7, 50)).astype(np.float32)
    for hop in (10, 17, 25, 50):
        ref = np.zeros((2, 50 + hop * 6), np.float32)
        for i in range(7):
            ref[:, i * hop : i * hop + 50] += frames[:, i]
        np.testing.assert_allclose(np.asarray(S.overlap_add(jnp.asarray(frames), hop)), ref, atol=1e-5)


def test_jit_and_vmap_agree(rng):
    x = rng.standard_normal((4, 6000)).astype(np.float32)
    f = jax.jit(lambda a: S.stft(a, 320, 160))
    batched = np.asarray(f(x))
    mapped = np.asarray(jax.vmap(lambda a: S.stft(a, 320, 160))(x))
    single = np.stack([np.asarray(S.stft(a, 320, 160)) for a in x])
    np.testing.assert_allclose(batched, single, atol=1e-4)
    np.testing.assert_allclose(mapped, single, atol=1e-4)
    y = jax.jit(lambda s: S.istft(s, 320, 160, length=6000))(batched)
    assert y.shape == (4, 6000)


def test_parseval_energy(rng):
    # Parseval per frame: sum over frames of |X|^2 / n_fft equals sum_n x[n]^2 * sum_i w[n - i hop]^2.
    n_fft, hop = 512, 128
    x = rng.standard_normal(8192).astype(np.float32)
    spec = np.asarray(S.stft(x, n_fft, hop, center=False)).astype(np.complex128)
    mag2 = np.abs(spec) ** 2
    frame_energy = (2 * mag2.sum(-1) - mag2[:, 0] - mag2[:, -1]) / n_fft
    env = np.zeros(len(x))
    w2 = S.hann_window(n_fft) ** 2
    for i in range(spec.shape[0]):
        env[i * hop : i * hop + n_fft] += w2
    np.testing.assert_allclose(frame_energy.sum(), np.sum(x.astype(np.float64) ** 2 * env), rtol=1e-4)


def test_mask_frames():
    spec = jnp.ones((2, 10, 5), jnp.complex64)
    out = np.asarray(S.mask_frames(spec, jnp.array([3, 10])))
    assert out[0, :3].all() and not out[0, 3:].any() and out[1].all()


def test_reflect_pad_needs_samples():
    with pytest.raises(ValueError, match="reflect"):
        S.stft(np.zeros(100, np.float32), 512, 128)
