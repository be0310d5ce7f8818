"""STFT front-end: §3.1 size table, round trips, padded items, ESPnet STFTEncoder/Decoder parity."""

import jax
import numpy as np
import pytest
import torch
from espnet2.enh.decoder.stft_decoder import STFTDecoder
from espnet2.enh.encoder.stft_encoder import STFTEncoder

from urgent_jax.models import bsrnn, flowse, layers
from urgent_jax.models.frontend import SAMPLE_RATES, STFTFrontEnd

# REFERENCE.md §3.1: fs -> (BSRNN n_fft, hop, bins, K bands), (FlowSE n_fft, hop, bins, K bands)
TABLE = {
    8000: ((160, 80, 81, 20), (256, 64, 129, 29)),
    16000: ((320, 160, 161, 27), (512, 128, 257, 38)),
    22050: ((441, 220, 221, 28), (705, 176, 353, 40)),
    24000: ((480, 240, 241, 29), (768, 192, 385, 41)),
    32000: ((640, 320, 321, 31), (1024, 256, 513, 44)),
    44100: ((882, 441, 442, 34), (1411, 352, 706, 47)),
    48000: ((960, 480, 481, 34), (1536, 384, 769, 48)),
}
BSRNN_FE = STFTFrontEnd(960, 480)
FLOWSE_FE = STFTFrontEnd(1536, 384)


def encode(fe, x, lengths, fs):
    """Jitted encode (one compiled program instead of many eager ops)."""
    return jax.jit(fe.encode, static_argnums=2)(x, lengths, fs)


def decode(fe, spec, lengths, fs, n):
    return jax.jit(fe.decode, static_argnums=(2, 3))(spec, lengths, fs, n)


def test_size_table_at_all_rates():
    assert tuple(TABLE) == SAMPLE_RATES
    for fs, (ref_b, ref_f) in TABLE.items():
        for fe, widths, (n_fft, hop, bins, bands) in (
            (BSRNN_FE, bsrnn.BANDS_481, ref_b),
            (FLOWSE_FE, flowse.BANDS_769, ref_f),
        ):
            assert fe.sizes(fs) == (n_fft, hop, n_fft)
            assert fe.num_bins(fs) == bins
            assert layers.num_bands(widths, bins) == bands


@pytest.mark.parametrize("fs", SAMPLE_RATES)
def test_round_trip_with_padding(fs, rng):
    n = fs // 5
    lengths = np.array([n, n // 2 + 7])
    x = rng.standard_normal((2, n)).astype(np.float32)
    x[1, lengths[1] :] = 0.0
    spec, counts = encode(BSRNN_FE, x, lengths, fs)
    _, hop, _ = BSRNN_FE.sizes(fs)
    assert spec.shape == (2, 1 + n // hop, BSRNN_FE.num_bins(fs))
    np.testing.assert_array_equal(counts, 1 + lengths // hop)
    assert np.all(np.asarray(spec)[1, counts[1] :] == 0)
    y = np.asarray(decode(BSRNN_FE, spec, lengths, fs, n))
    np.testing.assert_allclose(y, x, atol=1e-5)  # padded item: its own samples back, zeros beyond


def test_padded_item_is_coded_as_alone(rng):
    fs, n, short = 16000, 4000, 2345
    x = rng.standard_normal((2, n)).astype(np.float32)
    lengths = np.array([n, short])
    spec, counts = encode(BSRNN_FE, x, lengths, fs)
    alone_spec, alone_counts = encode(BSRNN_FE, x[1:, :short], None, fs)
    assert int(counts[1]) == int(alone_counts[0]) == alone_spec.shape[1]
    np.testing.assert_allclose(spec[1, : counts[1]], alone_spec[0], atol=1e-4)
    spec = spec + 0.1  # a model output is not zero on padded frames
    alone = decode(BSRNN_FE, alone_spec + 0.1, None, fs, short)
    batch = decode(BSRNN_FE, spec, lengths, fs, n)
    np.testing.assert_allclose(batch[1, :short], alone[0], atol=1e-5)
    assert np.all(np.asarray(batch)[1, short:] == 0)


@pytest.mark.parametrize(
    "n_fft,hop,fs", [(960, 480, 8000), (960, 480, 22050), (1536, 384, 44100), (1536, 384, 48000)]
)
def test_matches_espnet_encoder_decoder(n_fft, hop, fs, rng):
    n, short = fs // 4, fs // 4 - fs // 10
    x = rng.standard_normal((2, n)).astype(np.float32)
    enc = STFTEncoder(n_fft=n_fft, hop_length=hop, use_builtin_complex=True, default_fs=48000)
    dec = STFTDecoder(n_fft=n_fft, hop_length=hop, default_fs=48000)
    fe = STFTFrontEnd(n_fft, hop)
    full = np.array([n, n])
    ref, ref_counts = enc(torch.from_numpy(x), torch.from_numpy(full), fs=fs)
    ours, counts = encode(fe, x, full, fs)
    np.testing.assert_array_equal(counts, ref_counts.numpy())
    assert np.linalg.norm(ours - ref.numpy()) <= 1e-5 * np.linalg.norm(ref.numpy())
    ref_wave = dec(ref, torch.from_numpy(full), fs=fs)[0].numpy()
    wave = decode(fe, ref.numpy(), full, fs, n)
    assert np.linalg.norm(wave - ref_wave) <= 1e-5 * np.linalg.norm(ref_wave)
    # a padded item is encoded as the reference encodes it alone
    ours, counts = encode(fe, x, np.array([n, short]), fs)
    ref, ref_counts = enc(torch.from_numpy(x[1:, :short]), torch.tensor([short]), fs=fs)
    assert int(counts[1]) == int(ref_counts[0]) == ref.shape[1]
    ref = ref.numpy()[0]
    assert np.linalg.norm(ours[1, : counts[1]] - ref) <= 1e-5 * np.linalg.norm(ref)
    assert np.all(np.asarray(ours)[1, counts[1] :] == 0)


def test_inputs_are_validated_up_front():
    """Every enhancement model enters through these checks (encode/decode; TF-GridNet too)."""
    x = np.zeros((2, 1600), np.float32)
    with pytest.raises(ValueError, match=r"expected noisy waveforms as \[batch, time\].*\(1600,\)"):
        BSRNN_FE.encode(x[0], None, 16000)
    with pytest.raises(ValueError, match=r"\[batch, time\].*\(1, 2, 1600\)"):
        BSRNN_FE.encode(x[None], None, 16000)
    with pytest.raises(ValueError, match=r"lengths must be \[batch\] = \(2,\), got shape \(1,\)"):
        BSRNN_FE.encode(x, np.array([1600]), 16000)
    for bad in ([0, 1600], [-5, 1600], [1601, 1600]):
        with pytest.raises(ValueError, match=r"lengths must lie in \[1, 1600\]"):
            BSRNN_FE.encode(x, np.array(bad), 16000)
    for fs in (96000, 11025, 16000.5, "16000"):
        with pytest.raises(ValueError, match=r"sampl.*16000, 22050, 24000, 32000, 44100, 48000"):
            BSRNN_FE.encode(x, None, fs)
    with pytest.raises(ValueError, match="sampling rate 96000 Hz"):
        FLOWSE_FE.encode(x, None, 96000)
    spec = np.zeros((2, 11, 161), np.complex64)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 1600\]"):
        BSRNN_FE.decode(spec, np.array([1600, 1700]), 16000, 1600)
    with pytest.raises(ValueError, match="sampling rate 96000 Hz"):
        BSRNN_FE.decode(spec, None, 96000, 1600)
    # an integral float rate is that rate
    np.testing.assert_array_equal(
        BSRNN_FE.encode(x[:, :400], None, 8000.0)[0], BSRNN_FE.encode(x[:, :400], None, 8000)[0]
    )


def test_traced_lengths_beyond_the_signal_act_as_its_length(rng):
    """Under jit lengths cannot be checked: clipped to [0, T] (vs ESPnet run at full length)."""
    fs, n = 16000, 4000
    x = rng.standard_normal((2, n)).astype(np.float32)
    enc = STFTEncoder(n_fft=960, hop_length=480, use_builtin_complex=True, default_fs=48000)
    dec = STFTDecoder(n_fft=960, hop_length=480, default_fs=48000)
    full = torch.full((2,), n)
    ref, ref_counts = enc(torch.from_numpy(x), full, fs=fs)
    too_long = np.array([n + 900, n])
    ours, counts = encode(BSRNN_FE, x, too_long, fs)
    np.testing.assert_array_equal(counts, ref_counts.numpy())
    assert np.linalg.norm(ours - ref.numpy()) <= 1e-5 * np.linalg.norm(ref.numpy())
    ref_wave = dec(ref, full, fs=fs)[0].numpy()
    wave = decode(BSRNN_FE, ref.numpy(), too_long, fs, n)
    assert np.linalg.norm(wave - ref_wave) <= 1e-5 * np.linalg.norm(ref_wave)
